"""The aggregate backend: the combining step of a parallel ensemble."""

from pattern_kernel.aggregation import POLICIES
from pattern_kernel.spec import LABELS_FROM, BackendSpec, Parameter

SPEC = BackendSpec(
    "aggregate",
    "Combines the scores [n, k] of several models (its inputs) into LABEL and PROBABILITIES.",
    parameters=(
        Parameter("aggregation", default="mean", choices=POLICIES, doc="how the answers are combined"),
        LABELS_FROM,
    ),
)
