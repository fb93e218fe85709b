"""What `triton-patterns serve` runs beside tritonserver: Redis and the data cache's store.

The async, cache, router-weights, shadow and data-cache patterns need Redis; the data-cache
models read records from a seeded store. `serve_services` starts an embedded `redis-server`
(on 127.0.0.1:6379 by default, the clients' default; a Redis already answering there is used
instead) unless given an external Redis URL, seeds the store when it has no records, and yields
the environment for the server and the banner lines.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from pattern_kernel.data_store import DATA_STORE_ENV, SQLiteStore
from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime.redis_server import RedisServer
from triton_patterns.endpoints import DEFAULT_REDIS_PORT

STATE_DIR_ENV = "TRITON_PATTERNS_STATE_DIR"
SERVE_REDIS_MAXMEMORY = "256mb"
# the data-cache configs' `store_path` (model_repository/digits_by_id*/config.pbtxt)
DEFAULT_STORE = "/tmp/triton_patterns_data_store.sqlite"


def default_state_dir() -> Path:
    """Where `serve` keeps what must outlive it (the queue's Redis data, the logs):
    $TRITON_PATTERNS_STATE_DIR, else $XDG_STATE_HOME/triton-patterns (~/.local/state/triton-patterns)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "triton-patterns"


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


def ensure_seeded(path: str | Path) -> int:
    """Seed the data store at `path` unless it already holds records; returns the record count."""
    store = SQLiteStore(path)
    try:
        count = store.count()
    finally:
        store.close()
    if count:
        return count
    counts = seed_store(path)
    return counts["image"] + counts["text"]


@contextlib.contextmanager
def serve_services(redis_url: str | None = None, redis_port: int = DEFAULT_REDIS_PORT,
                   data_store: str | Path = DEFAULT_STORE,
                   log_dir: Path | None = None) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Yield ({environment for tritonserver}, [banner lines]); stop the embedded Redis on exit.

    `redis_url`: use that Redis (nothing started). Otherwise start redis-server on
    `redis_port` (0: a free port), refusing a taken port with what to do instead; its log
    (redis.log) in `log_dir` when given, else in its own temporary folder.
    """
    records = ensure_seeded(data_store)
    notes = [f"store    {data_store} ({records} records: digit-<i>, text-<i>)"]
    env = {DATA_STORE_ENV: str(data_store)}
    if redis_url:
        yield {**env, REDIS_URL_ENV: redis_url}, [*notes, f"redis    {redis_url} (external)"]
        return
    if redis_port and _port_taken("127.0.0.1", redis_port):
        url = f"redis://127.0.0.1:{redis_port}/0"
        if not _answers_ping(url):
            raise SystemExit(f"serve: --redis-port {redis_port} is taken on 127.0.0.1 by something that is not "
                             f"Redis; pass --redis-port 0 for a free port, or --redis-url URL")
        # e.g. Debian's redis-server service: the Redis the clients default to anyway
        yield {**env, REDIS_URL_ENV: url}, [*notes, f"redis    {url} (already running there: used, not started)"]
        return
    redis = RedisServer(port=redis_port or None, maxmemory=SERVE_REDIS_MAXMEMORY, maxmemory_policy="allkeys-lru")
    redis.log_dir = log_dir
    with redis:
        line = f"redis    {redis.url} (embedded redis-server pid {redis.pid}, stopped with the server)"
        if redis_port != DEFAULT_REDIS_PORT:
            line += f"; clients: export {REDIS_URL_ENV}={redis.url}"
        yield {**env, REDIS_URL_ENV: redis.url}, [*notes, line]


def seed_store(path: str | Path, digits: int = 100) -> dict[str, int]:
    """Load `digit-<i>` (PNG of held-out digit i) and `text-<i>` records; returns counts."""
    from pattern_runtime.datasets.digits import encode_digit_png, load_test_split
    from pattern_runtime.datasets.text import generate_text_dataset

    store = SQLiteStore(path)
    images, _ = load_test_split()
    for i, pixels in enumerate(images[:digits]):
        store.put(f"digit-{i}", "image", encode_digit_png(pixels))
    texts = generate_text_dataset()
    for i, (text, _) in enumerate(texts):
        store.put(f"text-{i}", "text", text.encode())
    store.close()
    return {"image": min(digits, len(images)), "text": len(texts)}
