"""Faults: Redis killed and restarted while asynchronous jobs and prediction-cache
traffic are in flight. Every job the server accepted (it returned a job id) completes exactly
once, none is lost; the cache keeps answering from the model while Redis is down (degraded, no
errors) and serves hits again once Redis is back. Own Redis (append-only file, fsync always, so
a kill loses nothing acknowledged) and own tritonserver with only the models involved."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import redis as redis_py
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pattern_kernel.job_queue import JobQueue
from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime.datasets import iris as iris_export
from pattern_runtime.launcher import TritonServer
from pattern_runtime.processes import wait_for
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.server_settings import ServerSettings
from pattern_tools.demo import async_workers
from triton_patterns.client import PatternClient, PatternError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    redis_server = RedisServer(directory=folder / "redis", persistence=True,
                               extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    try:
        with TritonServer(ServerSettings(load_models=["iris", "iris_async_submit", "async_result", "iris_cached_v2"],
                          env={REDIS_URL_ENV: redis_server.url}, log_dir=folder / "logs")) as server:
            yield server, redis_server
    finally:
        redis_server.stop()


def _reference_labels(rows: np.ndarray) -> list[int]:
    import onnxruntime as ort

    from pattern_runtime import paths

    session = ort.InferenceSession(str(paths.MODEL_REPOSITORY / "iris/2/model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return [int(x) for x in session.run(["LABEL"], {"FEATURES": rows})[0].reshape(-1)]


def test_redis_killed_and_restarted_under_async_and_cache_traffic(stack):
    server, redis_server = stack
    rows = np.tile(iris_export.load_split()[1].astype(np.float32), (4, 1))[:120]
    expected = _reference_labels(rows)
    accepted: dict[str, int] = {}  # job id -> row index
    refused: list[str] = []
    cache_answers: list[tuple[bool, bool]] = []  # (label correct, cache hit)
    cache_errors: list[str] = []
    stop = threading.Event()

    def submitter():
        with PatternClient(server.http_url) as client:
            for i, row in enumerate(rows):
                try:
                    accepted[client.submit(row)] = i
                except PatternError as exc:  # Redis down: the submit is refused, clearly, not lost
                    refused.append(str(exc))
                time.sleep(0.03)

    def cache_traffic():
        with PatternClient(server.http_url) as client:
            row = rows[0]
            while not stop.is_set():
                tensor = httpclient.InferInput("FEATURES", [1, 4], "FP32")
                tensor.set_data_from_numpy(row.reshape(1, 4))
                try:
                    result = client.client.infer("iris_cached_v2", [tensor])
                    cache_answers.append((int(result.as_numpy("LABEL")[0, 0]) == expected[0],
                                          bool(result.as_numpy("CACHE_HIT")[0, 0])))
                except InferenceServerException as exc:
                    cache_errors.append(exc.message())
                time.sleep(0.02)

    with async_workers(server.grpc_url, redis_server.url, count=2):
        threads = [threading.Thread(target=submitter), threading.Thread(target=cache_traffic)]
        for t in threads:
            t.start()
        time.sleep(1.2)
        os.kill(redis_server.pid, signal.SIGKILL)  # Redis dies with jobs queued and in flight
        redis_server.stop()
        during = len(cache_answers)
        time.sleep(1.0)
        answered_while_down = len(cache_answers) - during
        redis_server.start()  # same port, same folder: the append-only file is replayed
        threads[0].join(timeout=60)

        queue = JobQueue(redis_py.Redis.from_url(redis_server.url), "async")

        def all_ended() -> bool:
            return all(s is not None and s.status in ("done", "failed") for s in queue.states(list(accepted)))

        assert wait_for(all_ended, 90, interval=0.5), "accepted jobs did not all end after Redis came back"
        stop.set()
        threads[1].join(timeout=10)

    states = dict(zip(accepted, queue.states(list(accepted)), strict=True))
    print(f"\nfaults: {len(accepted)} jobs accepted, {len(refused)} submits refused while Redis was down; "
          f"{len(cache_answers)} cache answers ({answered_while_down} while down), {len(cache_errors)} errors")
    assert len(accepted) >= 60, f"most submits were accepted ({len(accepted)} accepted, {len(refused)} refused)"
    assert all(s.status == "done" for s in states.values()), {j: (s.status, s.error) for j, s in states.items()
                                                             if s.status != "done"}
    assert all(s.completions == 1 for s in states.values()), "every job completed exactly once"
    assert all(int(np.asarray(s.outputs["LABEL"]).reshape(-1)[0]) == expected[accepted[j]] for j, s in states.items())
    # the cache degraded while Redis was down: the model answered, correctly, and nothing failed
    assert cache_errors == []
    assert answered_while_down > 0 and all(correct for correct, _ in cache_answers)
    assert any(hit for _, hit in cache_answers[-10:]), "hits resumed once Redis was back"
