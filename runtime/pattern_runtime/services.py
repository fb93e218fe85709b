"""What `triton-patterns serve` runs beside tritonserver: two Redis and the data cache's store.

Jobs and caches want opposite Redis settings (docs/reliability.md, "Durability"), so serve
starts two `redis-server`s unless given external URLs:
- the queue's Redis (127.0.0.1:6379 by default, the clients' default): the jobs and the other
  state the backends keep there (router weights, shadow and prediction logs, captures, fault
  switches). Append-only file (`appendfsync` everysec, or always) in a lasting data folder
  (`data_dir`, default `default_state_dir() / "redis"`), `noeviction`: a full queue refuses
  a submit, nothing accepted is evicted. A port on which something already answers is refused:
  jobs must not go to another project's Redis, or a stale one.
- the cache's Redis (a free port): the prediction and data caches only, LRU, no persistence.
The backends find them through $TRITON_PATTERNS_REDIS_URL and $TRITON_PATTERNS_CACHE_REDIS_URL
(`pattern_kernel.redis_link`). `serve_services` also seeds the store when it has no complete
seed, and yields `ServeParts`: the environment for the server, the banner lines and the started
servers, for serve's loop to supervise.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pattern_kernel.data_store import DATA_STORE_ENV
from pattern_kernel.redis_link import CACHE_REDIS_URL_ENV, REDIS_URL_ENV
from pattern_runtime.processes import LocalServer
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.seeding import ensure_seeded, seed_store  # noqa: F401 - seed_store: the CLI's and the Stack's
from triton_patterns.endpoints import DEFAULT_REDIS_PORT

STATE_DIR_ENV = "TRITON_PATTERNS_STATE_DIR"
QUEUE_MAXMEMORY = "1gb"  # then submits are refused (noeviction)
CACHE_MAXMEMORY = "256mb"  # then the least recently used cache keys go
DEFAULT_APPENDFSYNC = "everysec"
# the data-cache configs' `store_path` (model_repository/digits_by_id*/config.pbtxt)
DEFAULT_STORE = "/tmp/triton_patterns_data_store.sqlite"
LOCK_NAME = "serve.lock"


def default_state_dir() -> Path:
    """Where `serve` keeps what must outlive it (the queue's Redis data, the logs):
    $TRITON_PATTERNS_STATE_DIR, else $XDG_STATE_HOME/triton-patterns (~/.local/state/triton-patterns)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "triton-patterns"


def default_data_dir() -> Path:
    """The queue's Redis data folder (its append-only file) when `--data-dir` is not given."""
    return default_state_dir() / "redis"


@dataclass
class ServeParts:
    """What `serve_services` yields: the environment for tritonserver, the banner lines, and the
    servers it started (to supervise: restarted on the same port and data if they die)."""

    env: dict[str, str]
    notes: list[str]
    servers: list[LocalServer] = field(default_factory=list)


@dataclass(frozen=True)
class RedisSettings:
    """How serve runs its two Redis (the CLI's --data-dir, --appendfsync and --*-maxmemory)."""

    data_dir: Path | str | None = None  # None: default_data_dir()
    appendfsync: str = DEFAULT_APPENDFSYNC
    queue_maxmemory: str = QUEUE_MAXMEMORY
    cache_maxmemory: str = CACHE_MAXMEMORY


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _answers_ping(url: str) -> bool:
    import redis

    try:
        with contextlib.closing(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def refuse_taken_port(port: int, host: str = "127.0.0.1") -> None:
    """SystemExit with what to do when something already listens on the queue's port."""
    if not port or not _port_taken(host, port):
        return
    url = f"redis://{host}:{port}/0"
    if _answers_ping(url):
        raise SystemExit(f"serve: a Redis already answers on {host}:{port} (another project's, or one left running) "
                         f"and serve keeps its jobs in a Redis of its own: pass --redis-port 0 for a free port, "
                         f"or --redis-url {url} to use that Redis on purpose")
    raise SystemExit(f"serve: {host}:{port} is taken by something that is not Redis: pass --redis-port 0 for a "
                     f"free port, or --redis-url URL to use a Redis of yours")


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold the data folder for this process: two Redis on one append-only file would ruin it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise SystemExit(f"serve: the data folder {data_dir} is in use by another serve (pid {holder}): "
                             f"stop it, or pass --data-dir DIR") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield  # the lock goes with the file's close


def _started(stack: contextlib.ExitStack, redis: RedisServer, log_dir: Path | None, name: str) -> RedisServer:
    """`redis` started (and stopped with `stack`) as `name` (in messages), its log `<name>.log` in
    `log_dir` when given."""
    redis.name = name
    if log_dir is not None:
        redis.log_dir, redis.log_name = Path(log_dir), f"{name}.log"
    return stack.enter_context(redis)


def _start_queue_redis(stack: contextlib.ExitStack, port: int, settings: RedisSettings,
                       log_dir: Path | None) -> tuple[RedisServer, str]:
    refuse_taken_port(port)
    data_dir = Path(settings.data_dir or default_data_dir()).absolute()
    stack.enter_context(_locked(data_dir))
    redis = _started(stack, RedisServer(port=port or None, appendfsync=settings.appendfsync, directory=data_dir,
                                        maxmemory=settings.queue_maxmemory, maxmemory_policy="noeviction"),
                     log_dir, "redis-server")
    note = (f"redis    {redis.url} (embedded redis-server pid {redis.pid}, the job queue and state: append-only "
            f"file, appendfsync {settings.appendfsync}, noeviction, maxmemory {settings.queue_maxmemory}; data in "
            f"{data_dir}, kept across restarts)")
    if port != DEFAULT_REDIS_PORT:
        note += f"; clients: export {REDIS_URL_ENV}={redis.url}"
    return redis, note


def _start_cache_redis(stack: contextlib.ExitStack, settings: RedisSettings,
                       log_dir: Path | None) -> tuple[RedisServer, str]:
    redis = _started(stack, RedisServer(maxmemory=settings.cache_maxmemory, maxmemory_policy="allkeys-lru"),
                     log_dir, "redis-cache")
    return redis, (f"cache    {redis.url} (embedded redis-server pid {redis.pid}, the prediction and data caches "
                   f"only: allkeys-lru, maxmemory {settings.cache_maxmemory}, no persistence)")


@contextlib.contextmanager
def serve_services(redis_url: str | None = None, redis_port: int = DEFAULT_REDIS_PORT,
                   data_store: str | Path = DEFAULT_STORE, cache_redis_url: str | None = None,
                   settings: RedisSettings = RedisSettings(), log_dir: Path | None = None) -> Iterator[ServeParts]:
    """Yield `ServeParts`; stop the Redis it started on exit.

    `redis_url`: the queue's Redis is that one (nothing started), and the caches' too unless
    `cache_redis_url` names another. Otherwise the queue's redis-server starts on `redis_port`
    (0: a free port) and the cache's on a free port (unless `cache_redis_url`); their logs
    (redis-server.log, redis-cache.log) in `log_dir` when given, else in their own folders.
    """
    records = ensure_seeded(data_store)
    parts = ServeParts({DATA_STORE_ENV: str(data_store)}, [f"store    {data_store} ({records} records: digit-<i>, "
                                                           f"text-<i>)"])
    with contextlib.ExitStack() as stack:
        if redis_url:
            queue_url = redis_url
            parts.notes.append(f"redis    {redis_url} (external: the job queue and state"
                               f"{'' if cache_redis_url else ', and the caches'})")
        else:
            queue, note = _start_queue_redis(stack, redis_port, settings, log_dir)
            queue_url = queue.url
            parts.servers.append(queue)
            parts.notes.append(note)
        if cache_redis_url:
            cache_url = cache_redis_url
            parts.notes.append(f"cache    {cache_redis_url} (external: the prediction and data caches)")
        elif redis_url:
            cache_url = redis_url
        else:
            cache, note = _start_cache_redis(stack, settings, log_dir)
            cache_url = cache.url
            parts.servers.append(cache)
            parts.notes.append(note)
        parts.env.update({REDIS_URL_ENV: queue_url, CACHE_REDIS_URL_ENV: cache_url})
        yield parts
