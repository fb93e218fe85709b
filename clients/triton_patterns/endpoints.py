"""Default addresses of the server and Redis for the SDK and the CLI, from the environment.

A command written with the default ports (`triton-patterns predict ...`, `PatternClient()`)
reaches another server when these are set, e.g. one started on free ports:

    TRITON_PATTERNS_URL          HTTP  host:port   (default 127.0.0.1:8000)
    TRITON_PATTERNS_GRPC_URL     gRPC  host:port   (default 127.0.0.1:8001)
    TRITON_PATTERNS_METRICS_URL  metrics host:port (default 127.0.0.1:8002)
    TRITON_PATTERNS_REDIS_URL    Redis URL         (default redis://127.0.0.1:6379/0)
"""

from __future__ import annotations

import os

from triton_patterns.contract import REDIS_URL_ENV

URL_ENV = "TRITON_PATTERNS_URL"
GRPC_URL_ENV = "TRITON_PATTERNS_GRPC_URL"
METRICS_URL_ENV = "TRITON_PATTERNS_METRICS_URL"
DEFAULT_HTTP = "127.0.0.1:8000"
DEFAULT_GRPC = "127.0.0.1:8001"
DEFAULT_METRICS = "127.0.0.1:8002"
DEFAULT_REDIS_PORT = 6379
DEFAULT_REDIS = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"


def server_url(protocol: str = "http") -> str:
    """The server address for `protocol` ("http" or "grpc"): its variable, else the default port."""
    if protocol == "grpc":
        return os.environ.get(GRPC_URL_ENV) or DEFAULT_GRPC
    return os.environ.get(URL_ENV) or DEFAULT_HTTP


def metrics_url() -> str:
    return os.environ.get(METRICS_URL_ENV) or DEFAULT_METRICS


def redis_url(given: str | None = None) -> str:
    return given or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS
