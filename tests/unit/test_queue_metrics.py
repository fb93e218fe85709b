"""The async queue's snapshot from Redis replies (depth by state, oldest job age on Redis' clock,
live workers) and the poller's thread: first poll at once, Redis down published as None, any
other error logged without ending the thread, a prompt stop."""

from __future__ import annotations

import threading

import redis

from pattern_kernel.queue_metrics import WORKER_SEEN_MS, QueuePoller, QueueStats, entry_ms, stats_from_replies

NOW = (1_700_000_010, 250_000)  # Redis TIME: seconds, microseconds
NOGROUP = redis.ResponseError("NOGROUP No such key 'async:jobs' or consumer group 'workers'")


def test_entry_ids_carry_their_millisecond_timestamp():
    assert entry_ms(b"1700000000000-3") == 1_700_000_000_000
    assert entry_ms("1700000000123-0") == 1_700_000_000_123


def test_waiting_is_the_stream_less_the_pending_and_the_oldest_entry_gives_the_age():
    first = [(b"1700000000000-0", {b"job_id": b"a"})]
    consumers = [{"name": "w1", "idle": 900}, {"name": "gone", "idle": WORKER_SEEN_MS + 1}]
    stats = stats_from_replies(NOW, 7, {"pending": 2}, 1, first, consumers)
    assert stats == QueueStats(waiting=5, pending=2, dead=1, oldest_age_s=10.25, workers=1)
    assert stats.depths() == {"waiting": 5, "pending": 2, "dead": 1}


def test_an_empty_queue_before_its_group_exists_is_all_zero():
    assert stats_from_replies(NOW, 0, NOGROUP, 0, [], NOGROUP) == QueueStats(0, 0, 0, 0.0, 0)


def test_an_entry_stamped_after_redis_time_is_age_zero_not_negative():
    assert stats_from_replies(NOW, 1, {"pending": 0}, 0, [(b"1700000020000-0", {})], []).oldest_age_s == 0


def _poller(read, interval_s=60.0):
    published, logged, polled = [], [], threading.Event()

    def publish(stats):
        published.append(stats)
        polled.set()

    def log(message):
        logged.append(message)
        polled.set()

    return QueuePoller(read, publish, interval_s, log, name="test-poller"), published, logged, polled


def test_the_first_poll_is_at_once_and_stop_ends_the_thread_without_waiting_the_interval():
    stats = QueueStats(1, 0, 0, 3.0, 1)
    poller, published, _, polled = _poller(lambda: stats, interval_s=60)
    poller.start()
    assert polled.wait(5)
    poller.stop(timeout_s=5)
    assert not poller.thread.is_alive() and published == [stats]
    assert poller.thread.daemon  # never holds up the stub's exit


def test_redis_down_is_published_as_none_and_other_errors_are_logged_and_polling_goes_on():
    replies = [redis.ConnectionError("Connection refused"), KeyError("pending"), QueueStats(0, 0, 0, 0.0, 0)]

    def read():
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    poller, published, logged, _ = _poller(read)
    for _ in range(3):
        poller.poll()
    assert published == [None, QueueStats(0, 0, 0, 0.0, 0)]
    assert logged == ["test-poller: KeyError: 'pending'"]


def test_a_failing_publish_is_logged_too():
    def publish(_):
        raise RuntimeError("metric gone")

    logged: list[str] = []
    QueuePoller(lambda: QueueStats(0, 0, 0, 0.0, 0), publish, 1.0, logged.append, name="p").poll()
    assert logged == ["p: RuntimeError: metric gone"]
