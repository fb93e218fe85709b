"""The prediction_cache backend: answers to repeated inputs from Redis."""

from pattern_kernel.spec import CACHE_REDIS, LABELS_FROM, BackendSpec, Output, Parameter, Reference, model_parameters

SPEC = BackendSpec(
    "prediction_cache",
    "Answers to repeated inputs come from Redis, others from the target model; Redis down: the "
    "model still answers.",
    parameters=(
        *model_parameters("target", "the model behind the cache",
                          version_doc="its version: explicit, so a new version never gets the old "
                                               "one's answers"),
        Parameter("ttl_seconds", "int", 300, "lifetime of a cached answer", min=1, template=True),
        Parameter("namespace", default="prediction", doc="key prefix", template=True),
        LABELS_FROM,
        *CACHE_REDIS,
    ),
    extra_outputs=(Output("CACHE_HIT", "TYPE_BOOL", (1,), "whether the answer came from the cache"),),
    references=(Reference("target_model", version="target_version"),),
)
