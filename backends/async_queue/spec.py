"""The async_queue backend: job submission and result retrieval over a Redis Stream."""

from pattern_kernel.spec import LABELS_FROM, BackendSpec, Output, Parameter, Reference, job_queue_parameters

SPEC = BackendSpec(
    "async_queue",
    "Asynchronous pattern: `submit` stores a job and answers its JOB_ID at once, `result` reads "
    "jobs' STATUS and RESULT; workers run the jobs.",
    parameters=(
        Parameter("mode", required=True, choices=("submit", "result"), doc="which side of the queue this model is"),
        Parameter("targets", doc="submit: comma list of model[:version] a job may run on; the first is the "
                                 "default, the request parameter `target` picks another (required for submit)"),
        Parameter("max_rows", "int", 64, "submit: rows per job", min=1),
        Parameter("metrics_interval_s", "float", 5.0, "result: seconds between reads of the namespace's queue "
                                                      "depth and oldest job age for its gauges (0: no gauges)", min=0),
        *job_queue_parameters("async"),
        LABELS_FROM,
    ),
    extra_outputs=(
        Output("JOB_ID", "TYPE_STRING", (1,), "submit: the job's id", when=(("mode", "submit"),)),
    ),
    references=(Reference("targets", "targets"),),
)
