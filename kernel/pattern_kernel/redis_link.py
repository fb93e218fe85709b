"""The Redis connection of a backend: fail fast, never retry, so that Redis being down costs a
request at most `redis_timeout_ms`.

Two roles, two Redis (docs/reliability.md, "Durability"): the queue's Redis holds what must not
be lost (jobs, router weights, shadow and prediction logs, captures, fault switches) and keeps it
(append-only file, no eviction); the cache's Redis holds only what may be evicted (the prediction
and data caches' keys, LRU, no persistence). A cache backend connects with `cache=True`.
"""

from __future__ import annotations

import os

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pattern_kernel.model_config import ModelConfig

# The environment variables through which a server's backends find their Redis.
REDIS_URL_ENV = "TRITON_PATTERNS_REDIS_URL"
CACHE_REDIS_URL_ENV = "TRITON_PATTERNS_CACHE_REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redis_url(config: ModelConfig, cache: bool = False) -> str:
    """The URL a backend uses: for a cache $TRITON_PATTERNS_CACHE_REDIS_URL first; then
    $TRITON_PATTERNS_REDIS_URL (the launcher sets it), then the config's `redis_url`."""
    names = (CACHE_REDIS_URL_ENV, REDIS_URL_ENV) if cache else (REDIS_URL_ENV,)
    found = next((os.environ[n] for n in names if os.environ.get(n)), None)
    return found or config.parameter("redis_url", DEFAULT_URL)


def connect(config: ModelConfig, cache: bool = False) -> redis.Redis:
    """A client of `redis_url(config, cache)` with `redis_timeout_ms` (default 50) as its timeouts."""
    timeout = config.float_parameter("redis_timeout_ms", 50) / 1000
    return redis.Redis.from_url(
        redis_url(config, cache), socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
