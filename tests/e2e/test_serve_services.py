"""`triton-patterns serve`'s services with a real redis-server: a Redis already on the port is
used, anything else on it is refused, port 0 starts one (moved from tests/unit/test_new_user_helpers.py)."""

from __future__ import annotations

import socket

import pytest

from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.services import serve_services

pytestmark = pytest.mark.e2e


def test_serve_services_use_a_redis_already_on_the_port_and_refuse_anything_else(tmp_path):
    store = tmp_path / "store.sqlite"
    with RedisServer() as redis:
        with serve_services(redis_port=redis.port, data_store=store) as (env, notes):
            assert env[REDIS_URL_ENV] == redis.url
            assert any("already running there: used, not started" in n for n in notes), notes
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(SystemExit, match="taken on 127.0.0.1 by something that is not Redis"):
            with serve_services(redis_port=other.getsockname()[1], data_store=store):
                pass
    with serve_services(redis_port=0, data_store=store) as (env, notes):
        assert "embedded redis-server pid" in notes[-1] and env[REDIS_URL_ENV] in notes[-1]
