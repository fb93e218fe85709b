"""A Python model's stub process dies: stock Triton keeps the model READY while every request
fails; the project's stub check reports it, and the watchdog reloads it so requests resume. Unloads
and loads made through the repository API (an operator, model-analyzer) are not deaths: the
watchdog leaves them alone. A server whose repository API saw a failed load still stops without
a SIGKILL."""

from __future__ import annotations

import json
import os
import signal

import pytest
import requests

from pattern_runtime.launcher import TritonServer
from pattern_runtime.processes import wait_for
from pattern_runtime.stub_watchdog import StubWatchdog
from triton_patterns import paths
from triton_patterns.client import PatternClient, PatternError

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
        # the model answers as soon as its reload is ready; the watchdog's thread records the
        # recovery a moment later, once it has read the new stub's pid
        assert wait_for(lambda: watchdog.recoveries, 10, interval=0.1), "the watchdog reported no recovery"
        assert [r.model for r in watchdog.recoveries] == ["iris_web_single"]
        assert watchdog.recoveries[0].recovered
    finally:
        watchdog.stop()


def _load_with_config(server, model: str, config: dict) -> requests.Response:
    """A load with a config override through the repository API, as model-analyzer loads its variants."""
    return requests.post(f"http://{server.http_url}/v2/repository/models/{model}/load",
                         json={"parameters": {"config": json.dumps(config)}}, headers=server.access.headers(),
                         timeout=120)


def _config(server, model: str) -> dict:
    response = requests.get(f"http://{server.http_url}/v2/models/{model}/config", headers=server.access.headers(),
                            timeout=10)
    response.raise_for_status()
    return response.json()


def test_watchdog_leaves_unloads_and_loads_through_the_repository_api_alone(small_server):
    model = "iris_web_single"
    config = _config(small_server, model)
    watchdog = StubWatchdog(small_server, interval=0.5).start()
    try:
        # the operator unloads the model: its stub goes, and it must stay unloaded
        assert small_server.unload_model(model)
        assert wait_for(lambda: model not in small_server.stub_pids(), 30, interval=0.1)
        assert watchdog.check_once() == []
        assert not small_server.model_ready(model)

        # a variant with two instances, loaded with a config override (model-analyzer's way)
        response = _load_with_config(small_server, model, dict(config, instance_group=[{"count": 2, "kind": "KIND_CPU"}]))
        assert response.status_code == 200, response.text
        assert watchdog.check_once() == []
        assert len(small_server.stub_pids()[model]) == 2

        # the original config again (a plain load would keep the variant: the files did not change)
        response = _load_with_config(small_server, model, config)
        assert response.status_code == 200, response.text
        assert wait_for(lambda: len(small_server.stub_pids().get(model, [])) == 1, 30, interval=0.1)
        assert watchdog.check_once() == []
        with PatternClient(small_server.http_url) as client:
            assert client.web_single(ROW).label == "setosa"

            # a real death is still one
            pid = _kill_stub(small_server, model)
            assert wait_for(lambda: any(r.model == model for r in watchdog.recoveries), 30, interval=0.2)
            assert client.web_single(ROW).label == "setosa"
        assert [(r.model, r.dead_pids, r.recovered) for r in watchdog.recoveries] == [(model, (pid,), True)]
    finally:
        watchdog.stop()


def test_stop_after_a_failed_load_through_the_repository_api_needs_no_sigkill(tmp_path, caplog):
    """A load the server refuses (model-analyzer's KIND_GPU variant on a CPU-only host) leaves the
    failed Python-based model alive in 2.51: its shutdown waits out the exit timeout ("Found 1 live
    models"). stop() lets it, rather than SIGKILLing it at a deadline of the same length."""
    repo = tmp_path / "repository"
    repo.mkdir()
    (repo / "iris").symlink_to(paths.MODEL_REPOSITORY / "iris")
    server = TritonServer(model_repository=repo, load_models=["iris"], cache_size_bytes=None, log_dir=tmp_path)
    server.start()
    try:
        config = _config(server, "iris")
        response = _load_with_config(server, "iris", dict(config, instance_group=[{"count": 1, "kind": "KIND_GPU"}]))
        if response.status_code == 200:
            pytest.skip("this host has a GPU: the KIND_GPU variant loaded, nothing failed")
        assert response.status_code == 400 and "KIND_GPU" in response.text
        # model-analyzer's own cycle around a variant: unload, load (the repository's config)
        assert server.unload_model("iris") and server.reload_model("iris") and server.model_ready("iris")
    finally:
        returncode = server.stop()
    assert not server.is_running()
    assert not [r.message for r in caplog.records if "SIGKILL" in r.message]
    assert returncode != -signal.SIGKILL, f"tritonserver was SIGKILLed; last lines of {server.log_path}:\n" \
                                           f"{server.log_tail(15)}"
