"""The time_difference backend: the fast model answers at once, the slow model's answer follows."""

from pattern_kernel.spec import (
    LABELS_FROM,
    BackendSpec,
    Output,
    Parameter,
    Reference,
    job_queue_parameters,
    model_parameters,
)

SPEC = BackendSpec(
    "time_difference",
    "The fast model answers within the request; the slow model's answer follows, as a job of the "
    "asynchronous pattern (JOB_ID) or, decoupled, as a second response on the stream (STAGE).",
    parameters=(
        *model_parameters("fast", "answers within the request"),
        *model_parameters("slow", "the slow answer"),
        Parameter("slow_timeout_ms", "float", 10000, "decoupled: the slow answer's deadline", min=0),
        Parameter("max_rows", "int", 64, "rows per request", min=1),
        *job_queue_parameters("async"),
        LABELS_FROM,
    ),
    extra_outputs=(
        Output("JOB_ID", "TYPE_STRING", (1,), "not decoupled: the slow model's job (empty if Redis is down)",
               decoupled=False),
        Output("STAGE", "TYPE_STRING", (1,), 'decoupled: "fast" or "slow"', decoupled=True, per_row=False),
    ),
    references=(
        Reference("fast_model", version="fast_version"),
        Reference("slow_model", version="slow_version"),
    ),
)
