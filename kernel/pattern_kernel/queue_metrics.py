"""How full the asynchronous pattern's queue is (`job_queue`), read from Redis for metrics.

`read_stats` takes one consistent snapshot of a namespace (one MULTI/EXEC): jobs waiting (in the
stream, not yet delivered), pending (delivered to a worker, not yet ended: in its hands or
waiting for a retry), dead letters, the age of the oldest job still in the stream (from its
entry id's timestamp and Redis' own clock, so host clocks don't matter) and the workers Redis
has seen within `WORKER_SEEN_MS`. `QueuePoller` reads it every few seconds on a daemon thread
and hands each snapshot (None when Redis cannot be read) to a `publish` callback; it never dies
of an error and stops at once on `stop`. Nothing here touches Triton: the `async_result` model
publishes the snapshots as its gauges (backends/async_queue).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from pattern_kernel.job_queue import GROUP, JobQueue

# A consumer of the group counts as a live worker when Redis has seen it (a read, a claim, a
# touch) this recently. Redis 7.0 (Debian 12's) counts a read only when it delivers: an idle
# worker on an empty queue drops out after this; it is seen again with the first job it reads.
WORKER_SEEN_MS = 60_000


@dataclass(frozen=True)
class QueueStats:
    waiting: int
    pending: int
    dead: int
    oldest_age_s: float  # 0 when the stream is empty
    workers: int

    def depths(self) -> dict[str, int]:
        return {"waiting": self.waiting, "pending": self.pending, "dead": self.dead}


def entry_ms(entry_id) -> int:
    """The millisecond timestamp of a stream entry id ("1700000000000-0")."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])


def stats_from_replies(now, length, pending, dead, first, consumers) -> QueueStats:
    """The snapshot from the replies of TIME, XLEN, XPENDING, XLEN (dead), XRANGE - + COUNT 1 and
    XINFO CONSUMERS; XPENDING and XINFO answer an error before the consumer group exists."""
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    pending_count = 0 if isinstance(pending, Exception) else int(pending["pending"])
    oldest = max(0, now_ms - entry_ms(first[0][0])) / 1000 if first else 0.0
    live = 0 if isinstance(consumers, Exception) else sum(1 for c in consumers if int(c["idle"]) < WORKER_SEEN_MS)
    return QueueStats(waiting=max(0, int(length) - pending_count), pending=pending_count, dead=int(dead),
                      oldest_age_s=oldest, workers=live)


def read_stats(queue: JobQueue) -> QueueStats:
    """The namespace's snapshot; raises redis.RedisError when Redis cannot be read."""
    pipe = queue.redis.pipeline(transaction=True)
    pipe.time()
    pipe.xlen(queue.stream)
    pipe.xpending(queue.stream, GROUP)
    pipe.xlen(queue.dead)
    pipe.xrange(queue.stream, count=1)
    pipe.xinfo_consumers(queue.stream, GROUP)
    replies = pipe.execute(raise_on_error=False)
    for index in (0, 1, 3, 4):  # these fail only when Redis does (a wrong key type, a lost link)
        if isinstance(replies[index], Exception):
            raise replies[index]
    return stats_from_replies(*replies)


class QueuePoller:
    """`publish(read())` every `interval_s` seconds on a daemon thread, the first at once;
    `publish(None)` when `read` raises a Redis error (Redis down). Any other error is passed to
    `log` and the thread goes on."""

    def __init__(self, read: Callable[[], QueueStats], publish: Callable[[QueueStats | None], None],
                 interval_s: float, log: Callable[[str], None], name: str = "queue-metrics"):
        self.read, self.publish, self.interval_s, self.log = read, publish, interval_s, log
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> QueuePoller:
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop, and wait for a poll in progress (bounded by the Redis client's timeout)."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)

    def poll(self) -> None:
        try:
            try:
                stats = self.read()
            except redis.RedisError:
                stats = None
            self.publish(stats)
        except Exception as exc:  # noqa: BLE001 - the thread outlives any one bad poll
            self.log(f"{self.thread.name}: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        self.poll()
        while not self.stopping.wait(self.interval_s):
            self.poll()
