"""The prediction_cache backend: answers to repeated inputs from Redis."""

from pattern_kernel.spec import LABELS, REDIS, BackendSpec, Output, Parameter, Reference

SPEC = BackendSpec(
    "prediction_cache",
    "Answers to repeated inputs come from Redis, others from the target model; Redis down: the "
    "model still answers.",
    parameters=(
        Parameter("target_model", required=True, doc="the model behind the cache"),
        Parameter("target_version", "int", -1, "its version: explicit, so a new version never gets the old "
                                               "one's answers"),
        Parameter("ttl_seconds", "int", 300, "lifetime of a cached answer", min=1, template=True),
        Parameter("namespace", default="prediction", doc="key prefix", template=True),
        LABELS,
        *REDIS,
    ),
    extra_outputs=(Output("CACHE_HIT", "TYPE_BOOL", (1,), "whether the answer came from the cache"),),
    references=(Reference("target_model", version="target_version"),),
)
