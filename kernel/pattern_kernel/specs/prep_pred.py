"""The prep_pred backend: a preprocessing model, then a prediction model (BLS)."""

from pattern_kernel.spec import LABELS, BackendSpec, Parameter, Reference

SPEC = BackendSpec(
    "prep_pred",
    "Prep-pred pattern: the model's inputs go to a preprocessing model, its outputs come from the "
    "predictor; an error says which step failed.",
    parameters=(
        Parameter("preprocess_model", required=True, doc="the preprocessing model"),
        Parameter("preprocess_version", "int", -1, "its pinned version"),
        Parameter("predict_model", required=True, doc="the predictor"),
        Parameter("predict_version", "int", -1, "its pinned version"),
        Parameter("features", required=True, doc="comma list of preprocess outputs fed to the predictor"),
        LABELS,
    ),
    references=(
        Reference("preprocess_model", version="preprocess_version"),
        Reference("predict_model", version="predict_version"),
    ),
)
