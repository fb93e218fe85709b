"""The prep_pred backend: a preprocessing model, then a prediction model (BLS)."""

from pattern_kernel.spec import LABELS_FROM, BackendSpec, Parameter, Reference, model_parameters

SPEC = BackendSpec(
    "prep_pred",
    "Prep-pred pattern: the model's inputs go to a preprocessing model, its outputs come from the "
    "predictor; an error says which step failed.",
    parameters=(
        *model_parameters("preprocess", "the preprocessing model", version_doc="its pinned version"),
        *model_parameters("predict", "the predictor", version_doc="its pinned version"),
        Parameter("features", required=True, doc="comma list of preprocess outputs fed to the predictor"),
        LABELS_FROM,
    ),
    references=(
        Reference("preprocess_model", version="preprocess_version"),
        Reference("predict_model", version="predict_version"),
    ),
)
