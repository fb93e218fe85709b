"""What a pattern backend declares about itself: its config parameters (type, default, bounds,
choices, doc), the outputs it adds to its targets', and which parameters name other models.

Free of Triton, so the tools (checker, template, docs) read it outside the server; inside, the
backends read their parameters through `BackendSpec.read` and their configs get the extra outputs
through `BackendSpec.completed_outputs` (see `pattern_model.PatternModel`). Each spec is the
`spec.py` beside its backend's model.py, found by the registry `pattern_kernel.specs`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pattern_kernel.capture import MIN_BYTES as MIN_CAPTURE_BYTES
from pattern_kernel.pipeline import parse_steps
from pattern_kernel.validation import parse_targets

_TYPES = {"str": "text", "int": "an integer", "float": "a number", "bool": '"true" or "false"', "json": "JSON"}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(text)
    return lowered == "true"


_CASTS = {"str": str, "int": int, "float": float, "bool": _bool, "json": json.loads}


@dataclass(frozen=True)
class Targets:
    """What `triton-patterns new pattern` knows of the models a new config calls: their names (in
    order) and the first one's outputs as (name, dims)."""

    names: tuple[str, ...]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class Parameter:
    """One `parameters { key: ... }` entry of a model config."""

    name: str
    type: str = "str"  # str | int | float | bool | json (the value is parsed as this)
    default: Any = None  # None: absent unless given (the backend decides)
    doc: str = ""
    required: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    # `triton-patterns new pattern` writes it: True with its default; a function: with its value for the targets
    template: bool | Callable[[Targets], str] = False

    def parse(self, raw: str | None, model: str) -> Any:
        """The typed value of `raw` (the config's string; None or "": the default)."""
        where = f"model '{model}': parameter '{self.name}'"
        if raw is None or raw == "":
            if self.required:
                raise ValueError(f"model '{model}': config parameter '{self.name}' is required")
            return self.default
        try:
            value = _CASTS[self.type](raw)
        except ValueError:
            raise ValueError(f"{where} must be {_TYPES[self.type]}, got {raw!r}") from None
        if self.choices and value not in self.choices:
            raise ValueError(f"{where} must be one of {list(self.choices)}, got {value!r}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{where} must be >= {self.min:g}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{where} must be <= {self.max:g}, got {value!r}")
        return value

    def shown_default(self) -> str:
        """The default as a config would write it ("" when there is none)."""
        if self.default is None:
            return ""
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


@dataclass(frozen=True)
class Output:
    """An output the backend adds to those of the models it calls."""

    name: str
    type: str  # Triton's data type, e.g. "TYPE_STRING"
    dims: tuple[int, ...] = (1,)
    doc: str = ""
    json: bool = False  # a TYPE_STRING holding a JSON document
    attribute: str = ""  # the SDK's Prediction attribute (default: the name in lower case)
    when: tuple[tuple[str, str], ...] = ()  # (parameter, value) pairs a config must have for this output
    decoupled: bool | None = None  # only for a decoupled (True) or a not decoupled (False) model; None: both
    per_row: bool = True  # one value per row: a model without batching gets dims [-1, *dims]

    def applies(self, config: Mapping[str, Any]) -> bool:
        """Whether a model config (Triton's JSON form, as a dict) has this output."""
        parameters = config.get("parameters") or {}
        if any((parameters.get(key) or {}).get("string_value") != value for key, value in self.when):
            return False
        decoupled = bool((config.get("model_transaction_policy") or {}).get("decoupled", False))
        return self.decoupled is None or self.decoupled == decoupled

    def config_entry(self, batching: bool) -> dict[str, Any]:
        """The output as a config's `output` entry (Triton's JSON form)."""
        dims = list(self.dims) if batching or not self.per_row else [-1, *self.dims]
        return {"name": self.name, "data_type": self.type, "dims": dims}


@dataclass(frozen=True)
class Reference:
    """Parameters naming models this backend calls. `kind` "model": `parameter` holds one model
    name and `version` the parameter of its version (-1: latest); "targets": a comma list of
    model[:version] (`validation.parse_targets`); "steps": the serial JSON list (`pipeline.parse_steps`)."""

    parameter: str
    kind: str = "model"
    version: str | None = None

    def models(self, parameters: Mapping[str, str]) -> list[tuple[str, str, int]]:
        """(config field, model, version) of every model named; ValueError "field: problem" when a
        value does not parse (a version that is not an integer, a malformed list)."""
        value = (parameters.get(self.parameter) or "").strip()
        if not value:
            return []
        where = f"parameters.{self.parameter}"
        if self.kind == "targets":
            try:
                return [(where, m, v) for m, v in parse_targets(value)]
            except ValueError:
                raise ValueError(f"{where}: {value!r}: expected a comma list of model[:version]") from None
        if self.kind == "steps":
            try:
                steps = parse_steps(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            return [(f"{where}[{i}] ({s.name})", s.model, int(s.version)) for i, s in enumerate(steps)]
        raw = (parameters.get(self.version) or "-1").strip() if self.version else "-1"
        try:
            version = int(raw)
        except ValueError:
            raise ValueError(f"parameters.{self.version}: {raw!r} is not an integer version") from None
        return [(f"parameters.{self.parameter}", value, version)]


@dataclass(frozen=True)
class BackendSpec:
    """Everything a backend declares: see the module docstring."""

    name: str
    summary: str
    parameters: tuple[Parameter, ...] = ()
    extra_outputs: tuple[Output, ...] = ()
    references: tuple[Reference, ...] = ()
    template_batching: bool = False  # a new config from the template gets dynamic_batching (when it batches)

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(f"backend '{self.name}' declares no parameter '{name}'")

    @property
    def extra_output_names(self) -> frozenset[str]:
        return frozenset(o.name for o in self.extra_outputs)

    def completed_outputs(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The extra outputs a model config (Triton's JSON form) gets that it does not declare itself,
        as `output` entries: what the backend's `auto_complete_config` adds, and what the checker
        adds before it validates."""
        declared = {o.get("name") for o in config.get("output") or []}
        batching = int(config.get("max_batch_size") or 0) > 0
        return [o.config_entry(batching) for o in self.extra_outputs if o.name not in declared and o.applies(config)]

    def read(self, model: str, parameters: Mapping[str, str]) -> dict[str, Any]:
        """Every declared parameter's typed value (default when absent); ValueError naming the
        model and the parameter when one is missing, of the wrong type or out of bounds."""
        return {p.name: p.parse(parameters.get(p.name), model) for p in self.parameters}

    def template_defaults(self, targets: Targets) -> dict[str, str]:
        """The parameters a new config from the template over `targets` starts with, as strings."""
        return {p.name: p.template(targets) if callable(p.template) else p.shown_default()
                for p in self.parameters if p.template}


# Parameters several backends share, by the kernel helper that reads them (redis_link.connect).
REDIS_TIMEOUT = Parameter("redis_timeout_ms", "float", 50, "socket timeout: Redis being down costs a request at "
                                                           "most this", min=0)
REDIS = (
    Parameter("redis_url", default="redis://127.0.0.1:6379/0",
              doc="the queue's Redis (kept, never evicted); the environment variable TRITON_PATTERNS_REDIS_URL "
                  "overrides it"),
    REDIS_TIMEOUT,
)
# The caches' Redis: only keys that may be evicted (redis_link.connect(config, cache=True)).
CACHE_REDIS = (
    Parameter("redis_url", default="redis://127.0.0.1:6379/0",
              doc="the cache's Redis (evictable keys only); the environment variable "
                  "TRITON_PATTERNS_CACHE_REDIS_URL, else TRITON_PATTERNS_REDIS_URL, overrides it"),
    REDIS_TIMEOUT,
)


def prediction_log_parameters(maxlen: int = 10000) -> tuple[Parameter, Parameter]:
    """What `pattern_model.PatternModel.prediction_log` reads (with REDIS)."""
    return (Parameter("prediction_log_stream", doc="the stream (default prediction_log:<model>)"),
            Parameter("prediction_log_maxlen", "int", maxlen, "the stream is trimmed to about this many records",
                      min=1))


# What `capture.Capturer` reads: the pipelines' sampled capture of intermediate tensors.
CAPTURE = (
    Parameter("capture_rate", "float", 0, "fraction of requests whose every step's inputs and outputs are "
                                          "written to the prediction-log stream (0: off; 1: every request)",
              min=0, max=1),
    Parameter("capture_max_bytes", "int", 65536, "the most one capture may take: larger tensors are truncated "
                                                 "(said in the capture), never written whole", min=MIN_CAPTURE_BYTES),
    *prediction_log_parameters(maxlen=1000),  # at most ~1000 x capture_max_bytes in Redis
    *REDIS,
)
LABELS_FROM = Parameter("labels_from", doc="the model whose class names this model's class ids index: one whose "
                                            "PROBABILITIES has a `label_filename`, an ensemble over one, or one with "
                                            "its own `labels_from` (read by the SDK and the checker)")
ONNX_OPTIONS = (
    Parameter("intra_op_thread_count", "int", 0, "onnxruntime threads within an operator (0: its default)", min=0),
    Parameter("inter_op_thread_count", "int", 0, "onnxruntime threads across operators (0: its default)", min=0),
    Parameter("execution_mode", "int", 0, "1: onnxruntime's parallel execution mode", choices=(0, 1)),
)


def model_parameters(prefix: str, doc: str, required: bool = True, version_doc: str = "its version",
                     **version_bounds) -> tuple[Parameter, Parameter]:
    """`<prefix>_model` (a model this backend calls) and `<prefix>_version` (-1: the latest);
    the spec's references name them: Reference(f"{prefix}_model", version=f"{prefix}_version")."""
    return (Parameter(f"{prefix}_model", required=required, doc=doc),
            Parameter(f"{prefix}_version", "int", -1, version_doc, **version_bounds))


def job_queue_parameters(namespace: str = "async") -> tuple[Parameter, ...]:
    """What `job_queue.queue_for` reads."""
    return (
        Parameter("namespace", default=namespace, doc="key prefix of the jobs and their stream"),
        Parameter("ttl_seconds", "int", 3600, "a job's lifetime after its last change", min=1),
        *REDIS,
    )


def markdown_table(spec: BackendSpec) -> str:
    """The spec's parameters and extra outputs as Markdown (the docs' parameter tables)."""
    lines = ["| parameter | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for p in spec.parameters:
        allowed = []
        if p.choices:
            allowed.append(" \\| ".join(str(c) for c in p.choices))
        if p.min is not None:
            allowed.append(f">= {p.min:g}")
        if p.max is not None:
            allowed.append(f"<= {p.max:g}")
        default = "required" if p.required else (f"`{p.shown_default()}`" if p.shown_default() else "")
        doc = p.doc.replace("|", "\\|")
        lines.append(f"| `{p.name}` | {p.type} | {default} | {', '.join(allowed)} | {doc} |")
    if spec.extra_outputs:
        lines += ["", "| extra output | type | dims | meaning |", "|---|---|---|---|"]
        lines += [f"| `{o.name}` | {o.type[5:]} | {list(o.dims)} | {o.doc} |" for o in spec.extra_outputs]
    if spec.references:
        named = ", ".join(f"`{r.parameter}`" + (f" (version `{r.version}`)" if r.version else "")
                          for r in spec.references)
        lines += ["", f"Parameters that name models (checked by `triton-patterns check`): {named}."]
    return "\n".join(lines)
