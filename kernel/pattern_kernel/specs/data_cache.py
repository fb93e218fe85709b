"""The data_cache backend: a record id in, its data read through Redis in front of a store."""

from pattern_kernel.spec import REDIS, BackendSpec, Output, Parameter, Reference

SPEC = BackendSpec(
    "data_cache",
    "Data cache pattern: the request carries a record id; the raw data (or the preprocessed tensor) "
    "is read through Redis (cache-aside, TTL) in front of a slower store, then the model is called.",
    parameters=(
        Parameter("store_path", required=True, doc="SQLite store (env TRITON_PATTERNS_DATA_STORE overrides)"),
        Parameter("ttl_seconds", "int", 300, "lifetime of cached data (0: no cache, every read from the store)",
                  min=0),
        Parameter("namespace", default="data", doc="key prefix"),
        Parameter("target_model", doc="the model fed the raw data (input-data cache)"),
        Parameter("target_version", "int", -1, "its version"),
        Parameter("target_input", required=True, doc="the input the raw data is fed to"),
        Parameter("preprocess_model", doc="if set: preprocessed-data cache (the preprocess output is cached)"),
        Parameter("preprocess_version", "int", -1, "its version"),
        Parameter("preprocess_output", doc="the preprocess output fed to predict_model"),
        Parameter("predict_model", doc="preprocessed-data cache: the model fed the cached tensor"),
        Parameter("predict_version", "int", -1, "its version"),
        *REDIS,
    ),
    extra_outputs=(Output("SOURCE", "TYPE_STRING", (1,), '"redis" or "store": where the data came from'),),
    references=(
        Reference("target_model", version="target_version"),
        Reference("preprocess_model", version="preprocess_version"),
        Reference("predict_model", version="predict_version"),
    ),
)
