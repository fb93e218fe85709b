"""The Redis connection of a backend (prediction cache, data cache): fail fast, never retry,
so that Redis being down costs a request at most `redis_timeout_ms`."""

from __future__ import annotations

import os

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pattern_kernel.model_config import ModelConfig

# The environment variable through which a server's backends (prediction cache, ...) find Redis.
REDIS_URL_ENV = "TRITON_PATTERNS_REDIS_URL"


def connect(config: ModelConfig) -> redis.Redis:
    """From `redis_url` (the environment variable TRITON_PATTERNS_REDIS_URL overrides it, as the
    launcher sets it) and `redis_timeout_ms` (default 50)."""
    url = os.environ.get(REDIS_URL_ENV) or config.parameter("redis_url", "redis://127.0.0.1:6379/0")
    timeout = config.float_parameter("redis_timeout_ms", 50) / 1000
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
