"""The fault_injection backend: forwards to a target, adding latency, failures or a hang."""

from pattern_kernel.spec import REDIS, BackendSpec, Parameter, Reference, model_parameters

SPEC = BackendSpec(
    "fault_injection",
    "Forwards each request to a target model, adding latency, failures or a hang (tests and demos).",
    parameters=(
        *model_parameters("target", "the model that answers (its inputs/outputs: this model's)"),
        Parameter("latency_ms", "float", 0.0, "added before forwarding", min=0),
        Parameter("failure_rate", "float", 0.0, "fraction of requests answered with an error", min=0, max=1),
        Parameter("hang", "bool", False, "never answer within any sane deadline (sleeps hang_seconds)"),
        Parameter("hang_seconds", "float", 600.0, "how long a hang lasts", min=0),
        Parameter("seed", "int", 0, "for the failure draws"),
        Parameter("fault_key", doc='Redis key read on every request: "fail", "hang" or a latency in ms '
                                   "(absent, anything else or Redis down: no fault)"),
        *REDIS,
    ),
    references=(Reference("target_model", version="target_version"),),
)
