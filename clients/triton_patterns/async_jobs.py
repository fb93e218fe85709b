"""SDK side of the asynchronous and time-difference patterns (used by `PatternClient.submit`,
`result`, `wait` and `time_difference_stream`).

`JobResult` is a job's state as the `async_result` model returns it, with the class name and
scores of its first row. `wait_for_end` waits for a job's notification on its Redis pub/sub
channel (no polling) until a deadline, then reads the result once; without a Redis URL it
polls the result model with a growing interval instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from triton_patterns.contract import ENDED, REDIS_URL_ENV, JobState, state_from_json

RESULT_MODEL = "async_result"


@dataclass
class JobResult(JobState):
    labels: list[str] = field(default_factory=list, repr=False)

    @property
    def finished(self) -> bool:
        """done or failed: nothing more will happen to this job."""
        return self.status in ENDED

    @property
    def class_id(self) -> int | None:
        """The first row's class index: CLASS_ID, else an integer LABEL (None without either)."""
        for name in ("CLASS_ID", "LABEL"):
            ids = np.asarray(self.outputs.get(name, []))
            if ids.size and ids.dtype.kind in "iu":
                return int(ids.reshape(-1)[0])
        return None

    @property
    def label(self) -> str | None:
        """The first row's class name (from the target's or the submitting model's `labels`)."""
        cid = self.class_id
        if cid is None:
            return None
        return self.labels[cid] if cid < len(self.labels) else str(cid)

    @property
    def scores(self) -> np.ndarray | None:
        scores = self.outputs.get("PROBABILITIES")
        return None if scores is None else np.asarray(scores).reshape(len(scores), -1)[0]

    def as_dict(self) -> dict:
        short = {k: v for k, v in self.as_json().items() if k not in ("outputs", "created", "requested_version")}
        if self.label is not None:
            short["label"] = self.label
            short["scores"] = [round(float(s), 4) for s in self.scores] if self.scores is not None else None
        return short


def label_models(raw_json: bytes | str) -> list[str]:
    """The models whose `labels` name a job's classes: its target, else the submitting model."""
    state = state_from_json(json.loads(raw_json))
    return [m for m in (state.model, state.submitted_by) if m]


def job_result(raw_json: bytes | str, labels_of: Callable[[str], list[str]]) -> JobResult:
    state = state_from_json(json.loads(raw_json))
    labels = next((found for found in map(labels_of, label_models(raw_json)) if found), [])
    return JobResult(**vars(state), labels=labels)


def redis_url_or_env(redis_url: str | None) -> str | None:
    return redis_url or os.environ.get(REDIS_URL_ENV) or None


def wait_for_end(
    job_id: str,
    read: Callable[[], JobResult],
    timeout_s: float,
    redis_url: str | None,
    namespace: str = "async",
) -> JobResult:
    """Subscribe to the job's channel, read once (it may have ended already), wait for the
    notification until the deadline, read again. Returns the last read, finished or not."""
    deadline = time.monotonic() + timeout_s
    url = redis_url_or_env(redis_url)
    if url is None:
        return _poll(read, deadline)
    import redis

    client = redis.Redis.from_url(url, socket_timeout=max(timeout_s, 1) + 5)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(f"{namespace}:job:{job_id}")
        result = read()
        while not result.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if pubsub.get_message(timeout=remaining) is not None:
                result = read()
        return result
    finally:
        pubsub.close()
        client.close()


def _poll(read: Callable[[], JobResult], deadline: float) -> JobResult:
    interval = 0.05
    result = read()
    while not result.finished and time.monotonic() < deadline:
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 2, 1.0)
        result = read()
    return result
