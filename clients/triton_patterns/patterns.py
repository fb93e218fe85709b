"""The catalogue of patterns the SDK and CLI can call: which model, which input, which outputs.

A pattern here is data, not code: adding a pattern whose model takes one input tensor and
answers with a class is one entry in PATTERNS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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


def _router(name: str, model: str, summary: str) -> PatternSpec:
    """A rollout pattern: an iris router model (backends/router) that reports its ARM and TARGET."""
    return PatternSpec(name, model, "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "ARM", "TARGET"), "numbers",
                       f"router: {summary}", "6.7,3.0,5.2,2.3")


PATTERNS: dict[str, PatternSpec] = {
    spec.name: spec
    for spec in (
        PatternSpec(
            "web_single", "iris_web_single", "FEATURES", "FP32", ("LABEL", "CLASS_ID", "PROBABILITIES"), "numbers",
            "validation, preprocessing and inference in one model",
            "5.1,3.5,1.4,0.2",
        ),
        PatternSpec(
            "synchronous", "iris", "FEATURES", "FP32", ("LABEL", "PROBABILITIES"), "numbers",
            "the ONNX model served directly, dynamic batching, versions 1 and 2",
            "6.7,3.0,5.2,2.3",
        ),
        PatternSpec(
            "prep_pred", "digits", "IMAGE", "BYTES", ("LABEL", "PROBABILITIES"), "file",
            "preprocessing and prediction as two models in an ensemble",
            "digit.png",
        ),
        PatternSpec(
            "prep_pred_bls", "digits_bls", "IMAGE", "BYTES", ("LABEL", "PROBABILITIES"), "file",
            "the prep-pred flow as a BLS model that names the failing step",
            "digit.png",
        ),
        PatternSpec(
            "serial", "text_classify", "TEXT", "BYTES", ("LABEL", "PROBABILITIES"), "text",
            "tokenizer -> MiniLM encoder -> classifier head, as an ensemble",
            "the striker scored twice in the final",
        ),
        PatternSpec(
            "serial_bls", "iris_cascade", "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "STEPS"), "numbers",
            "BLS steps in order: iris v1, then v2 only when v1 is unsure; per-step timeout and skip",
            "6.0,2.7,5.1,1.6",
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
        ),
        PatternSpec(
            "prediction_cache", "text_classify_cached", "TEXT", "BYTES",
            ("LABEL", "PROBABILITIES", "CACHE_HIT"), "text",
            "Redis cache (TTL, version-aware key) in front of the text pipeline",
            "the striker scored twice in the final",
        ),
        PatternSpec(
            "data_cache", "digits_by_id", "ID", "BYTES", ("LABEL", "PROBABILITIES", "SOURCE"), "text",
            "a record id in; its image read through Redis in front of a SQLite store",
            "digit-0",
        ),
        PatternSpec(
            "time_difference", "iris_time_difference", "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "JOB_ID"),
            "numbers", "iris v1 answers at once; JOB_ID for the slow model's answer (triton-patterns wait)",
            "6.7,3.0,5.2,2.3",
        ),
        _router("canary", "iris_canary",
                "90/10 split between iris v1 and v2, sticky by --param user_id=..., weights changeable in Redis"),
        _router("ab_test", "iris_ab",
                "arms A (iris v1) and B (v2), 50/50 by a stable hash of --param user_id=...; ARM in the answer"),
        _router("shadow", "iris_shadow",
                "iris v1 answers, v2 gets a copy in the background; both logged (triton-patterns shadow-log)"),
        _router("route", "iris_route", "--param target=v1|v2 picks the version, else a rule on petal length, default v2"),
        _router("blue_green", "iris_live", "one arm, the live iris version; switched by triton-patterns bluegreen"),
        PatternSpec(
            "circuit_breaker", "iris_breaker", "FEATURES", "FP32",
            ("LABEL", "PROBABILITIES", "FALLBACK", "FALLBACK_REASON"), "numbers",
            "circuit breaker over a switchable failing iris: the default answer at once, flagged FALLBACK",
            "6.7,3.0,5.2,2.3",
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
