"""`triton-patterns serve`'s services with real redis-servers: the queue's Redis keeps its data in
the data folder across a stop and never evicts, the caches' is another Redis (LRU), a port on
which something already answers is refused with what to do, one data folder serves one serve."""

from __future__ import annotations

import contextlib
import socket

import pytest

from pattern_kernel.redis_link import CACHE_REDIS_URL_ENV, REDIS_URL_ENV
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.services import RedisSettings, serve_services

pytestmark = pytest.mark.e2e


def _config(server: RedisServer, *names: str) -> dict[str, str]:
    with contextlib.closing(server.client(decode_responses=True)) as client:
        return {name: client.config_get(name)[name] for name in names}


def test_serve_services_start_a_lasting_queue_redis_and_a_cache_redis(tmp_path):
    store, data = tmp_path / "store.sqlite", tmp_path / "data"
    settings = RedisSettings(data_dir=data, cache_maxmemory="8mb")
    with serve_services(redis_port=0, data_store=store, settings=settings) as parts:
        queue, cache = parts.servers
        assert (parts.env[REDIS_URL_ENV], parts.env[CACHE_REDIS_URL_ENV]) == (queue.url, cache.url)
        assert _config(queue, "appendonly", "appendfsync", "maxmemory-policy", "dir") == {
            "appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction", "dir": str(data)}
        assert _config(cache, "appendonly", "maxmemory-policy", "maxmemory") == {
            "appendonly": "no", "maxmemory-policy": "allkeys-lru", "maxmemory": str(8 << 20)}
        assert f"redis    {queue.url} (embedded redis-server pid {queue.pid}" in parts.notes[1]
        assert f"data in {data}" in parts.notes[1] and f"cache    {cache.url}" in parts.notes[2]
        queue.client().set("job", "acknowledged")
        with pytest.raises(SystemExit, match=f"the data folder {data} is in use by another serve"):
            with serve_services(redis_port=0, data_store=store, settings=settings):
                pass
    assert not queue.is_running() and not cache.is_running()
    with serve_services(redis_port=0, data_store=store, settings=RedisSettings(data_dir=data)) as parts:
        assert parts.servers[0].client().get("job") == b"acknowledged"  # from the append-only file


def test_a_taken_redis_port_is_refused_with_what_to_do(tmp_path):
    store = tmp_path / "store.sqlite"
    with RedisServer() as other:
        with pytest.raises(SystemExit, match=rf"a Redis already answers on 127.0.0.1:{other.port} .*--redis-port 0 "
                                             rf".*--redis-url {other.url} to use that Redis on purpose"):
            with serve_services(redis_port=other.port, data_store=store, settings=RedisSettings(tmp_path / "d")):
                pass
        assert not (tmp_path / "d").exists()  # refused before anything was made
    with socket.socket() as not_redis:
        not_redis.bind(("127.0.0.1", 0))
        not_redis.listen()
        with pytest.raises(SystemExit, match="is taken by something that is not Redis: pass --redis-port 0"):
            with serve_services(redis_port=not_redis.getsockname()[1], data_store=store,
                                settings=RedisSettings(tmp_path / "d")):
                pass


def test_an_external_redis_serves_the_queue_and_the_caches_unless_told_otherwise(tmp_path):
    store = tmp_path / "store.sqlite"
    with serve_services("redis://127.0.0.1:1/0", data_store=store) as parts:
        assert parts.servers == [] and parts.env[CACHE_REDIS_URL_ENV] == "redis://127.0.0.1:1/0"
    with serve_services("redis://127.0.0.1:1/0", data_store=store, cache_redis_url="redis://127.0.0.1:2/0") as parts:
        assert (parts.env[REDIS_URL_ENV], parts.env[CACHE_REDIS_URL_ENV]) == ("redis://127.0.0.1:1/0",
                                                                               "redis://127.0.0.1:2/0")
