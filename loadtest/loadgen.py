"""Closed-loop load generators and their measurements.

Three drivers, one result type (`Point`): tritonclient's gRPC asyncio client (`grpc_load`: N
coroutines, each sending its next request when the previous answered), `wrk` for HTTP JSON
(`wrk_load`, a C generator; percentiles from its own histogram) and in-process onnxruntime
`session.run` (`inprocess_load`, the limit). Each runs a warm-up, then measures for a fixed
duration and records throughput, p50/p90/p99, errors and the load generator's own CPU share
(CPU seconds it used / (wall seconds x cores)). No in-flight request is ever cancelled: the
embedded Triton 2.51 crashes on gRPC cancellation with the response cache (docs/patterns/prediction_cache.md, limits).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import numpy as np

CORES = os.cpu_count() or 1


@dataclass
class Point:
    """One measured point of one setup."""

    setup: str
    concurrency: int
    batch: int = 1
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    rows_per_s: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    loadgen_cpu: float = 0.0  # share of the whole machine (1.0 = every core busy)
    first_error: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "req_per_s": self.req_per_s}


def _percentiles(latencies_s: list[float]) -> tuple[float, float, float]:
    if not latencies_s:
        return float("nan"), float("nan"), float("nan")
    p50, p90, p99 = np.percentile(np.asarray(latencies_s) * 1e3, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def _cpu_share(cpu_s: float, wall_s: float) -> float:
    return cpu_s / (wall_s * CORES) if wall_s > 0 else 0.0


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's finished children (wrk, perf_analyzer)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- asyncio (gRPC)

Call = Callable[[], Awaitable[object]]


async def _closed_loop(call: Call, concurrency: int, seconds: float, record: bool):
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def user() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await call()
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            else:
                if record:
                    latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(user() for _ in range(concurrency)))  # waits for in-flight: no cancel
    return latencies, errors, time.perf_counter() - started, time.process_time() - cpu0


async def async_load(setup: str, call: Call, concurrency: int, seconds: float, warmup: float,
                     batch: int = 1) -> Point:
    """Closed loop of `concurrency` coroutines awaiting `call()` (one request each time)."""
    if warmup > 0:
        await _closed_loop(call, concurrency, warmup, record=False)
    latencies, errors, wall, cpu = await _closed_loop(call, concurrency, seconds, record=True)
    p50, p90, p99 = _percentiles(latencies)
    return Point(setup, concurrency, batch, len(latencies), len(errors), wall, len(latencies) * batch / wall,
                 p50, p90, p99, _cpu_share(cpu, wall), errors[0] if errors else "")


def grpc_load(*args, **kwargs) -> Point:
    """`async_load` from synchronous code (a fresh event loop per point)."""
    return asyncio.run(async_load(*args, **kwargs))


# --------------------------------------------------------------------------- wrk (HTTP JSON)

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("WRK_BODY_FILE"), "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "p50": %f, "p90": %f, "p99": %f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _wrk(url: str, body_file: str, script: str, concurrency: int, seconds: float) -> tuple[dict, float]:
    before = children_cpu_s()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", script, url],
        capture_output=True, text=True, env={**os.environ, "WRK_BODY_FILE": body_file}, timeout=seconds + 60,
    )
    cpu = children_cpu_s() - before
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return json.loads(line[len("WRKJSON "):]), cpu


def wrk_load(setup: str, url: str, body: bytes, concurrency: int, seconds: float, warmup: float,
             batch: int = 1) -> Point:
    """wrk with `concurrency` connections POSTing `body` (JSON) to `url`; one thread (C, cheap)."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script, body_file = os.path.join(tmp, "post.lua"), os.path.join(tmp, "body.json")
        with open(script, "w") as f:
            f.write(_WRK_SCRIPT)
        with open(body_file, "wb") as f:
            f.write(body)
        if warmup > 0:
            _wrk(url, body_file, script, concurrency, warmup)
        stats, cpu = _wrk(url, body_file, script, concurrency, seconds)
    wall = stats["duration_us"] / 1e6
    ok = max(0, stats["requests"] - stats["errors"])
    return Point(setup, concurrency, batch, ok, stats["errors"], wall, ok * batch / wall,
                 stats["p50"] / 1e3, stats["p90"] / 1e3, stats["p99"] / 1e3, _cpu_share(cpu, wall),
                 "non-2xx or socket errors (wrk)" if stats["errors"] else "")


# --------------------------------------------------------------------------- in-process (the limit)


def inprocess_load(setup: str, run: Callable[[], object], batch: int, seconds: float, warmup: float) -> Point:
    """`run()` (one `session.run` of `batch` rows) back to back in this thread."""
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        run()
    latencies = []
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        run()
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    p50, p90, p99 = _percentiles(latencies)
    # the generator *is* the work here: its CPU share is the measured thing, not an overhead
    return Point(setup, 1, batch, len(latencies), 0, wall, len(latencies) * batch / wall, p50, p90, p99, 0.0)
