"""The data_cache backend: a record id in, its data read through Redis in front of a store."""

from pattern_kernel.spec import CACHE_REDIS, LABELS_FROM, BackendSpec, Output, Parameter, Reference, model_parameters

SPEC = BackendSpec(
    "data_cache",
    "Data cache pattern: the request carries a record id; the raw data (or the preprocessed tensor) "
    "is read through Redis (cache-aside, TTL) in front of a slower store, then the model is called.",
    parameters=(
        Parameter("store_path", required=True, doc="SQLite store (env TRITON_PATTERNS_DATA_STORE overrides)"),
        Parameter("ttl_seconds", "int", 300, "lifetime of cached data (0: no cache, every read from the store)",
                  min=0),
        Parameter("namespace", default="data", doc="key prefix"),
        *model_parameters("target", "the model fed the raw data (input-data cache)", required=False),
        Parameter("target_input", required=True, doc="the input the raw data is fed to"),
        *model_parameters("preprocess", "if set: preprocessed-data cache (the preprocess output is cached)",
                          required=False),
        Parameter("preprocess_output", doc="the preprocess output fed to predict_model"),
        *model_parameters("predict", "preprocessed-data cache: the model fed the cached tensor", required=False),
        *CACHE_REDIS,
        LABELS_FROM,
    ),
    extra_outputs=(Output("SOURCE", "TYPE_STRING", (1, 1),
                          '"redis" or "store": where the data came from (one record per '
                          "request)", per_row=False),),
    references=(
        Reference("target_model", version="target_version"),
        Reference("preprocess_model", version="preprocess_version"),
        Reference("predict_model", version="predict_version"),
    ),
)
