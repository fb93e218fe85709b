"""RedisServer: a real redis-server on a free port, configured, and gone after stop()."""

from __future__ import annotations

import os
import socket

import pytest

from pattern_runtime.processes import group_members
from pattern_runtime.redis_server import RedisServer, RedisStartError

pytestmark = pytest.mark.e2e  # a missing binary fails with the package to install


@pytest.fixture
def redis_server():
    server = RedisServer(maxmemory="16mb", maxmemory_policy="allkeys-lru")
    try:
        yield server.start()
    finally:
        server.stop()


def test_set_get_and_config(redis_server):
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis_server.client(decode_responses=True)
    client.set("answer", "42")
    assert client.get("answer") == "42"
    config = client.config_get("maxmemory*")
    assert config["maxmemory"] == str(16 * 1024 * 1024)
    assert config["maxmemory-policy"] == "allkeys-lru"
    assert client.config_get("save")["save"] == ""
    assert client.config_get("appendonly")["appendonly"] == "no"
    client.close()


def test_stop_leaves_no_process():
    server = RedisServer()
    with server:
        pid, directory = server.pid, server.directory
        assert server.is_running() and server.ping()
    assert not server.is_running()
    assert group_members(pid) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()


def test_start_failure_has_log_tail():
    server = RedisServer(maxmemory_policy="not-a-policy")
    with pytest.raises(RedisStartError, match="exited") as err:
        server.start()
    assert "not-a-policy" in str(err.value) or "maxmemory-policy" in str(err.value)
    assert not server.is_running()


def test_missing_binary_names_the_package():
    with pytest.raises(RedisStartError, match="apt-get install redis-server"):
        RedisServer(binary="redis-server-that-does-not-exist").start()


def test_a_port_taken_between_choosing_and_binding_gets_another_free_port():
    server = RedisServer()
    chosen = server.port
    with socket.socket() as squatter:  # another process binds the chosen port first
        squatter.bind(("127.0.0.1", chosen))
        squatter.listen()
        with server:
            assert server.port != chosen and server.ping()
            assert server.client().set("k", "v")


def test_a_port_given_and_taken_is_an_error_naming_it():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RedisStartError, match=rf"127.0.0.1:{port} \(pid \d+\) exited") as err:
            RedisServer(port=port).start()
    assert "Address already in use" in str(err.value)
