"""The router backend: rollouts (split), shadow traffic and condition-based routing."""

from pattern_kernel.spec import LABELS_FROM, REDIS, BackendSpec, Output, Parameter, Reference

SPEC = BackendSpec(
    "router",
    "Routes rows between models by `mode`: split (canary, A/B, the blue-green entry point), shadow "
    "(the candidate gets a copy, the primary answers) or condition (rules on inputs).",
    parameters=(
        Parameter("mode", default="split", choices=("split", "shadow", "condition"), doc="how rows are routed",
                  template=True),
        Parameter("targets", required=True, doc='comma list of model[:version], one per arm, e.g. "iris:1,iris:2"'),
        Parameter("arms", doc="the arms' names, one per target (default: the targets as written)"),
        Parameter("weights", doc="split: one weight per arm (default equal)",
                  template=lambda targets: ",".join("1" for _ in targets.names)),
        Parameter("sticky_key", doc="split: request parameter whose value picks the arm through a stable hash"),
        Parameter("sticky_required", "bool", False, "split: a request without the sticky key is refused"),
        Parameter("hash_salt", doc="split: the hash's salt (default: the model name)"),
        Parameter("weights_key", default="", doc="split: Redis key holding {arm: weight} that overrides `weights` "
                                                 "at run time"),
        Parameter("weights_refresh_s", "float", 5.0, "split: how often weights_key is re-read", min=0.01),
        Parameter("shadow_timeout_ms", "float", 5000, "shadow: the candidate's deadline", min=0),
        Parameter("shadow_max_in_flight", "int", 2, "shadow: candidate calls at once; beyond it a request is not "
                                                    "mirrored", min=1),
        Parameter("shadow_stream", doc="shadow: Redis stream of comparisons (default shadow:<model>)"),
        Parameter("shadow_stream_maxlen", "int", 10000, "shadow: the stream is trimmed to about this many entries",
                  min=1),
        Parameter("compare_output", default="LABEL", doc="shadow: the output compared for agreement"),
        Parameter("route_parameter", default="target", doc="condition: request parameter naming an arm for all "
                                                           "rows"),
        Parameter("rules", doc='condition: "INPUT[i] op number -> arm" separated by ";"'),
        Parameter("default_arm", doc="condition: the arm of rows no rule takes (default: the first arm)"),
        LABELS_FROM,
        *REDIS,
    ),
    extra_outputs=(
        Output("ARM", "TYPE_STRING", (1,), "the arm that answered the row"),
        Output("TARGET", "TYPE_STRING", (1,), "the model:version that answered the row"),
    ),
    references=(Reference("targets", "targets"),),
)
