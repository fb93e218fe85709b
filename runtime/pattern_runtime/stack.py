"""The local stack: Redis, a seeded SQLite data store and tritonserver on free ports, stopped together.

`Stack` is the one place that assembles them: the demo, the batch job, the load tests, the
profiler, the soak and the end-to-end fixtures all use it. With `cache_redis=True` it has serve's
layout (`services.serve_services`): the caches in a Redis of their own (LRU), the queue's Redis
never evicting; without it, one Redis holds both (the test session's: its tests read the caches'
and the queue's keys through one `redis_server` fixture, and none fills it). Its Redis keep no
data across a stop: it is a throwaway stack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from pattern_kernel.data_store import DATA_STORE_ENV
from pattern_kernel.redis_link import CACHE_REDIS_URL_ENV, REDIS_URL_ENV
from pattern_runtime.launcher import TritonServer
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.services import seed_store

SEEDED_DIGITS = 10  # records digit-0 .. digit-9 in the data store running_stack() seeds
console = Console(width=None if Console().is_terminal else 130)


class Stack(contextlib.AbstractContextManager):
    """Redis, the data store and tritonserver. Entering starts all three; each part also starts on
    first use of its property (`redis`, `store`, `triton`), so a caller may need only Redis. `close()`
    (or leaving the `with`) stops what was started, tritonserver first.

    `cache_redis`: a second Redis for the caches (`redis_maxmemory`, `redis_policy`), the
    first then `noeviction` without a limit. `seed_digits=None`: no data store (the backends then read
    their configured default path).
    `store`: where to seed it (default: a temporary folder removed on close).
    `server`: how tritonserver runs (`ServerSettings`: repository, model control mode, models, ports,
    response cache, log_dir, restart_on_death...); its `env` is added to `Stack.env`.
    """

    def __init__(self, *, redis_maxmemory: int | str | None = "64mb", redis_policy: str | None = "allkeys-lru",
                 redis_port: int | None = None, cache_redis: bool = False, seed_digits: int | None = SEEDED_DIGITS,
                 store: Path | None = None, server: ServerSettings | None = None):
        limits = {"maxmemory": redis_maxmemory, "maxmemory_policy": redis_policy}
        self._redis_options = {"port": redis_port, **({"maxmemory_policy": "noeviction"} if cache_redis else limits)}
        self._cache_options = limits if cache_redis else None
        self._cache_redis: RedisServer | None = None
        self.seed_digits = seed_digits
        self._given_store = self._store = None if store is None else Path(store)
        self._seeded = False
        self._server_settings = server if server is not None else ServerSettings()
        self._redis: RedisServer | None = None
        self._triton: TritonServer | None = None
        self._stops = contextlib.ExitStack()

    @property
    def redis(self) -> RedisServer:
        if self._redis is None:
            self._redis = self._stops.enter_context(RedisServer(**self._redis_options))
        return self._redis

    @property
    def cache_redis(self) -> RedisServer:
        """The caches' Redis: their own with `cache_redis=True`, else `redis`."""
        if self._cache_options is None:
            return self.redis
        if self._cache_redis is None:
            self._cache_redis = self._stops.enter_context(RedisServer(**self._cache_options))
        return self._cache_redis

    @property
    def store(self) -> Path | None:
        """The seeded SQLite data store (None with `seed_digits=None`)."""
        if self.seed_digits is not None and not self._seeded:
            if self._store is None:
                self._store = Path(self._stops.enter_context(tempfile.TemporaryDirectory())) / "data_store.sqlite"
            seed_store(self._store, digits=self.seed_digits)
            self._seeded = True
        return self._store if self._seeded else None

    @property
    def env(self) -> dict[str, str]:
        """What the backends need: the Redis URLs and (when seeded) the data store's path."""
        redis_url = self.redis.url  # first: a missing redis-server is said before the seeding's seconds
        store = self.store
        return {REDIS_URL_ENV: redis_url, CACHE_REDIS_URL_ENV: self.cache_redis.url,
                **({DATA_STORE_ENV: str(store)} if store else {})}

    @property
    def triton(self) -> TritonServer:
        if self._triton is None:
            settings = self._server_settings
            settings = dataclasses.replace(settings, env={**self.env, **settings.env})
            self._triton = self._stops.enter_context(TritonServer(settings))
        return self._triton

    @property
    def http_url(self) -> str:
        return self.triton.http_url

    @property
    def grpc_url(self) -> str:
        return self.triton.grpc_url

    @property
    def metrics_url(self) -> str:
        return self.triton.metrics_url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def __enter__(self) -> Stack:
        try:
            _ = self.triton  # the property starts the server and what it needs
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._stops.close()
        self._redis = self._cache_redis = self._triton = None
        self._store, self._seeded = self._given_store, False


@contextlib.contextmanager
def running_stack() -> Iterator[tuple[TritonServer, RedisServer]]:
    """The demo's stack (store seeded with SEEDED_DIGITS digits; serve's two Redis), announced on
    the console; yields tritonserver and the queue's Redis."""
    with console.status("starting Redis and tritonserver (models load in ~20-60 s)..."), \
            Stack(cache_redis=True) as stack:
        triton, redis = stack.triton, stack.redis
        console.print(f"tritonserver ready: http {triton.http_url}, grpc {triton.grpc_url}, "
                      f"metrics {triton.metrics_url}; log {triton.log_path}")
        console.print(f"redis ready: {redis.url} (the job queue and state, noeviction); "
                      f"{stack.cache_redis.url} (the caches, LRU)")
        yield triton, redis
