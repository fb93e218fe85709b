"""Supervisor: a real redis-server killed with SIGKILL is reported and started again on the same
port in the same directory, so with its data (AOF); past the restart limit it is given up."""

from __future__ import annotations

import os
import signal

import pytest

from pattern_runtime.processes import wait_for
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.supervision import Supervisor

pytestmark = pytest.mark.e2e


def _poll_until(supervisor: Supervisor, condition, timeout: float = 20.0) -> bool:
    def polled() -> bool:
        supervisor.poll()
        return condition()

    return wait_for(polled, timeout, interval=0.05)


def test_a_killed_redis_is_restarted_on_its_port_with_its_data(tmp_path):
    deaths = []
    supervisor = Supervisor(backoff_s=0.1, on_death=deaths.append)
    with RedisServer(persistence=True, directory=tmp_path, extra_args=["--appendonly", "yes",
                                                                      "--appendfsync", "always"]) as redis:
        supervisor.watch(redis)
        client = redis.client(decode_responses=True)
        client.set("job", "acknowledged")
        port, first_pid = redis.port, redis.pid
        os.kill(first_pid, signal.SIGKILL)
        assert _poll_until(supervisor, lambda: redis.pid != first_pid and redis.ping()), \
            f"not restarted; deaths {deaths}; log:\n{redis.log_tail()}"
        assert redis.port == port
        assert [(d.name, d.pid, d.signal, d.restarting) for d in deaths] == [
            ("redis-server", first_pid, "SIGKILL", True)]
        assert "Ready to accept connections" in deaths[0].log_tail
        assert client.get("job") == "acknowledged"  # the same data, from the AOF
        assert supervisor.restarts(redis) == 1 and supervisor.gave_up == []
        supervisor.forget_all()
        client.close()


def test_past_the_restart_limit_the_server_is_given_up(tmp_path):
    given_up = []
    supervisor = Supervisor(max_restarts=1, backoff_s=0.1, on_give_up=given_up.append)
    with RedisServer(directory=tmp_path) as redis:
        supervisor.watch(redis)
        for _ in range(2):
            pid = redis.pid
            os.kill(pid, signal.SIGKILL)
            assert _poll_until(supervisor, lambda pid=pid: redis.pid != pid and redis.ping() or bool(given_up))
        assert given_up == [redis] and supervisor.gave_up == ["redis-server"]
        assert [d.restarting for d in supervisor.deaths] == [True, False]
        assert not redis.is_running()
