"""The catalogue of patterns the SDK and CLI can call: which model, which input, which outputs,
which SDK method with which options, and what its answers carry.

A pattern here is data, not code: adding a pattern whose model takes one input tensor and
answers with a class is one entry in PATTERNS; both clients (client.py) get its method from the
entry (methods.py, written out into pattern_methods.py by `python -m pattern_tools.sdk_gen`), and
`Prediction` reads its extra outputs through RESULT_FIELDS, which come from the backends' declared
specs (copied into contract.py by the same command).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from triton_patterns.contract import RESULT_FIELDS
from triton_patterns.fields import ResultField


@dataclass(frozen=True)
class PatternSpec:
    name: str
    model: str
    input: str
    datatype: str  # KServe v2 datatype of the input: "FP32", "BYTES", ...
    outputs: tuple[str, ...]
    argument: str  # how the CLI reads the value: "numbers" (comma list), "file" or "text"
    summary: str
    example: str  # a CLI argument, for help texts
    # the SDK method (methods.py): its name (entries sharing one are its `form`s), its options
    # after the value (OPTIONS in methods.py), its docstring (default: the summary)
    method: str = ""  # default: the pattern's name
    form: str = ""  # the value of the method's `form` that picks this entry
    options: tuple[str, ...] = ("model",)
    doc: str = ""
    answers: int = 1  # answers per request; more than one come on a gRPC stream (STREAMS)

    @property
    def method_name(self) -> str:
        return self.method or self.name


# RESULT_FIELDS and ResultField are the table's too: the extra outputs a pattern's answers carry
__all__ = ["PATTERNS", "RESULT_FIELDS", "STREAMS", "PatternSpec", "ResultField", "pattern"]


def _router(name: str, model: str, summary: str, doc: str, options: tuple[str, ...] = ("model",)) -> PatternSpec:
    """A rollout pattern: an iris router model (backends/router) that reports its ARM and TARGET."""
    return PatternSpec(name, model, "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "ARM", "TARGET"), "numbers",
                       f"router: {summary}", "6.7,3.0,5.2,2.3", options=options, doc=doc)


PATTERNS: dict[str, PatternSpec] = {
    spec.name: spec
    for spec in (
        PatternSpec(
            "web_single", "iris_web_single", "FEATURES", "FP32", ("LABEL", "CLASS_ID", "PROBABILITIES"), "numbers",
            "validation, preprocessing and inference in one model",
            "5.1,3.5,1.4,0.2", options=(),
        ),
        PatternSpec(
            "synchronous", "iris", "FEATURES", "FP32", ("LABEL", "PROBABILITIES"), "numbers",
            "the ONNX model served directly, dynamic batching, versions 1 and 2",
            "6.7,3.0,5.2,2.3", options=("version",),
            doc="The ONNX model served directly; `version` picks 1 or 2 (default: the latest).",
        ),
        PatternSpec(
            "prep_pred", "digits", "IMAGE", "BYTES", ("LABEL", "PROBABILITIES"), "file",
            "preprocessing and prediction as two models in an ensemble",
            "digit.png", form="ensemble", options=(),
            doc='A digit\'s PNG: `form` "ensemble" (model `digits`) or "bls" (model `digits_bls`).',
        ),
        PatternSpec(
            "prep_pred_bls", "digits_bls", "IMAGE", "BYTES", ("LABEL", "PROBABILITIES"), "file",
            "the prep-pred flow as a BLS model that names the failing step",
            "digit.png", method="prep_pred", form="bls", options=(),
        ),
        PatternSpec(
            "serial", "text_classify", "TEXT", "BYTES", ("LABEL", "PROBABILITIES"), "text",
            "tokenizer -> MiniLM encoder -> classifier head, as an ensemble",
            "the striker scored twice in the final", options=(),
            doc="Topic of a text through tokenizer -> encoder -> classifier (ensemble `text_classify`).",
        ),
        PatternSpec(
            "serial_bls", "iris_cascade", "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "STEPS"), "numbers",
            "BLS steps in order: iris v1, then v2 only when v1 is unsure; per-step timeout and skip",
            "6.0,2.7,5.1,1.6",
            doc="A BLS serial pipeline (routing, timeouts, skips); `.report` lists the steps.",
        ),
        PatternSpec(
            "serial_bls_text", "text_classify_bls", "TEXT", "BYTES", ("LABEL", "PROBABILITIES", "STEPS"), "text",
            "the text pipeline's three steps run by the serial BLS backend, with per-step latency",
            "the striker scored twice in the final",
        ),
        PatternSpec(
            "parallel_ensemble", "iris_vote", "FEATURES", "FP32", ("LABEL", "PROBABILITIES"), "numbers",
            "ensemble fan-out to iris v1 and v2, scores averaged by an aggregating step",
            "6.7,3.0,5.2,2.3",
        ),
        PatternSpec(
            "parallel", "iris_parallel", "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "REPORT"), "numbers",
            "fan-out to four models with per-target and global deadlines, majority vote",
            "6.7,3.0,5.2,2.3",
            doc="A parallel fan-out; `.report` says which targets answered, timed out or failed.",
        ),
        PatternSpec(
            "prediction_cache", "text_classify_cached", "TEXT", "BYTES",
            ("LABEL", "PROBABILITIES", "CACHE_HIT"), "text",
            "Redis cache (TTL, version-aware key) in front of the text pipeline",
            "the striker scored twice in the final",
            doc="The text pipeline behind the Redis prediction cache; `.cache_hit` says which answered.",
        ),
        PatternSpec(
            "data_cache", "digits_by_id", "ID", "BYTES", ("LABEL", "PROBABILITIES", "SOURCE"), "text",
            "a record id in; its image read through Redis in front of a SQLite store",
            "digit-0",
            doc="Classify a stored record by id; `.source` says whether Redis or the store served it.",
        ),
        PatternSpec(
            "time_difference", "iris_time_difference", "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "JOB_ID"),
            "numbers", "iris v1 answers at once; JOB_ID for the slow model's answer (triton-patterns wait)",
            "6.7,3.0,5.2,2.3",
            doc="The fast model's answer now; `.job_id` is the job carrying the slow model's (`wait` for it).",
        ),
        _router("canary", "iris_canary",
                "90/10 split between iris v1 and v2, sticky by --param user_id=..., weights changeable in Redis",
                "Weighted split between versions; sticky per `user_id`, random without one.", ("user_id", "model")),
        _router("ab_test", "iris_ab",
                "arms A (iris v1) and B (v2), 50/50 by a stable hash of --param user_id=...; ARM in the answer",
                'A/B arms assigned per `user_id` by a stable hash; `.arm` is "A" or "B".', ("user_id", "model")),
        _router("shadow", "iris_shadow",
                "iris v1 answers, v2 gets a copy in the background; both logged (triton-patterns shadow-log)",
                "The primary's answer; the candidate's is compared and logged (triton-patterns shadow-log)."),
        _router("route", "iris_route",
                "--param target=v1|v2 picks the version, else a rule on petal length, default v2",
                'Condition-based: `target` names the arm ("v1", "v2"), else the config\'s rules decide.',
                ("target", "model")),
        _router("blue_green", "iris_live", "one arm, the live iris version; switched by triton-patterns bluegreen",
                "The live version's answer (one arm, switched by triton-patterns bluegreen)."),
        PatternSpec(
            "circuit_breaker", "iris_breaker", "FEATURES", "FP32",
            ("LABEL", "PROBABILITIES", "FALLBACK", "FALLBACK_REASON"), "numbers",
            "circuit breaker over a switchable failing iris: the default answer at once, flagged FALLBACK",
            "6.7,3.0,5.2,2.3",
            doc="The target's answer, or the default at once when it fails, is late, is overloaded or the\n"
                "circuit is open: check `.fallback` and `.fallback_reason`.",
        ),
    )
}

# Patterns answered on a gRPC stream: SDK methods only (the CLI, load tests and batch jobs make
# one infer call per request, so they read PATTERNS).
STREAMS: dict[str, PatternSpec] = {
    spec.name: spec
    for spec in (
        PatternSpec(
            "time_difference_stream", "iris_time_difference_stream", "FEATURES", "FP32",
            ("LABEL", "PROBABILITIES", "STAGE"), "numbers",
            "time difference in Triton's native form: one gRPC stream, the fast answer then the slow one",
            "6.7,3.0,5.2,2.3", options=("model", "timeout_s"), answers=2,
            doc="Triton's native form: one gRPC stream, two answers (fast, then slow; `.stage`);\n"
                "each Prediction's latency is the time since the request was sent. Needs protocol \"grpc\".",
        ),
    )
}


def pattern(name: str, model: str | None = None) -> PatternSpec:
    """The pattern's spec; with `model`, the same pattern on another model of that shape."""
    try:
        spec = PATTERNS[name]
    except KeyError:
        raise ValueError(f"unknown pattern {name!r}; known: {', '.join(PATTERNS)}") from None
    return dataclasses.replace(spec, model=model) if model else spec
