"""The serial backend: steps run in order, routed, time-boxed, skipped on error."""

from pattern_kernel.spec import CAPTURE, LABELS_FROM, BackendSpec, Output, Parameter, Reference

SPEC = BackendSpec(
    "serial",
    "Serial microservice pattern: steps run in order over a pool of tensors (this model's inputs "
    "first); each may be routed on an earlier result, time-boxed, and skipped on error.",
    parameters=(
        Parameter("steps", required=True, doc="JSON list of steps: name, model, version, inputs {callee: pool}, "
                                              "outputs {callee: pool}, timeout_ms, on_error fail/skip, "
                                              "skip_values, when"),
        LABELS_FROM,
        *CAPTURE,
    ),
    extra_outputs=(Output("STEPS", "TYPE_STRING", (1,), "JSON: each step ran, skipped or not_taken, with latency",
                          json=True, attribute="report"),),
    references=(Reference("steps", "steps"),),
)
