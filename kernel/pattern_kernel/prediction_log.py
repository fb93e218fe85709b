"""Prediction log: one record per request (time, model and version, input summary, output,
latency, fallback) appended to a Redis stream, capped at about `maxlen` records.

Small tensors (at most `max_values` values per row) are logged as their values, so a monitor
job can recompute feature statistics (`pattern_jobs.drift`); larger ones as a summary (shape,
mean, std, min, max). Writing never fails a request: `Writer` counts a Redis error instead.
The serial and parallel backends write their sampled captures (`pattern_kernel.capture`) to
the same kind of stream, as entries with the field kind=capture.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping

import numpy as np

STREAM_PREFIX = "prediction_log:"


def stream_name(model: str) -> str:
    """The default stream of a model's prediction log."""
    return STREAM_PREFIX + model


def summarize(array: np.ndarray, max_values: int = 16):
    """Rows as lists of values when each row is small, else summary statistics."""
    array = np.asarray(array)
    if array.dtype == np.object_:
        flat = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        return {"shape": list(array.shape), "values": [s[:200] for s in flat[:max_values]]}
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    if rows.shape[1] <= max_values:
        return rows.astype(float).round(6).tolist()
    values = array.astype(np.float64)
    return {
        "shape": list(array.shape), "mean": round(float(values.mean()), 6), "std": round(float(values.std()), 6),
        "min": round(float(values.min()), 6), "max": round(float(values.max()), 6),
    }


def record(
    model: str,
    target: str,
    target_version: int,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    latency_ms: float,
    fallback: bool,
    reason: str = "",
    reference: str = "",
    max_values: int = 16,
) -> dict[str, str]:
    """One stream entry (flat string fields; inputs and outputs as JSON). `reference`: the
    model:version whose manifest describes the training data (for the drift job)."""
    return {
        "ts": f"{time.time():.3f}",
        "model": model,
        "target": target,
        "target_version": str(target_version),
        "fallback": "1" if fallback else "0",
        "reason": reason,
        "reference": reference,
        "latency_ms": f"{latency_ms:.2f}",
        "inputs": json.dumps({k: summarize(v, max_values) for k, v in inputs.items()}),
        "outputs": json.dumps({k: summarize(v, max_values) for k, v in outputs.items()}),
    }


def append(client, stream: str, records: Iterable[Mapping[str, str]], maxlen: int) -> int:
    """XADD the records in one round trip (MAXLEN ~ maxlen); returns how many were written.
    Raises redis.RedisError when Redis is unavailable."""
    records = list(records)
    if not records:
        return 0
    pipe = client.pipeline(transaction=False)
    for fields in records:
        pipe.xadd(stream, dict(fields), maxlen=maxlen, approximate=True)
    pipe.execute()
    return len(records)


class Writer:
    """A model's log stream: records added while a batch is answered (`add`) are written in one
    round trip after it (`flush`), each counted by `counter.increment(n, result="written")`, or
    result="error" when Redis is unavailable (the records are then dropped)."""

    def __init__(self, client, stream: str, maxlen: int, counter):
        self.client, self.stream, self.maxlen, self.counter = client, stream, maxlen, counter
        self.records: list = []
        for result in ("written", "error"):
            counter.metric(result=result)

    def add(self, fields: Mapping[str, str]) -> None:
        self.records.append(fields)

    def flush(self) -> None:
        import redis  # the kernel's optional extra: only a model that logs needs it

        records, self.records = self.records, []
        if not records:
            return
        try:
            self.counter.increment(append(self.client, self.stream, records, self.maxlen), result="written")
        except redis.RedisError:
            self.counter.increment(len(records), result="error")


def read_recent(client, stream: str, count: int) -> list[dict]:
    """The newest `count` records, oldest first, with inputs/outputs parsed back from JSON."""
    entries = client.xrevrange(stream, count=count)
    out = []
    for entry_id, fields in reversed(entries):
        item = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in fields.items()}
        item["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        for key in ("inputs", "outputs"):
            item[key] = json.loads(item.get(key) or "{}")
        item["fallback"] = item.get("fallback") == "1"
        item["latency_ms"] = float(item.get("latency_ms") or 0)
        out.append(item)
    return out
