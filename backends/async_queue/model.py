"""Asynchronous pattern: job submission and result retrieval as Triton models over a Redis
Stream (`pattern_kernel.job_queue`); workers (`pattern_jobs.async_worker`) run the
jobs against the target models through Triton gRPC.

Parameters (pattern_kernel.specs.async_queue):
  mode            "submit" or "result"
  targets         submit: comma list of model[:version] a job may run on; the first is the
                  default, a request picks another with the request parameter `target`
                  ("iris_failing" or "iris:1")
  max_rows        submit: rows per job (default 64)
  namespace       key prefix (default "async"); ttl_seconds: a job's lifetime after its last
                  change (default 3600)
  redis_url       env TRITON_PATTERNS_REDIS_URL overrides; redis_timeout_ms (default 50)
submit: the target's inputs (checked: rows, finite numbers, non-empty texts) in; JOB_ID out at
once, the job stored as `queued` and added to the stream. result: JOB_ID [n] in; STATUS [n]
(queued, running, done, failed) and RESULT [n] (JSON: outputs with dtype and shape, model
version, attempts, timings, error). An unknown or expired job id is INVALID_ARG naming it;
Redis unreachable is UNAVAILABLE.
Metric: async_jobs_submitted_total{model, target}.
"""

from __future__ import annotations

import json

import numpy as np
import redis

from pattern_kernel.errors import InputError, StepError
from pattern_kernel.job_queue import check_job_inputs, queue_for
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.validation import parse_targets, utf8_values


def pick_target(targets: list[tuple[str, int]], wanted: str | None) -> tuple[str, int]:
    if not wanted:
        return targets[0]
    model, _, version = wanted.partition(":")
    for target in targets:
        if target[0] == model and (not version or str(target[1]) == version):
            return target
    allowed = ", ".join(m if v < 0 else f"{m}:{v}" for m, v in targets)
    raise InputError("target", f"{wanted!r} is not one of this model's targets ({allowed})",
                     kind="request parameter")


class TritonPythonModel(PatternModel):
    BACKEND = "async_queue"

    def setup(self, args):
        self.queue = queue_for(self.config)
        self.handle = self._submit if self.params["mode"] == "submit" else self._result
        if self.params["mode"] == "submit":
            self.targets = parse_targets(self.required("targets"))
            self.submitted = self.metrics("async_jobs_submitted_total", "Jobs accepted by an async submit model, "
                                                                        "by target")
            for model, _ in self.targets:
                self.submitted.metric(target=model)

    def _submit(self, request, inputs):
        check_job_inputs(inputs, self.params["max_rows"])
        model, version = pick_target(self.targets, json.loads(request.parameters() or "{}").get("target"))
        try:
            job_id = self.queue.submit(model, version, inputs, self.config.name)
        except redis.RedisError as exc:
            raise StepError("enqueue", model, version, f"the job queue (Redis) is unavailable: {exc}") from None
        self.submitted.increment(target=model)
        return {"JOB_ID": np.array([job_id.encode()], dtype=object)}

    def _result(self, request, inputs):
        ids = utf8_values("JOB_ID", inputs["JOB_ID"])
        try:
            states = self.queue.states(ids)
        except redis.RedisError as exc:
            raise StepError("lookup", "redis", None, f"the job store (Redis) is unavailable: {exc}") from None
        for job_id, state in zip(ids, states):
            if state is None:
                raise InputError("JOB_ID", f"no job {job_id!r} (unknown, or expired after ttl_seconds)")
        return {
            "STATUS": np.array([s.status.encode() for s in states], dtype=object),
            "RESULT": np.array([json.dumps(s.as_json()).encode() for s in states], dtype=object),
        }
