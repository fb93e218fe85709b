"""The web_single backend: validation, preprocessing, inference and postprocessing in one model."""

from pattern_kernel.spec import ONNX_OPTIONS, BackendSpec, Output, Parameter

SPEC = BackendSpec(
    "web_single",
    "Validates FEATURES against per-feature ranges, runs the ONNX classifier and names the class.",
    parameters=(
        Parameter("feature_names", required=True, doc="comma list, one per column of FEATURES"),
        Parameter("feature_min", required=True, doc="comma list of lower bounds"),
        Parameter("feature_max", required=True, doc="comma list of upper bounds"),
        *ONNX_OPTIONS,
    ),
    extra_outputs=(Output("CLASS_ID", "TYPE_INT64", (1,), "the class id (LABEL is its name)"),),
)
