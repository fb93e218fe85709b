"""The Redis connection of a backend: fail fast, never retry, so that Redis being down costs a
request at most `redis_timeout_ms`.

Two roles, two Redis (docs/reliability.md, "Durability"): the queue's Redis holds what must not
be lost (jobs, router weights, shadow and prediction logs, captures, fault switches) and keeps it
(append-only file, no eviction); the cache's Redis holds only what may be evicted (the prediction
and data caches' keys, LRU, no persistence). A cache backend connects with `cache=True`.
The parameters (`redis_url`, `redis_timeout_ms`) and
their defaults are the spec's (`spec.REDIS`, `spec.CACHE_REDIS`): `params` is what
`BackendSpec.read` returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# The environment variables through which a server's backends find their Redis.
REDIS_URL_ENV = "TRITON_PATTERNS_REDIS_URL"
CACHE_REDIS_URL_ENV = "TRITON_PATTERNS_CACHE_REDIS_URL"


def redis_url(params: Mapping[str, Any], cache: bool = False) -> str:
    """The URL a backend uses: for a cache $TRITON_PATTERNS_CACHE_REDIS_URL first; then
    $TRITON_PATTERNS_REDIS_URL (the launcher sets it), then the parameter `redis_url`."""
    names = (CACHE_REDIS_URL_ENV, REDIS_URL_ENV) if cache else (REDIS_URL_ENV,)
    found = next((os.environ[n] for n in names if os.environ.get(n)), None)
    return found or params["redis_url"]


def connect(params: Mapping[str, Any], cache: bool = False) -> redis.Redis:
    """A client of `redis_url(params, cache)` with `redis_timeout_ms` as its timeouts."""
    timeout = params["redis_timeout_ms"] / 1000
    return redis.Redis.from_url(
        redis_url(params, cache), socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
