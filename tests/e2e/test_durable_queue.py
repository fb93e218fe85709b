"""Kill it and count: acknowledged async jobs survive what `triton-patterns serve` depends on.

One `triton-patterns serve` subprocess on free ports (its Redis data in the test's folder, only
the models these tests call, a small cache Redis) is shared by the tests, in order. Each test
submits JOBS jobs through the SDK with no worker running, does one thing to the stack (kill -9 of
the queue's redis-server, kill -9 of tritonserver, a restart of serve, cache writes far beyond
the cache Redis' maxmemory), then runs a worker: every job must be there and end `done` exactly
once (`completions`, written by the job's end script). What was measured (jobs kept, seconds
until the part was back) is written to reports/durability.json (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time

import numpy as np
import psutil
import pytest
import redis
import tritonclient.http as httpclient
from test_new_user import Served

from pattern_jobs.async_worker import worker_command
from pattern_kernel.job_queue import JobQueue
from pattern_runtime import paths
from pattern_runtime.processes import ManagedProcess, http_status, wait_for
from triton_patterns.client import PatternClient, PatternError

pytestmark = pytest.mark.e2e

JOBS = 50
MODELS = ("iris", "iris_async_submit", "async_result", "iris_cached_v1")
CACHE_MAXMEMORY_MB = 4
ROW = [6.7, 3.0, 5.2, 2.3]  # virginica


MEASURED: list[dict] = []


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    stack = Served(tmp_path_factory.mktemp("durable"), *[a for m in MODELS for a in ("--load-model", m)],
                   "--cache-maxmemory", f"{CACHE_MAXMEMORY_MB}mb")
    try:
        stack.wait_ready(worker=False)
        yield stack
    finally:
        stack.stop()
        if MEASURED:
            paths.REPORTS.mkdir(exist_ok=True)
            (paths.REPORTS / "durability.json").write_text(json.dumps(MEASURED, indent=1))


def queue_url(served: Served) -> str:
    return f"redis://127.0.0.1:{served.redis}/0"


def _queue(served: Served) -> JobQueue:
    return JobQueue(redis.Redis.from_url(queue_url(served), socket_timeout=5), "async")


def _cache_url(served: Served) -> str:
    match = re.search(r"cache    (redis://\S+)", served.banner())
    assert match, served.banner()
    return match[1]


def _submit(served: Served) -> list[str]:
    with PatternClient(f"127.0.0.1:{served.http}") as client:
        ids = [client.submit(ROW) for _ in range(JOBS)]
    states = _queue(served).states(ids)
    assert [s.status if s else None for s in states] == ["queued"] * JOBS
    return ids


def _complete_exactly_once(served: Served, ids: list[str], tmp_path, fault: str, back_s: float | None) -> None:
    """A worker runs the jobs; each is `done` (virginica) and ended once; the stream is left empty.
    `back_s`: seconds from the fault until the part was back, recorded with the count."""
    queue = _queue(served)
    worker = ManagedProcess(worker_command("after-fault", f"127.0.0.1:{served.grpc}", queue_url(served),
                                           "--block-ms", "200", "--idle-timeout-ms", "2000"), tmp_path / "worker.log")
    try:
        finished = wait_for(lambda: all(s and s.status == "done" for s in queue.states(ids)), 120, interval=0.2)
        states = queue.states(ids)
        assert finished, (f"{sum(bool(s and s.status == 'done') for s in states)} of {JOBS} done; "
                          f"{sum(s is None for s in states)} gone; worker log:\n{worker.log_tail()}")
    finally:
        worker.terminate(timeout=15)
    MEASURED.append({"fault": fault, "jobs": JOBS, "done_once": sum((s.status, s.completions) == ("done", 1)
                                                                     for s in states), "back_s": back_s})
    assert [(s.status, s.completions) for s in states] == [("done", 1)] * JOBS
    assert {int(s.outputs["LABEL"].reshape(-1)[0]) for s in states} == {2}
    assert queue.depth()["stream"] == 0


def _redis_pid(url: str) -> int | None:
    try:
        with contextlib.closing(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)) as client:
            return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None


def _tritonserver_pid(served: Served) -> int | None:
    found = [p.pid for p in psutil.Process(served.proc.pid).children(recursive=True) if _name(p) == "tritonserver"]
    return found[0] if found else None


def _name(process: psutil.Process) -> str | None:
    """The process's name; None once it has ended (the killed server's Python stubs end while the
    children are listed)."""
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return None


def _ready(served: Served) -> bool:
    return all(http_status(f"http://127.0.0.1:{served.http}/v2/models/{m}/ready") == 200 for m in MODELS)


def test_a_killed_queue_redis_is_restarted_on_its_port_with_every_job(served, tmp_path):
    ids = _submit(served)
    pid = _redis_pid(queue_url(served))
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_for(lambda: _redis_pid(queue_url(served)) not in (None, pid), 20, interval=0.05), \
        f"the queue's Redis was not restarted on port {served.redis}:\n{served.banner()[-3000:]}"
    back_s = time.monotonic() - killed
    assert wait_for(lambda: f"redis-server pid {pid} died (killed by SIGKILL)" in served.banner(), 5), \
        served.banner()[-3000:]
    with PatternClient(f"127.0.0.1:{served.http}") as client:
        assert client.result(ids[0]).status == "queued"  # through the models, on the restarted Redis
    _complete_exactly_once(served, ids, tmp_path, "kill -9 of the queue's redis-server", back_s)


def test_a_killed_tritonserver_loses_no_job(served, tmp_path):
    ids = _submit(served)
    pid = _tritonserver_pid(served)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_for(lambda: _tritonserver_pid(served) not in (None, pid) and _ready(served), 180, interval=0.2), \
        served.banner()[-3000:]
    _complete_exactly_once(served, ids, tmp_path, "kill -9 of tritonserver", time.monotonic() - killed)


def test_a_restart_of_serve_loses_no_job(served, tmp_path):
    ids = _submit(served)
    began = time.monotonic()
    served.restart()
    _complete_exactly_once(served, ids, tmp_path, "restart of serve (SIGTERM, the same command)",
                           time.monotonic() - began)


def test_cache_writes_beyond_the_cache_redis_memory_evict_no_job(served, tmp_path):
    ids = _submit(served)
    cache = redis.Redis.from_url(_cache_url(served), socket_timeout=5)
    with contextlib.closing(httpclient.InferenceServerClient(f"127.0.0.1:{served.http}")) as client:
        features = httpclient.InferInput("FEATURES", [1, 4], "FP32")
        features.set_data_from_numpy(np.array([ROW], dtype=np.float32))
        assert client.infer("iris_cached_v1", [features]).as_numpy("LABEL").reshape(-1)[0] == 2  # cached: a write
    assert cache.keys("prediction:*") and not _queue(served).redis.keys("prediction:*")
    value = os.urandom(100_000)
    for i in range(3 * CACHE_MAXMEMORY_MB * 10):  # three times its maxmemory
        cache.set(f"prediction:filler-{i}", value)
    assert int(cache.info("stats")["evicted_keys"]) > 0
    cache.close()
    _complete_exactly_once(served, ids, tmp_path, f"cache writes of 3x the cache Redis' maxmemory "
                                                  f"({CACHE_MAXMEMORY_MB} MB)", None)


def test_a_job_whose_record_is_gone_is_reported_lost(served):
    job_id = _submit(served)[0]
    queue = _queue(served)
    queue.redis.delete(queue.key(job_id))
    with PatternClient(f"127.0.0.1:{served.http}") as client, \
            pytest.raises(PatternError, match=rf"job '{job_id}' was lost: created \d+ s ago, within ttl_seconds"):
        client.result(job_id)
    queue.redis.delete(queue.stream)  # the other jobs of this test are not run


def test_a_full_queue_redis_refuses_a_submit_saying_so(served):
    queue = _queue(served)
    limit = queue.redis.config_get("maxmemory")["maxmemory"]
    queue.redis.config_set("maxmemory", int(queue.redis.info("memory")["used_memory"]) - 100_000)
    try:
        with PatternClient(f"127.0.0.1:{served.http}") as client, \
                pytest.raises(PatternError, match="the job queue is full .*nothing accepted is evicted"):
            client.submit(ROW)
    finally:
        queue.redis.config_set("maxmemory", limit)
    assert queue.depth()["stream"] == 0
