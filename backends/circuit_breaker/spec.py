"""The circuit_breaker backend: a target model behind a breaker, with a default answer."""

import json

from pattern_kernel.spec import (
    LABELS_FROM,
    REDIS,
    BackendSpec,
    Output,
    Parameter,
    Reference,
    Targets,
    model_parameters,
    prediction_log_parameters,
)


def default_answer(targets: Targets) -> str:
    """A new breaker's default answer: class 0, uniform PROBABILITIES, zeros elsewhere."""
    values = {}
    for name, dims in targets.outputs:
        n = dims[-1] if dims and dims[-1] > 0 else 1
        values[name] = [round(1.0 / n, 4)] * n if name == "PROBABILITIES" else 0
    return json.dumps(values)


SPEC = BackendSpec(
    "circuit_breaker",
    "Wraps one target model: when it fails, misses the deadline or is overloaded, or while the "
    "circuit is open, the configured default answer is returned at once, flagged.",
    parameters=(
        *model_parameters("target", "the wrapped model (its inputs/outputs: this model's, less the flags)",
                          version_doc="its version (-1: latest)"),
        Parameter("deadline_ms", "float", 1000, "the target's answer is awaited at most this long", min=0,
                  template=True),
        Parameter("target_queue_timeout_ms", "float", 0, "sent as the BLS request timeout: the call may wait this "
                  "long in the target's queue (needs allow_timeout_override there; 0: its own policy)", min=0),
        Parameter("max_request_rows", "int", 0, "rows one request may have (0: any)", min=0),
        Parameter("failure_threshold", "int", 5, "failures within window_ms that open the circuit", min=1),
        Parameter("window_ms", "float", 10000, "the window failures are counted in", min=0),
        Parameter("cool_down_ms", "float", 5000, "open -> half-open after this", min=0),
        Parameter("half_open_probes", "int", 1, "calls let through when half-open: a success closes, a failure "
                                                "re-opens", min=1),
        Parameter("default_outputs", required=True, doc="JSON {output: value}: the fallback answer per row "
                                                         "(scalar or list)", template=default_answer),
        Parameter("force_default", "bool", False, "always answer the default; env TRITON_PATTERNS_FORCE_DEFAULT "
                                                   "overrides (true/all, false/none, or a comma list of models)"),
        Parameter("prediction_log", default="off", choices=("off", "redis"),
                  doc="redis: one record per request to a Redis stream"),
        *prediction_log_parameters(),
        Parameter("prediction_log_reference", default="", doc="model:version whose manifest holds the training "
                                                              "statistics (for `triton-patterns drift`)"),
        *REDIS,
        LABELS_FROM,
    ),
    extra_outputs=(
        Output("FALLBACK", "TYPE_BOOL", (1,), "whether the default answer was returned"),
        Output("FALLBACK_REASON", "TYPE_STRING", (1,), '"" or forced, open, deadline, overloaded, target_error'),
    ),
    references=(Reference("target_model", version="target_version"),),
    template_batching=True,
)
