"""The parallel backend: one request fans out to several models, the answers are aggregated."""

from pattern_kernel.aggregation import POLICIES
from pattern_kernel.spec import CAPTURE, LABELS_FROM, BackendSpec, Output, Parameter, Reference

SPEC = BackendSpec(
    "parallel",
    "Parallel microservice pattern: one request fans out to several models at once, the answers "
    "that arrive in time are aggregated.",
    parameters=(
        Parameter("targets", required=True, doc='comma list of model[:version], e.g. "iris:1,iris:2,iris_slow"'),
        Parameter("target_timeout_ms", default="1000", doc="per-target deadline: one value, or one per target "
                                                           "(comma list)", template=True),
        Parameter("deadline_ms", "float", 2000, "global deadline for the whole fan-out", min=0, template=True),
        Parameter("aggregation", default="majority", choices=POLICIES, doc="how the answers are combined",
                  template=True),
        Parameter("min_answers", "int", 1, "answers needed; with fewer, the default answer is returned", min=0,
                  template=True),
        Parameter("default_label", "int", 0, "class id of the default answer (its scores are uniform)", min=0,
                  template=True),
        LABELS_FROM,
        *CAPTURE,
    ),
    extra_outputs=(
        Output("REPORT", "TYPE_STRING", (1,), "JSON: which targets answered, timed out or failed, their "
                                              "latencies, whether the default was used", json=True, attribute="report"),
    ),
    references=(Reference("targets", "targets"),),
)
