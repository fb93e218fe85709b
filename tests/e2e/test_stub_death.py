"""A Python model's stub process dies: stock Triton keeps the model READY while every request
fails; the project's stub check reports it, and the watchdog reloads it so requests resume. Unloads
and loads made through the repository API (an operator, model-analyzer) are not deaths: the
watchdog leaves them alone. A server whose repository API saw a failed load still stops without
a SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests

from pattern_kernel import probe
from pattern_runtime import paths
from pattern_runtime.launcher import TritonServer
from pattern_runtime.processes import wait_for
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.stub_watchdog import RELOAD_PARAMETER, StubWatchdog
from triton_patterns.client import PatternClient, PatternError

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    # explicit model control (the launcher's default), two models only: a quick start. The model
    # unloaded with its dead stub is never freed, so the server's shutdown waits out its exit
    # timeout: 5 s here instead of 30.
    with TritonServer(ServerSettings(load_models=["iris", "iris_web_single", "iris_vote"],
                                     log_dir=tmp_path_factory.mktemp("logs"),
                                     extra_args=["--exit-timeout-secs=5"])) as server:
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
        response = _load_with_config(small_server, model,
                                     dict(config, instance_group=[{"count": 2, "kind": "KIND_CPU"}]))
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
    server = TritonServer(ServerSettings(model_repository=repo, load_models=["iris"], cache_size_bytes=None,
                                         log_dir=tmp_path))
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


# --------------------------------------------------------------------------- readiness during a reload

PROBE_ROW = [float(v) for v in probe.SETOSA.split(",")]


def _probe(server, model: str, expect: dict[str, str]) -> list[str]:
    return probe.probe(server.http_url, [model], "FEATURES", PROBE_ROW, expect, timeout=10)


def _stubs_by_version(server, model: str) -> dict[str, int]:
    """{version: stub pid} of one model (a stub's argv[1] is <repository>/<model>/<version>/model.py)."""
    found = {}
    for pid in server.stub_pids().get(model, []):
        with contextlib.suppress(OSError):
            found[Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1].decode()).parent.name] = pid
    return found


class Traffic:
    """Threads calling until stopped: the server's readiness (HTTP) and models over HTTP and gRPC;
    counts each call's outcome per name ("ok" or the error)."""

    def __init__(self, server, calls: dict[str, tuple[str, callable]]):
        self.server, self.calls = server, calls
        self.outcomes: dict[str, Counter] = {name: Counter() for name in [*calls, "health"]}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._health, daemon=True)]
        self.threads += [threading.Thread(target=self._call, args=(name,), daemon=True) for name in calls]

    def _health(self):
        with requests.Session() as session:
            while not self.stop.wait(0.05):
                try:
                    status = session.get(f"http://{self.server.http_url}/v2/health/ready", timeout=10).status_code
                    self.outcomes["health"]["ok" if status == 200 else f"HTTP {status}"] += 1
                except requests.RequestException as exc:
                    self.outcomes["health"][type(exc).__name__] += 1

    def _call(self, name: str):
        protocol, call = self.calls[name]
        url = self.server.http_url if protocol == "http" else self.server.grpc_url
        with PatternClient(url, protocol=protocol) as client:
            while not self.stop.wait(0.02):
                try:
                    call(client)
                    self.outcomes[name]["ok"] += 1
                except Exception as exc:  # noqa: BLE001 - every failed call is counted, none ends the thread
                    self.outcomes[name][str(exc)[:120]] += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def failures(self) -> dict[str, dict[str, int]]:
        return {name: {k: n for k, n in c.items() if k != "ok"} for name, c in self.outcomes.items()
                if set(c) - {"ok"} or not c["ok"]}


def _iris(version: int):
    def call(client):
        label = client.synchronous(ROW, version=version).label
        if label != "setosa":
            raise AssertionError(f"iris v{version} answered {label}")
    return call


def test_during_the_watchdogs_reload_the_server_stays_ready_and_the_other_models_answer(small_server):
    """A stub killed: the server's readiness stays 200 from the kill to the end of the reload, the
    other models answer over HTTP and gRPC throughout, the dead model's probe fails, then passes."""
    web_single = {"CLASS_ID": "0"}
    assert _probe(small_server, "iris_web_single", web_single) == []
    calls = {f"iris v2 {p}": (p, _iris(2)) for p in ("http", "grpc")}
    with Traffic(small_server, calls) as traffic:
        watchdog = StubWatchdog(small_server, interval=0.5)  # follows the stubs from here on
        _kill_stub(small_server, "iris_web_single")
        [dead] = _probe(small_server, "iris_web_single", web_single)
        assert "not healthy" in dead  # the probe fails while its model's readiness stays 200 (2.51)
        assert _probe(small_server, "iris", {"LABEL": "0"}) == []
        watchdog.start()
        try:
            assert wait_for(lambda: watchdog.recoveries, 60, interval=0.1), "the watchdog reported no recovery"
        finally:
            watchdog.stop()
        assert _probe(small_server, "iris_web_single", web_single) == []
    assert traffic.failures() == {}, traffic.outcomes
    [recovery] = watchdog.recoveries
    assert (recovery.model, recovery.recovered, recovery.how) == ("iris_web_single", True, "reload")
    assert all(traffic.outcomes[name]["ok"] > 10 for name in traffic.outcomes), traffic.outcomes


def test_a_dead_version_is_reloaded_without_taking_the_other_version_or_the_ensemble_away(small_server):
    """Triton reloads a model with all its versions (new stubs for both) and the ensembles over it,
    but in the background: iris v2 answers throughout over HTTP and gRPC, the server stays ready,
    and once v1 is back the ensemble over both versions answers again."""
    before = _stubs_by_version(small_server, "iris")
    calls = {f"iris v2 {p}": (p, _iris(2)) for p in ("http", "grpc")}
    with PatternClient(small_server.http_url) as client, Traffic(small_server, calls) as traffic:
        watchdog = StubWatchdog(small_server, interval=0.5)  # follows the stubs from here on
        os.kill(before["1"], signal.SIGKILL)
        with pytest.raises(PatternError, match="not healthy"):
            client.synchronous(ROW, version=1)
        watchdog.start()
        try:
            assert wait_for(lambda: watchdog.recoveries, 60, interval=0.1), "the watchdog reported no recovery"
        finally:
            watchdog.stop()
        assert client.synchronous(ROW, version=1).label == "setosa"
        assert client.predict("parallel_ensemble", ROW)[0].label == "setosa"
    assert traffic.failures() == {}, traffic.outcomes
    assert [(r.model, r.recovered, r.how) for r in watchdog.recoveries] == [("iris", True, "reload")]
    after = _stubs_by_version(small_server, "iris")
    assert set(after) == {"1", "2"} and not set(after.values()) & set(before.values())  # both versions anew
    config = requests.get(f"http://{small_server.http_url}/v2/models/iris/config", timeout=10).json()
    assert RELOAD_PARAMETER in config["parameters"]  # the reload's mark: the config changed, so Triton reloaded


def test_a_model_loading_or_unloading_leaves_the_server_ready(small_server):
    """What strict readiness turned into a whole-server outage: a model in LOADING or UNLOADING state
    (the watchdog's fallback unload and load, an operator's load) made /v2/health/ready 400."""
    with Traffic(small_server, {}) as traffic:
        assert small_server.reload_model("iris_failing") and small_server.model_ready("iris_failing")
        assert small_server.unload_model("iris_failing")
        assert wait_for(lambda: "iris_failing" not in small_server.stub_pids(), 30, interval=0.05)
    assert traffic.failures() == {}, traffic.outcomes
    assert traffic.outcomes["health"]["ok"] > 5
