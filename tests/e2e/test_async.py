"""End-to-end: the asynchronous and time-difference patterns against the session's tritonserver
and Redis, with workers as real processes (started here, stopped by pid); the time-difference
stream also through the container stack's gRPC TLS gateway (`container`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pattern_jobs.async_worker import worker_command
from pattern_kernel.job_queue import GROUP, JobQueue
from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime import paths
from pattern_runtime.launcher import TritonServer
from pattern_runtime.processes import ManagedProcess, wait_for
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.server_settings import ServerSettings
from pattern_tools import monitoring
from triton_patterns.client import PatternError

pytestmark = pytest.mark.e2e

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3], [6.0, 2.7, 5.1, 1.6]]


@pytest.fixture
def queue(redis_server):
    """The models' queue (namespace "async"), emptied before each test."""
    q = JobQueue(redis_server.client(), "async")
    q.redis.delete(q.stream, q.dead)
    q.ensure_group()
    return q


@pytest.fixture
def start_worker(triton, redis_server, tmp_path):
    """Start one worker process (`--processes 1`); every worker started is stopped by pid after."""
    started: list[ManagedProcess] = []

    def start(name: str, prefetch: int = 1, idle_ms: int = 1000) -> ManagedProcess:
        proc = ManagedProcess(worker_command(
            name, triton.grpc_url, redis_server.url, "--idle-timeout-ms", str(idle_ms),
            "--max-attempts", "3", "--prefetch", str(prefetch), "--block-ms", "200",
        ), tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate(timeout=15)


def _started(queue, *names: str) -> None:
    assert wait_for(lambda: set(names) <= queue.consumers(), timeout=30, interval=0.1), f"workers {names} never started"


def test_jobs_complete_with_the_models_answers(client, queue, start_worker):
    for name in ("w1", "w2"):
        start_worker(name, idle_ms=5000)
    jobs = [(row, version, client.submit(row, target=f"iris:{version}")) for row in ROWS for version in (1, 2)]
    batch_job = client.submit(ROWS)  # one job, four rows, the default target (iris v2)
    text = "The goalkeeper saved a penalty in the last minute of the cup final."
    text_job = client.submit(text, model="text_async_submit")
    for row, version, job_id in jobs:
        result = client.wait(job_id, timeout_s=30)
        expected = client.synchronous(row, version=version)
        assert (result.status, result.model, result.model_version) == ("done", "iris", str(version))
        assert result.label == expected.label and np.allclose(result.scores, expected.scores, atol=1e-6)
        assert result.completions == 1 and result.error == ""
        assert set(result.timings) == {"queue_ms", "infer_ms", "total_ms"}
    rows = client.wait(batch_job, timeout_s=30)
    assert rows.outputs["PROBABILITIES"].shape == (4, 3)
    assert list(rows.outputs["LABEL"].reshape(-1)) == [client.synchronous(r).class_id for r in ROWS]
    topic = client.wait(text_job, timeout_s=30)
    assert (topic.status, topic.model, topic.label) == ("done", "text_classify", client.serial(text).label)
    assert queue.depth() == {"stream": 0, "pending": 0, "dead": 0}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_asyncio_client_submits_and_waits_without_blocking_its_loop(client, queue, start_worker,
                                                                   async_client_factory, redis_server, protocol):
    start_worker("w1", idle_ms=5000)
    expected = [client.synchronous(row).label for row in ROWS]

    async def run():
        ticks = 0

        async def ticker():  # the loop keeps running while wait() waits on Redis
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with async_client_factory(protocol) as aclient:
            job_ids = await asyncio.gather(*(aclient.submit(row) for row in ROWS))
            beat = asyncio.ensure_future(ticker())
            results = await asyncio.gather(*(aclient.wait(j, timeout_s=30, redis_url=redis_server.url)
                                             for j in job_ids))
            beat.cancel()
            first = await aclient.result(job_ids[0])
        return results, first, ticks

    results, first, ticks = asyncio.run(run())
    assert [r.status for r in results] == ["done"] * len(ROWS)
    assert [r.label for r in results] == expected and first.label == expected[0]
    assert all(r.completions == 1 for r in results)
    assert ticks > 0


def test_bad_jobs_are_refused_at_submission(client):
    with pytest.raises(PatternError, match="FEATURES.*finite"):
        client.submit([float("nan"), 3.0, 5.2, 2.3])
    with pytest.raises(PatternError, match="'target'.*heavy_mlp"):
        client.submit(ROWS[0], target="heavy_mlp")
    with pytest.raises(PatternError, match="JOB_ID.*no job 'nope'"):
        client.result("nope")


def _result_request(triton, protocol: str, ids: list[bytes]):
    """async_result over one protocol: (STATUS, RESULT as dicts) or the InferenceServerException."""
    lib = httpclient if protocol == "http" else grpcclient
    tensor = lib.InferInput("JOB_ID", [len(ids)], "BYTES")
    tensor.set_data_from_numpy(np.array(ids, dtype=object))
    with lib.InferenceServerClient(triton.http_url if protocol == "http" else triton.grpc_url) as c:
        result = c.infer("async_result", [tensor])
    return [s.decode() for s in result.as_numpy("STATUS")], [json.loads(r) for r in result.as_numpy("RESULT")]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_batch_of_ids_gets_an_answer_per_id_an_unknown_one_unknown(triton, queue, protocol):
    first, second = (queue.submit("iris", 2, {"FEATURES": np.array([row], dtype=np.float32)}) for row in ROWS[:2])
    statuses, results = _result_request(triton, protocol, [first.encode(), b"no-such-job", second.encode()])
    assert statuses == ["queued", "unknown", "queued"]
    assert [r["job_id"] for r in results] == [first, "no-such-job", second]
    assert results[1]["error"].startswith("no job 'no-such-job'")  # and why (pattern_kernel.job_queue.missing_job)
    assert results[0]["model"] == "iris" and results[0]["error"] == ""
    for ids, problem in (([first.encode(), b""], "input 'JOB_ID': element 1 is empty"),
                         ([b"\xff\xfe"], "input 'JOB_ID': is not valid UTF-8 text"),
                         ([], "input 'JOB_ID': expected at least one job id")):
        with pytest.raises(InferenceServerException, match=problem):
            _result_request(triton, protocol, ids)


def test_a_worker_killed_holding_jobs_loses_none_and_none_completes_twice(client, queue, start_worker):
    slow = [client.submit(row, target="iris_slow") for row in ROWS[:2]]  # first: killed mid-call
    fast = [client.submit(row) for row in ROWS * 2]
    victim = start_worker("victim", prefetch=len(slow) + len(fast), idle_ms=1000)
    in_hand = lambda: len(queue.redis.xpending_range(queue.stream, GROUP, "-", "+", 100, consumername="victim"))  # noqa: E731
    assert wait_for(lambda: in_hand() == 10 and client.result(slow[0]).status == "running", timeout=30, interval=0.05)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    for name in ("rescuer1", "rescuer2"):
        start_worker(name, idle_ms=1000)
    expected = [*zip(slow, ROWS[:2], ["iris_slow"] * 2, strict=True), *zip(fast, ROWS * 2, ["iris"] * 8, strict=True)]
    for job_id, row, target in expected:
        result = client.wait(job_id, timeout_s=30)
        assert result.status == "done" and result.model == target, result
        assert result.completions == 1, "a job ends exactly once in the result store"
        # taken over from the dead worker (a third delivery only if a rescuer stalled past the idle timeout)
        assert result.attempts >= 2 and result.worker.startswith("rescuer")
        assert result.label == client.synchronous(row, version=2).label
    assert queue.depth() == {"stream": 0, "pending": 0, "dead": 0}


def test_a_poison_job_ends_in_the_dead_letter_stream_with_its_error(client, queue, start_worker):
    start_worker("w1", idle_ms=300)
    job_id = client.submit(ROWS[0], target="iris_failing")
    result = client.wait(job_id, timeout_s=30)
    assert (result.status, result.attempts, result.completions) == ("failed", 3, 1)
    assert "injected failure" in result.error
    [letter] = queue.dead_letters()
    assert (letter["job_id"], letter["model"], letter["attempts"]) == (job_id, "iris_failing", "3")
    assert letter["error"] == result.error
    assert np.allclose(letter["inputs"]["FEATURES"], [ROWS[0]])
    assert queue.depth()["stream"] == 0


def test_sigterm_lets_a_worker_finish_the_job_in_hand(client, queue, start_worker):
    worker = start_worker("graceful")
    _started(queue, "graceful")
    job_id = client.submit(ROWS[2], target="iris_slow")
    assert wait_for(lambda: client.result(job_id).status == "running", timeout=30, interval=0.05)
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    result = client.result(job_id)
    assert (result.status, result.worker, result.attempts) == ("done", "graceful", 1)


def test_time_difference_answers_fast_then_the_slow_answer_arrives(client, queue, start_worker):
    start_worker("w1")
    row = ROWS[3]
    fast = client.time_difference(row)
    assert client.result(fast.job_id).status in ("queued", "running"), "the slow model (1.5 s) is not done yet"
    assert (fast.model, fast.label) == ("iris_time_difference", client.synchronous(row, version=1).label)
    slow = client.wait(fast.job_id, timeout_s=30)
    assert (slow.status, slow.model, slow.submitted_by) == ("done", "iris_slow", "iris_time_difference")
    assert np.allclose(slow.scores, client.synchronous(row, version=2).scores, atol=1e-6)


@pytest.mark.container
def test_time_difference_stream_sends_fast_then_slow_on_one_grpc_stream(grpc_client):
    fast, slow = grpc_client.time_difference_stream(ROWS[3])
    assert [np.asarray(p.outputs["STAGE"]).reshape(-1)[0] for p in (fast, slow)] == [b"fast", b"slow"]
    assert np.allclose(fast.scores, grpc_client.synchronous(ROWS[3], version=1).scores, atol=1e-6)
    assert np.allclose(slow.scores, grpc_client.synchronous(ROWS[3], version=2).scores, atol=1e-6)


def test_native_async_infer_on_http_and_grpc(triton, client):
    """Triton's own asynchronous calls (no queue): the answer comes back on the same connection."""
    expected = [client.synchronous(row, version=2).class_id for row in ROWS]

    http = httpclient.InferenceServerClient(triton.http_url, concurrency=4)
    pending = []
    for row in ROWS:
        tensor = httpclient.InferInput("FEATURES", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([row], dtype=np.float32))
        pending.append(http.async_infer("iris", [tensor], model_version="2"))
    assert [int(p.get_result().as_numpy("LABEL").reshape(-1)[0]) for p in pending] == expected
    http.close()

    grpc = grpcclient.InferenceServerClient(triton.grpc_url)
    answers, done = {}, threading.Semaphore(0)

    def callback(index, result, error):
        answers[index] = error or int(result.as_numpy("LABEL").reshape(-1)[0])
        done.release()

    for i, row in enumerate(ROWS):
        tensor = grpcclient.InferInput("FEATURES", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([row], dtype=np.float32))
        grpc.async_infer("iris", [tensor], lambda result, error, i=i: callback(i, result, error), model_version="2")
    for _ in ROWS:
        assert done.acquire(timeout=30)
    assert [answers[i] for i in range(len(ROWS))] == expected
    grpc.close()


# --------------------------------------------------------------------------- batched workers, idempotency


def _inference_requests(triton, model: str) -> int:
    """Requests the model has answered (error responses of Python models count too: server #8521)."""
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        [stats] = c.get_inference_statistics(model, as_json=True)["model_stats"]
    return int(stats["inference_stats"]["success"].get("count", 0))


def test_a_poison_row_in_a_batch_fails_only_its_own_job(triton, client, queue, start_worker):
    rows = [ROWS[i % len(ROWS)] for i in range(20)]
    poison = 13
    rows[poison] = [5.1, 3.5, 99.0, 0.2]  # petal length above iris_web_single's range: its request is refused
    ids = [client.submit(row, target="iris_web_single") for row in rows]
    before = _inference_requests(triton, "iris_web_single")
    start_worker("batcher", prefetch=32, idle_ms=5000)  # reads the 20 jobs as one batch
    results = [client.wait(job_id, timeout_s=30) for job_id in ids]
    requests_sent = _inference_requests(triton, "iris_web_single") - before

    assert [r.status for r in results] == ["done"] * poison + ["failed"] + ["done"] * (len(rows) - poison - 1)
    bad = results[poison]
    assert (bad.attempts, bad.completions) == (1, 1) and "petal_length" in bad.error, bad
    [letter] = queue.dead_letters()
    assert letter["job_id"] == ids[poison] and np.allclose(letter["inputs"]["FEATURES"], [rows[poison]])
    for row, result in zip(rows, results, strict=True):
        if result.status == "done":
            expected = client.predict("web_single", row)[0]
            assert result.completions == 1 and (result.class_id, result.label) == (expected.class_id, expected.label)
    assert all(r.batch_jobs == len(rows) for r in results), "the 20 jobs went to the model as one batch"
    # the batch, then halves until the poison row's job was alone: 20 -> 10 + 10 -> the failing 10's
    # 5 + 5 -> the failing 5's 2 + 3 -> 1 + 2 -> 1 + 1: 11 requests instead of 20
    assert requests_sent == 11, requests_sent
    assert queue.depth() == {"stream": 0, "pending": 0, "dead": 1}


def test_a_worker_killed_holding_a_batch_loses_none_and_none_completes_twice(client, queue, start_worker):
    ids = [client.submit(row, target="iris_slow") for row in ROWS * 3]  # one 12-row request, 1.5 s
    victim = start_worker("victim", prefetch=32, idle_ms=1000)
    running = lambda: [client.result(j) for j in ids]  # noqa: E731
    assert wait_for(lambda: all(r.status == "running" and r.batch_jobs == len(ids) for r in running()),
                    timeout=30, interval=0.05), "the worker never started the 12 jobs as one batch"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    start_worker("rescuer", prefetch=32, idle_ms=1000)
    for job_id, row in zip(ids, ROWS * 3, strict=True):
        result = client.wait(job_id, timeout_s=30)
        assert (result.status, result.completions, result.worker) == ("done", 1, "rescuer"), result
        assert result.attempts >= 2 and result.label == client.synchronous(row, version=2).label
    assert queue.depth() == {"stream": 0, "pending": 0, "dead": 0}


def test_an_idempotency_key_makes_a_retried_submit_return_the_first_job(triton, client, queue, start_worker):
    import uuid

    import requests

    key = f"order-{uuid.uuid4().hex}"
    first = client.submit(ROWS[0], idempotency_key=key)
    assert client.submit(ROWS[0], idempotency_key=key) == first  # a client's retry after a timeout
    body = {"parameters": {"idempotency_key": key},  # the same over plain KServe v2 HTTP (curl)
            "inputs": [{"name": "FEATURES", "datatype": "FP32", "shape": [1, 4], "data": ROWS[0]}]}
    answer = requests.post(f"http://{triton.http_url}/v2/models/iris_async_submit/infer", json=body, timeout=30)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [first]
    cli = subprocess.run([sys.executable, "-m", "pattern_tools.cli", "submit", ",".join(map(str, ROWS[0])),
                          "--url", triton.http_url, "--idempotency-key", key],
                         capture_output=True, text=True, timeout=60)
    assert (cli.returncode, cli.stdout.strip()) == (0, first), cli.stderr
    assert queue.depth()["stream"] == 1, "the retries queued nothing"

    other = client.submit(ROWS[0], idempotency_key=f"{key}-2")
    assert other != first
    with pytest.raises(PatternError, match="idempotency_key.*another request.*" + first):
        client.submit(ROWS[1], idempotency_key=key)  # same key, other inputs: refused, not silently merged
    with pytest.raises(PatternError, match="idempotency_key.*printable"):
        client.submit(ROWS[0], idempotency_key="two words")

    start_worker("w1", idle_ms=5000)
    results = {job_id: client.wait(job_id, timeout_s=30) for job_id in (first, other)}
    assert all((r.status, r.completions) == ("done", 1) for r in results.values())
    assert client.submit(ROWS[0], idempotency_key=key) == first, "still the first job after it ended"
    assert queue.depth() == {"stream": 0, "pending": 0, "dead": 0}


# --------------------------------------------------------------------------- queue gauges on Triton's /metrics


def _queue_gauges(triton) -> dict[str, float | None]:
    """The async namespace's gauges on Triton's /metrics (exported by async_result)."""
    samples = monitoring.scrape(triton.metrics_url)
    of = {"model": "async_result", "namespace": "async"}
    gauges = {state: monitoring.value(samples, "async_queue_depth", state=state, **of)
              for state in ("waiting", "pending", "dead")}
    for key, name in (("age", "async_oldest_job_age_seconds"), ("workers", "async_queue_workers"),
                      ("up", "async_queue_up")):
        gauges[key] = monitoring.value(samples, name, **of)
    return gauges


def test_queue_depth_and_oldest_job_age_are_on_tritons_metrics(triton, client, queue, start_worker):
    jobs = [client.submit(row) for row in ROWS] + [client.submit(ROWS[0], target="iris_failing")]
    seen: list = [None]

    def gauges_show(**expected) -> bool:
        seen[0] = _queue_gauges(triton)
        return all(seen[0][k] == v for k, v in expected.items())

    # no worker: every job waits and the oldest one ages
    assert wait_for(lambda: gauges_show(waiting=5, pending=0, dead=0, workers=0, up=1), 30, interval=0.5), seen[0]
    first_age = seen[0]["age"]
    assert first_age > 0
    assert wait_for(lambda: gauges_show(waiting=5) and seen[0]["age"] >= first_age + 2, 30, interval=0.5), seen[0]
    start_worker("w1", idle_ms=300)
    for job_id in jobs:
        client.wait(job_id, timeout_s=30)
    # drained: nothing waits or is in hand, the poison job is a dead letter, the worker is seen
    assert wait_for(lambda: gauges_show(waiting=0, pending=0, dead=1, age=0, workers=1, up=1), 30, interval=0.5), \
        seen[0]


@pytest.fixture(scope="module")
def fast_gauges(tmp_path_factory):
    """async_result alone on a tritonserver and a Redis of their own, its gauges read every 2 ms."""
    folder = tmp_path_factory.mktemp("fast_gauges")
    shutil.copytree(paths.MODEL_REPOSITORY / "async_result", folder / "models" / "async_result")
    config = folder / "models" / "async_result" / "config.pbtxt"
    config.write_text(config.read_text()
                      + 'parameters { key: "metrics_interval_s", value: { string_value: "0.002" } }\n')
    redis_server = RedisServer(directory=folder / "redis").start()
    try:
        with TritonServer(ServerSettings(model_repository=folder / "models", load_models=["async_result"],
                          env={REDIS_URL_ENV: redis_server.url}, log_dir=folder / "logs")) as server:
            yield server, redis_server
    finally:
        redis_server.stop()


def test_gauges_set_off_the_request_thread_while_requests_fail_do_not_crash_the_server(fast_gauges):
    """The poller sets the gauges on its own thread while each failing request counts itself on
    execute's thread (the router saw the 2.51 server crash from metric updates off the event loop):
    here the gauges every 2 ms against four clients of job ids that are not UTF-8 for 15 s."""
    server, _ = fast_gauges
    failed, unexpected = [0] * 4, []
    deadline = time.monotonic() + 15

    def unknown_ids(index: int) -> None:
        job = httpclient.InferInput("JOB_ID", [1], "BYTES")
        job.set_data_from_numpy(np.array([b"\xff not utf-8"], dtype=object))
        with httpclient.InferenceServerClient(server.http_url) as c:
            while time.monotonic() < deadline:
                try:
                    c.infer("async_result", [job])
                    unexpected.append("answered")
                except InferenceServerException as exc:
                    if "input 'JOB_ID': is not valid UTF-8 text" not in str(exc):
                        unexpected.append(str(exc))
                        return
                    failed[index] += 1

    clients = [threading.Thread(target=unknown_ids, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    samples = monitoring.scrape(server.metrics_url)
    assert unexpected == [] and server.deaths == [] and server.is_ready()
    counted = monitoring.value(samples, "pattern_request_failures_total", model="async_result", reason="client_error")
    assert counted == sum(failed) > 1000
    assert monitoring.value(samples, "async_queue_up", model="async_result") == 1


def test_redis_down_the_gauges_keep_their_values_with_up_0_and_the_poller_recovers(fast_gauges):
    server, redis_server = fast_gauges
    queue = JobQueue(redis_server.client(), "async")
    for row in ROWS[:2]:
        queue.submit("iris", 2, {"FEATURES": np.array([row], dtype=np.float32)})
    seen: list = [None]

    def gauges_show(**expected) -> bool:
        seen[0] = _queue_gauges(server)
        return all(seen[0][k] == v for k, v in expected.items())

    # the age has millisecond resolution: a poll within 1 ms of the first submit reads 0, so wait
    # for one that reads more (later ones only grow: the jobs stay) before Redis goes away
    assert wait_for(lambda: gauges_show(waiting=2, up=1) and seen[0]["age"] > 0, 15, interval=0.1), seen[0]
    redis_server.stop()
    assert wait_for(lambda: gauges_show(up=0), 15, interval=0.1), seen[0]
    down = seen[0]
    assert down["waiting"] == 2 and down["age"] > 0
    time.sleep(0.5)  # some 250 failed reads later: the same values
    assert gauges_show(**down), seen[0]
    redis_server.start()  # a new, empty Redis on the same port
    assert wait_for(lambda: gauges_show(waiting=0, pending=0, dead=0, age=0, workers=0, up=1), 15, interval=0.1), \
        seen[0]
