"""The asynchronous pattern's job logic against a real redis-server: states, exactly-once ends,
reclaim of a dead worker's jobs, retries and the dead-letter stream (Triton is faked)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from pattern_jobs.async_worker import Worker, WorkerSettings
from pattern_kernel.errors import InputError
from pattern_kernel.job_queue import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    JobQueue,
    Submission,
    Submitted,
    check_job_inputs,
    decide,
    state_from_json,
)
from pattern_runtime.redis_server import RedisServer

pytestmark = pytest.mark.e2e  # a missing binary fails with the package to install

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
ANSWER = {"LABEL": np.array([0, 2], dtype=np.int64), "PROBABILITIES": np.eye(3, dtype=np.float32)[[0, 2]]}


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def queue(redis_server):
    client = redis_server.client()
    client.flushdb()
    q = JobQueue(client, "t", ttl_seconds=60)
    q.ensure_group()
    q.ensure_group()  # idempotent
    return q


def test_a_job_goes_queued_running_done_once_and_is_announced(queue):
    pubsub = queue.redis.pubsub()
    job_id = queue.submit("iris", 2, {"FEATURES": ROWS})
    pubsub.subscribe(queue.channel(job_id))
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    assert queue.state(job_id).status == QUEUED and 0 < queue.redis.ttl(queue.key(job_id)) <= 60

    [job] = queue.read("a", count=5, block_ms=10)
    assert (job.job_id, job.model, job.version, job.deliveries) == (job_id, "iris", 2, 1)
    assert np.array_equal(job.inputs["FEATURES"], ROWS)
    assert queue.start(job, "a") and queue.state(job_id).status == RUNNING

    assert queue.complete(job, ANSWER, "2", {"queue_ms": 1.0, "infer_ms": 2.0, "total_ms": 3.0})
    state = queue.state(job_id)
    assert (state.status, state.model_version, state.completions, state.worker) == (DONE, "2", 1, "a")
    assert np.array_equal(state.outputs["PROBABILITIES"], ANSWER["PROBABILITIES"])
    assert state.timings == {"queue_ms": 1.0, "infer_ms": 2.0, "total_ms": 3.0}
    message = pubsub.get_message(timeout=1)
    assert json.loads(message["data"]) == {"job_id": job_id, "status": DONE}
    assert queue.depth() == {"stream": 0, "pending": 0, "dead": 0}  # acknowledged and deleted

    # a duplicate delivery (e.g. a worker thought dead) can neither restart nor re-end it
    assert not queue.start(job, "b")
    assert not queue.complete(job, {"LABEL": np.array([1])}, "1", {})
    assert queue.state(job_id).completions == 1 and queue.state(job_id).model_version == "2"
    roundtrip = state_from_json(json.loads(json.dumps(state.as_json())))
    assert np.array_equal(roundtrip.outputs["LABEL"], ANSWER["LABEL"]) and roundtrip.outputs["LABEL"].dtype == np.int64


def test_jobs_of_a_dead_consumer_are_reclaimed_with_their_delivery_count(queue):
    ids = [queue.submit("iris", -1, {"FEATURES": ROWS[:1]}) for _ in range(3)]
    held = queue.read("dead", count=3, block_ms=10)
    assert [j.job_id for j in held] == ids
    assert queue.reclaim("alive", idle_ms=60_000, count=10) == []  # not idle long enough
    time.sleep(0.06)
    taken = queue.reclaim("alive", idle_ms=50, count=10)
    assert [j.job_id for j in taken] == ids and all(j.deliveries == 2 for j in taken)
    assert queue.redis.xpending(queue.stream, "workers")["consumers"] == [{"name": b"alive", "pending": 3}]


def test_a_live_worker_keeps_its_slow_job(queue):
    queue.submit("iris_slow", 1, {"FEATURES": ROWS[:1]})
    [job] = queue.read("busy", block_ms=10)
    for _ in range(3):
        time.sleep(0.03)
        queue.touch("busy", [job.entry_id])
    assert queue.reclaim("other", idle_ms=50) == []
    assert queue.deliveries(job.entry_id) == 1  # touching does not count as a delivery


def test_a_failed_job_goes_to_the_dead_letter_stream_with_error_and_inputs(queue):
    job_id = queue.submit("iris_failing", 1, {"FEATURES": ROWS})
    [job] = queue.read("a", block_ms=10)
    assert queue.fail(job, "injected failure", attempts=3)
    state = queue.state(job_id)
    assert (state.status, state.error, state.attempts, state.completions) == (FAILED, "injected failure", 3, 1)
    [letter] = queue.dead_letters()
    assert (letter["job_id"], letter["model"], letter["error"], letter["attempts"]) == (
        job_id, "iris_failing", "injected failure", "3")
    assert np.array_equal(letter["inputs"]["FEATURES"], ROWS)
    assert not queue.fail(job, "again") and len(queue.dead_letters()) == 1  # once only


def test_retry_decision():
    assert decide(1, 3, retryable=True) == "retry"
    assert decide(2, 3, retryable=True) == "retry"
    assert decide(3, 3, retryable=True) == "dead"
    assert decide(1, 3, retryable=False) == "dead"


def test_job_inputs_are_checked_before_queueing():
    assert check_job_inputs({"FEATURES": ROWS}, 64) == 2
    with pytest.raises(InputError, match="'FEATURES'.*1 to 1 rows"):
        check_job_inputs({"FEATURES": ROWS}, 1)
    with pytest.raises(InputError, match="'FEATURES'.*finite"):
        check_job_inputs({"FEATURES": np.array([[np.nan, 1, 1, 1]], dtype=np.float32)}, 64)
    with pytest.raises(InputError, match="'TEXT'.*element 1 is empty"):
        check_job_inputs({"TEXT": np.array([[b"rain"], [b""]], dtype=object)}, 64)


# --------------------------------------------------------------------------- the worker's decisions


class FakeWorker(Worker):
    """A Worker whose Triton call is scripted: a list of answers or exceptions, one per attempt."""

    def __init__(self, queue: JobQueue, script, **settings):
        super().__init__(WorkerSettings(redis_url="redis://unused", namespace=queue.namespace, name="fake",
                                        max_attempts=3, **settings))
        self.queue, self.script = queue, list(script)

    def call(self, job, stop):
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step, "2", 1.5


def _failure(status: str) -> InferenceServerException:
    return InferenceServerException(msg="injected failure", status=status)


def _attempt(queue, worker, idle_s=0.06):
    time.sleep(idle_s)
    jobs = queue.reclaim(worker.s.name, 50, 1) or queue.read(worker.s.name, 1, 10)
    return worker.handle(jobs[0], threading.Event())


def test_worker_retries_a_failing_job_then_dead_letters_it(queue):
    worker = FakeWorker(queue, [_failure("StatusCode.INTERNAL")] * 3)
    worker._triton_up = lambda: True
    job_id = queue.submit("iris_failing", 1, {"FEATURES": ROWS})
    assert _attempt(queue, worker, 0) == "retried"
    assert queue.state(job_id).status == QUEUED and "injected failure" in queue.state(job_id).error
    assert _attempt(queue, worker) == "retried"
    assert _attempt(queue, worker) == "failed"
    state = queue.state(job_id)
    assert (state.status, state.attempts) == (FAILED, 3)
    assert queue.dead_letters()[0]["job_id"] == job_id and queue.depth()["stream"] == 0


def test_worker_fails_bad_input_at_once_and_completes_after_a_transient_error(queue):
    worker = FakeWorker(queue, [_failure("StatusCode.INVALID_ARGUMENT"), _failure("StatusCode.UNAVAILABLE"), ANSWER])
    worker._triton_up = lambda: True
    bad = queue.submit("iris", 2, {"FEATURES": ROWS})
    assert _attempt(queue, worker, 0) == "failed" and queue.state(bad).attempts == 1
    good = queue.submit("iris", 2, {"FEATURES": ROWS})
    assert _attempt(queue, worker, 0) == "retried"
    assert _attempt(queue, worker) == "done"
    state = queue.state(good)
    assert (state.status, state.attempts, state.completions, state.model_version) == (DONE, 2, 1, "2")
    assert state.timings["infer_ms"] == 1.5


def test_a_job_whose_workers_keep_dying_ends_dead_after_max_attempts(queue):
    job_id = queue.submit("iris", 2, {"FEATURES": ROWS})
    queue.read("w1", 1, 10)
    for consumer in ("w2", "w3"):  # each takes it over and dies holding it
        time.sleep(0.06)
        assert queue.reclaim(consumer, 50, 1)
    worker = FakeWorker(queue, [])
    assert _attempt(queue, worker) == "failed"
    state = queue.state(job_id)
    assert state.status == FAILED and state.error == "its worker died (after 3 attempts)" and state.attempts == 3


def test_submits_of_one_batch_share_a_round_trip_and_an_idempotency_key_makes_one_job(queue):
    row = {"FEATURES": ROWS[:1]}
    answers = queue.submit_many([
        Submission("iris", 2, row, "iris_async_submit", "k1"),
        Submission("iris", 2, row, "iris_async_submit", "k1"),  # the same key in the same batch
        Submission("iris", 2, row, "iris_async_submit"),
        Submission("iris", 2, {"FEATURES": ROWS[1:]}, "iris_async_submit", "k1"),  # other inputs
        Submission("iris", 1, row, "iris_async_submit", "k1"),  # other target
        Submission("iris", 2, row, "text_async_submit", "k1"),  # another submit model's key
    ])
    first = answers[0]
    assert isinstance(first, Submitted) and first.created
    assert answers[1] == Submitted(first.job_id, created=False)
    assert answers[2].created and answers[2].job_id != first.job_id
    for refused in answers[3:5]:
        assert isinstance(refused, InputError) and f"used for another request (job {first.job_id})" in str(refused)
    assert answers[5].created and answers[5].job_id != first.job_id
    assert queue.depth()["stream"] == 3
    assert 0 < queue.redis.ttl("t:idem:iris_async_submit:k1") <= 60


def test_a_batch_that_fails_on_one_row_is_split_until_that_job_is_alone(queue):
    """The worker's search for a poison row: one call for the batch, then halves."""
    calls = []

    class PoisonModel(FakeWorker):
        def call(self, job, stop):
            rows = job.inputs["FEATURES"]
            calls.append(len(rows))
            if (rows[:, 0] < 0).any():
                raise _failure("StatusCode.INVALID_ARGUMENT")
            return {"LABEL": np.arange(len(rows))}, "2", 1.0

    worker = PoisonModel(queue, [])
    worker._max_batch_size = lambda model, version: 64
    rows = [np.array([[float(i), 1, 1, 1]], dtype=np.float32) for i in range(8)]
    rows[5] = -rows[5] - 1
    ids = [queue.submit("iris", 2, {"FEATURES": r}) for r in rows]
    jobs = queue.read("fake", 10, 10)
    outcomes = worker.handle_batch(jobs, threading.Event())
    assert outcomes == ["done"] * 5 + ["failed"] + ["done"] * 2
    assert calls == [8, 4, 4, 2, 1, 1, 2]  # all, first half (good), second half: its halves, depth first
    states = queue.states(ids)
    assert [int(s.outputs["LABEL"][0]) for s in states if s.status == DONE] == [0, 1, 2, 3, 0, 0, 1]
    assert states[5].status == FAILED and states[5].attempts == 1
    assert all(s.batch_jobs == 8 for s in states)


def test_a_full_queue_redis_refuses_submits_and_still_runs_the_jobs_it_accepted(tmp_path):
    """`noeviction` at maxmemory (serve's queue Redis): a submit is refused, nothing written; the
    jobs accepted before can be read, started and ended (their scripts are flagged allow-oom)."""
    import redis

    with RedisServer(maxmemory_policy="noeviction", appendfsync="everysec", directory=tmp_path) as server:
        q = JobQueue(server.client(), "t", ttl_seconds=60)
        q.register("w")
        accepted = [q.submit("iris", 2, {"FEATURES": ROWS})]
        for i in range(20):
            q.redis.set(f"filler-{i}", "x" * 100_000)
        # full: the limit half a megabyte below what it holds (a limit reached by writes is crossed
        # by the size of the refused command itself, so where a small one lands is not certain)
        q.redis.config_set("maxmemory", int(q.redis.info("memory")["used_memory"]) - 500_000)
        keys = q.redis.dbsize()
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            q.submit("iris", 2, {"FEATURES": ROWS})
        assert q.redis.dbsize() == keys and q.depth()["stream"] == 1  # the refused job left nothing
        q.register("late")  # a worker started while the Redis is full joins
        [job] = q.read("late", count=5, block_ms=10)
        assert q.start_many([job], "late") == [True]
        assert q.complete(job, ANSWER, "2", {"total_ms": 1.0}) is True
        state = q.state(accepted[0])
        assert (state.status, state.completions) == (DONE, 1) and q.depth()["stream"] == 0
