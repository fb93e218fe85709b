"""The local stack: Redis and tritonserver on free ports, the data store seeded, stopped together.

The demo, the batch job, the load tests and the soak run their patterns against it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from pattern_kernel.data_store import DATA_STORE_ENV
from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime.launcher import TritonServer
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.services import seed_store

SEEDED_DIGITS = 10  # records digit-0 .. digit-9 in the data store running_stack() seeds
console = Console(width=None if Console().is_terminal else 130)


@contextlib.contextmanager
def running_stack() -> Iterator[tuple[TritonServer, RedisServer]]:
    """Start Redis and tritonserver (store seeded) on free ports; yield both servers; stop both."""
    with console.status("starting Redis and tritonserver (models load in ~20-60 s)..."), \
            tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "data_store.sqlite"
        seed_store(store, digits=SEEDED_DIGITS)
        env = {DATA_STORE_ENV: str(store)}
        with RedisServer(maxmemory="64mb", maxmemory_policy="allkeys-lru") as redis, \
                TritonServer(env={**env, REDIS_URL_ENV: redis.url}) as triton:
            console.print(f"tritonserver ready: http {triton.http_url}, grpc {triton.grpc_url}, "
                          f"metrics {triton.metrics_url}; log {triton.log_path}")
            console.print(f"redis ready: {redis.url}")
            yield triton, redis
