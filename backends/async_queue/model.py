"""Asynchronous pattern: job submission and result retrieval as Triton models over a Redis
Stream (`pattern_kernel.job_queue`); workers (`pattern_jobs.async_worker`) run the
jobs against the target models through Triton gRPC.

parameters:
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
import triton_python_backend_utils as pb_utils

from pattern_kernel.errors import InputError, StepError
from pattern_kernel.job_queue import check_job_inputs, queue_for
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.triton_glue import count_failures, execute_each, read_inputs, response
from pattern_kernel.validation import parse_targets, utf8_values


def pick_target(targets: list[tuple[str, int]], wanted: str | None) -> tuple[str, int]:
    if not wanted:
        return targets[0]
    model, _, version = wanted.partition(":")
    for target in targets:
        if target[0] == model and (not version or str(target[1]) == version):
            return target
    allowed = ", ".join(m if v < 0 else f"{m}:{v}" for m, v in targets)
    raise ValueError(f"request parameter 'target': {wanted!r} is not one of this model's targets ({allowed})")


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        c = self.config = parse_model_config(args["model_config"])
        self.mode = c.required_parameter("mode")
        if self.mode not in ("submit", "result"):
            raise ValueError(f"model '{c.name}': parameter 'mode' must be 'submit' or 'result', got {self.mode!r}")
        self.queue = queue_for(c)
        if self.mode == "submit":
            self.targets = parse_targets(c.required_parameter("targets"))
            self.max_rows = c.int_parameter("max_rows", 64)
            # kept on self: a Metric whose MetricFamily was garbage-collected can't be incremented
            self.metric_family = pb_utils.MetricFamily(
                name="async_jobs_submitted_total",
                description="Jobs accepted by an async submit model, by target",
                kind=pb_utils.MetricFamily.COUNTER,
            )
            self.counters = {
                m: self.metric_family.Metric(labels={"model": c.name, "target": m}) for m, _ in self.targets
            }

    def _submit(self, request):
        inputs = read_inputs(request, self.config.inputs)
        check_job_inputs(inputs, self.max_rows)
        model, version = pick_target(self.targets, json.loads(request.parameters() or "{}").get("target"))
        try:
            job_id = self.queue.submit(model, version, inputs, self.config.name)
        except redis.RedisError as exc:
            raise StepError("enqueue", model, version, f"the job queue (Redis) is unavailable: {exc}") from None
        self.counters[model].increment(1)
        return response({"JOB_ID": np.array([job_id.encode()], dtype=object)})

    def _result(self, request):
        ids = utf8_values("JOB_ID", read_inputs(request, self.config.inputs)["JOB_ID"])
        try:
            states = self.queue.states(ids)
        except redis.RedisError as exc:
            raise StepError("lookup", "redis", None, f"the job store (Redis) is unavailable: {exc}") from None
        for job_id, state in zip(ids, states):
            if state is None:
                raise InputError("JOB_ID", f"no job {job_id!r} (unknown, or expired after ttl_seconds)")
        return response({
            "STATUS": np.array([s.status.encode() for s in states], dtype=object),
            "RESULT": np.array([json.dumps(s.as_json()).encode() for s in states], dtype=object),
        })

    def execute(self, requests):
        return execute_each(requests, self._submit if self.mode == "submit" else self._result)
