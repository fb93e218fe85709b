"""A Python model's stub process dies: stock Triton keeps the model READY while every request
fails; the project's stub check reports it, and the watchdog reloads it so requests resume."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from triton_patterns.client import PatternClient, PatternError
from triton_patterns.launcher import TritonServer
from triton_patterns.processes import wait_for
from triton_patterns.stub_watchdog import StubWatchdog

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    # explicit model control (the launcher's default), two models only: a quick start. The model
    # unloaded with its dead stub is never freed, so the server's shutdown waits out its exit
    # timeout: 5 s here instead of 30.
    with TritonServer(load_models=["iris", "iris_web_single"], log_dir=tmp_path_factory.mktemp("logs"),
                      extra_args=["--exit-timeout-secs=5"]) as server:
        yield server


def _kill_stub(server, model: str) -> int:
    pid = server.stub_pids()[model][0]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: pid not in server.stub_pids().get(model, []), 10, interval=0.1)
    return pid


def test_dead_stub_is_reported_while_stock_health_stays_green_and_recovery_restores_service(small_server):
    watchdog = StubWatchdog(small_server)
    with PatternClient(small_server.http_url) as client:
        assert client.web_single(ROW).label == "setosa"
        assert watchdog.dead_models() == {}
        pid = _kill_stub(small_server, "iris_web_single")

        base = f"http://{small_server.http_url}"
        assert requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 200  # stock: still green
        assert requests.get(f"{base}/v2/models/iris_web_single/ready", timeout=5).status_code == 200
        with pytest.raises(PatternError, match="not healthy"):
            client.web_single(ROW)
        assert watchdog.dead_models() == {"iris_web_single": [pid]}  # the project's check: unhealthy

        [recovery] = watchdog.check_once()
        assert recovery.model == "iris_web_single" and recovery.recovered
        assert client.web_single(ROW).label == "setosa"
        assert watchdog.dead_models() == {}
        assert client.synchronous(ROW).label == "setosa"  # the other model was never touched


def test_watchdog_thread_reloads_a_model_whose_stub_was_killed(small_server):
    watchdog = StubWatchdog(small_server, interval=0.5).start()
    try:
        with PatternClient(small_server.http_url) as client:
            _kill_stub(small_server, "iris_web_single")

            def answers() -> bool:
                try:
                    return client.web_single(ROW).label == "setosa"
                except PatternError:
                    return False

            assert wait_for(answers, 30, interval=0.3), "requests did not resume"
        assert [r.model for r in watchdog.recoveries] == ["iris_web_single"]
        assert watchdog.recoveries[0].recovered
    finally:
        watchdog.stop()
