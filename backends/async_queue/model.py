"""Asynchronous pattern: job submission and result retrieval as Triton models over a Redis
Stream (`pattern_kernel.job_queue`); workers (`pattern_jobs.async_worker`) run the
jobs against the target models through Triton gRPC.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
submit: the target's inputs (checked: rows, finite numbers, non-empty texts) in; JOB_ID out at
once (one per row: a batching model answers per row), the job stored as `queued` and added to
the stream; the jobs of one dynamic batch go to Redis in one pipelined call. The request
parameter `idempotency_key` (1-200 printable characters) makes a retry safe: a second submit
with the same key to the same submit model within ttl_seconds answers the first job's id and
queues nothing (INVALID_ARG if the key was used for other inputs or another target).
result: JOB_ID [n] in; STATUS [n] (queued, running, done, failed, or unknown) and RESULT [n] (JSON: outputs with
dtype and shape, model version, attempts, timings, error), one answer per id: an id with no record is
`unknown` with the reason as its error (lost: younger than ttl_seconds, the job store lost it;
expired; or not an id this queue makes), the other ids get their states. No id, an empty id or one
that is not UTF-8 text is INVALID_ARG naming JOB_ID; Redis unreachable is UNAVAILABLE, and a full
queue Redis (maxmemory, noeviction) refuses a submit as UNAVAILABLE saying so.
Metrics: async_jobs_submitted_total{model, target} (jobs queued),
async_jobs_deduplicated_total{model, target} (submits answered by an idempotency key's job).
The result model owns its namespace's queue gauges (one result model per namespace;
pattern_kernel.queue_metrics), read from Redis every metrics_interval_s (0: none)
by a daemon thread stopped in finalize:
async_queue_depth{model, namespace, state="waiting"|"pending"|"dead"},
async_oldest_job_age_seconds{model, namespace}, async_queue_workers{model, namespace} and
async_queue_up{model, namespace} (0 while Redis cannot be read: the others keep their last values).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import numpy as np
import redis
import triton_python_backend_utils as pb_utils

from pattern_kernel.batching import request_batch_size
from pattern_kernel.errors import InputError, StepError
from pattern_kernel.job_queue import (
    UNKNOWN,
    JobState,
    Submission,
    Submitted,
    check_idempotency_key,
    check_job_inputs,
    missing_job,
    queue_for,
)
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.queue_metrics import QueuePoller, QueueStats, read_stats
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


def job_ids(array: np.ndarray) -> list[str]:
    """JOB_ID's elements as text: at least one, none empty, UTF-8 (InputError naming JOB_ID)."""
    ids = utf8_values("JOB_ID", array)
    if not ids:
        raise InputError("JOB_ID", "expected at least one job id, got none")
    empty = [i for i, job_id in enumerate(ids) if not job_id]
    if empty:
        raise InputError("JOB_ID", f"element {empty[0]} is empty: expected a job id")
    return ids


def job_answers(ids: list[str], states: list[JobState | None], reason: Callable[[str], str]) -> dict[str, np.ndarray]:
    """STATUS and RESULT, one per id in order; an id without a job is `unknown`, its error
    `reason(job_id)`."""
    answers = [state.as_json() if state is not None else {"job_id": job_id, "status": UNKNOWN, "error": reason(job_id)}
               for job_id, state in zip(ids, states, strict=True)]
    return {"STATUS": np.array([a["status"].encode() for a in answers], dtype=object),
            "RESULT": np.array([json.dumps(a).encode() for a in answers], dtype=object)}


class TritonPythonModel(PatternModel):

    def setup(self, args):
        self.queue = queue_for(self.params)
        if self.params["mode"] == "submit":
            self.handle_batch = self._submit
            self.targets = parse_targets(self.required("targets"))
            self.submitted = self.metrics("async_jobs_submitted_total", "Jobs accepted by an async submit model, "
                                                                        "by target")
            self.deduplicated = self.metrics("async_jobs_deduplicated_total",
                                             "Submits answered with the job of their idempotency key, by target")
            for model, _ in self.targets:
                self.submitted.metric(target=model)
                self.deduplicated.metric(target=model)
        else:
            self.handle = self._result
        self.poller = None
        if self.params["mode"] == "result" and self.params["metrics_interval_s"] > 0:
            self._start_queue_gauges()

    def _submit(self, items) -> list:
        """The jobs of a dynamic batch, checked one by one, queued in one Redis round trip."""
        answers: list = [None] * len(items)
        jobs, places = [], []
        for place, (request, inputs) in enumerate(items):
            try:
                check_job_inputs(inputs, self.params["max_rows"])
                parameters = json.loads(request.parameters() or "{}")
                model, version = pick_target(self.targets, parameters.get("target"))
                key = parameters.get("idempotency_key")
                jobs.append(Submission(model, version, inputs, self.config.name,
                                       "" if key is None else check_idempotency_key(key)))
                places.append(place)
            except InputError as exc:
                answers[place] = exc
        try:
            submitted = self.queue.submit_many(jobs) if jobs else []
        except redis.RedisError as exc:
            problem = ("the job queue is full (its Redis reached maxmemory; nothing accepted is evicted): job not "
                       "accepted, retry later" if isinstance(exc, redis.exceptions.OutOfMemoryError)
                       else f"the job queue (Redis) is unavailable: {exc}")
            submitted = [StepError("enqueue", job.model, job.version, problem) for job in jobs]
        counts: Counter = Counter()
        for place, job, outcome in zip(places, jobs, submitted, strict=True):
            if isinstance(outcome, Submitted):
                counts[outcome.created, job.model] += 1
                job_id = np.array([outcome.job_id.encode()], dtype=object)
                outcome = {"JOB_ID": np.tile(job_id, (request_batch_size(job.inputs), 1))
                           if self.config.batching else job_id}
            answers[place] = outcome
        for (created, target), count in counts.items():  # a metric update is a call into Triton: once per batch
            (self.submitted if created else self.deduplicated).increment(count, target=target)
        return answers

    def _result(self, request, inputs):
        ids = job_ids(inputs["JOB_ID"])
        try:
            states = self.queue.states(ids)
        except redis.RedisError as exc:
            raise StepError("lookup", "redis", None, f"the job store (Redis) is unavailable: {exc}") from None
        return job_answers(ids, states, lambda job_id: missing_job(job_id, self.queue.ttl))

    # -- the namespace's queue gauges (result mode)

    def _start_queue_gauges(self):
        namespace = self.queue.namespace
        self.depth_gauges = self.metrics("async_queue_depth", "Jobs of an async namespace by state: waiting (not "
                                         "yet taken), pending (taken, not ended), dead (dead letters)",
                                         kind="gauge", namespace=namespace)
        self.age_gauge = self.metrics("async_oldest_job_age_seconds", "Age of the oldest job not yet ended "
                                      "(0: none)", kind="gauge", namespace=namespace)
        self.workers_gauge = self.metrics("async_queue_workers", "Workers Redis has seen within the last minute",
                                          kind="gauge", namespace=namespace)
        self.up_gauge = self.metrics("async_queue_up", "1 when the last read of the queue from Redis worked",
                                     kind="gauge", namespace=namespace)
        for state in QueueStats(0, 0, 0, 0.0, 0).depths():
            self.depth_gauges.metric(state=state)
        for gauge in (self.age_gauge, self.workers_gauge, self.up_gauge):
            gauge.metric()
        self.poller = QueuePoller(lambda: read_stats(self.queue), self._publish_queue_stats,
                                  self.params["metrics_interval_s"], pb_utils.Logger.log_warn,
                                  name=f"{self.config.name}-queue-metrics").start()

    def _publish_queue_stats(self, stats: QueueStats | None):
        """Redis down (None): async_queue_up 0, the other gauges keep their last values."""
        self.up_gauge.set(0 if stats is None else 1)
        if stats is None:
            return
        for state, jobs in stats.depths().items():
            self.depth_gauges.set(jobs, state=state)
        self.age_gauge.set(stats.oldest_age_s)
        self.workers_gauge.set(stats.workers)

    def finalize(self):
        if self.poller is not None:
            self.poller.stop()
