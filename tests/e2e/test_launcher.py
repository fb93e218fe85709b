"""The Triton launcher with real servers: start, serve, stop, start failures, taken ports, supervision,
Docker (the parts without a process: tests/unit/test_launcher_spec.py)."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pattern_runtime.docker_server import DEFAULT_NGC_IMAGE, DockerTritonServer, docker_available
from pattern_runtime.launcher import TritonServer
from pattern_runtime.processes import group_members, http_status, wait_for
from pattern_runtime.server_env import TritonStartError, python_version_tag, server_env
from pattern_runtime.server_settings import ServerSettings

pytestmark = pytest.mark.e2e

IDENTITY_CONFIG = """
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

IDENTITY_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""

BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("broken on purpose for the launcher test")
"""


def write_model(repo: Path, name: str, model_py: str, config: str = IDENTITY_CONFIG) -> Path:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(model_py))
    return repo


@pytest.fixture
def identity_repo(tmp_path: Path) -> Path:
    return write_model(tmp_path / "repo", "identity", IDENTITY_MODEL)


@pytest.fixture
def echo_backend(tmp_path: Path) -> Path:
    """A project backends/ folder with one Python-based backend, `echo` (the identity model.py)."""
    root = tmp_path / "project_backends_echo"
    (root / "echo").mkdir(parents=True)
    (root / "echo" / "model.py").write_text(textwrap.dedent(IDENTITY_MODEL))
    return root


def embedded(tmp_path: Path, repo: Path, **kwargs) -> TritonServer:
    kwargs.setdefault("project_backends", tmp_path / "no_project_backends")
    return TritonServer(ServerSettings(
        model_repository=repo,
        backend_directory=tmp_path / "backend_dir",
        log_dir=tmp_path / "logs",
        **{"startup_timeout": 60, **kwargs},
    ))


@pytest.fixture
def stopper():
    """Collects servers; stops every one at the end of the test, whatever happened."""
    servers = []
    yield servers.append
    for server in servers:
        server.stop(timeout=10)


def shm_regions(server: TritonServer) -> int:
    return len(list(Path("/dev/shm").glob(f"{server.shm_prefix}*")))


def assert_gone(pid: int) -> None:
    assert group_members(pid) == [], f"processes left in group {pid}"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --------------------------------------------------------------------------- real server


def test_start_serve_stop(tmp_path, identity_repo, echo_backend, stopper):
    # "identity" uses the python backend; "echoed" the Python-based backend `echo`
    write_model(identity_repo, "echoed", "", IDENTITY_CONFIG.replace('"python"', '"echo"'))
    (identity_repo / "echoed" / "1" / "model.py").unlink()
    server = embedded(tmp_path, identity_repo, project_backends=echo_backend)
    stopper(server)
    with server:
        pid = server.pid
        assert server.is_running() and server.is_ready()
        server.wait_ready_models(["identity", "echoed"], timeout=10)
        assert sorted(m["name"] for m in server.model_index()) == ["echoed", "identity"]
        assert http_status(server.metrics_url) == 200

        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(server.http_url)
        data = np.arange(6, dtype=np.float32).reshape(2, 3)
        tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        for model in ("identity", "echoed"):
            np.testing.assert_array_equal(client.infer(model, [tensor]).as_numpy("OUTPUT0"), data)
        client.close()
        assert len(group_members(pid)) >= 3  # the server and one Python stub per model
    assert not server.is_running()
    assert_gone(pid)
    assert http_status(f"http://{server.http_url}/v2/health/live", timeout=1) is None
    assert "Started HTTPService" in server.log_tail(200)


def test_start_failure_bad_flag(tmp_path, stopper):
    (tmp_path / "empty").mkdir()
    server = embedded(tmp_path, tmp_path / "empty", extra_args=["--no-such-flag=1"])
    stopper(server)
    with pytest.raises(TritonStartError, match=r"exited during startup \(exit code \d+\)") as err:
        server.start()
    assert "no-such-flag" in str(err.value)  # tritonserver's own complaint, from the log tail
    assert not server.is_running()


def test_start_failure_broken_model(tmp_path, stopper):
    repo = write_model(tmp_path / "repo", "broken", BROKEN_MODEL)
    server = embedded(tmp_path, repo)
    stopper(server)
    with pytest.raises(TritonStartError, match="exited during startup") as err:
        server.start()
    assert "broken on purpose" in str(err.value)
    assert_gone(server.pid)


def test_a_stub_that_cannot_start_is_an_error_at_once(tmp_path, identity_repo, stopper):
    """A stub the loader cannot start (here its libpython is an empty file first on the loader's path)
    dies before it reaches the server, whose load then waits for it for ever with nothing more in
    the log: the launcher gives the loader's line long before the startup timeout."""
    broken = tmp_path / "broken_libpython"
    broken.mkdir()
    (broken / f"libpython{python_version_tag()}.so.1.0").write_bytes(b"")
    library_path = f"{broken}{os.pathsep}{server_env()['LD_LIBRARY_PATH']}"
    server = embedded(tmp_path, identity_repo, env={"LD_LIBRARY_PATH": library_path}, startup_timeout=600)
    stopper(server)
    with pytest.raises(TritonStartError) as err:
        server.start()
    first_line, log_line = str(err.value).splitlines()
    assert first_line.startswith("a Python backend stub cannot start: ")
    assert f"error while loading shared libraries: {broken}/libpython{python_version_tag()}.so.1.0" in first_line
    assert log_line == f"log: {server.log_path}"
    assert_gone(server.pid)


def test_the_start_waits_for_every_model_not_the_servers_readiness_alone(tmp_path, stopper):
    """The server's readiness is not strict: without exit_on_error it is 200 beside a model that
    failed to load. The start still waits for each model it loaded, and names the one not ready."""
    repo = write_model(tmp_path / "repo", "broken", BROKEN_MODEL)
    write_model(repo, "identity", IDENTITY_MODEL)
    server = embedded(tmp_path, repo, exit_on_error=False, startup_timeout=15)
    stopper(server)
    with pytest.raises(TritonStartError, match=r"not ready after \d+s .*; models not ready: broken \(") as err:
        server.start()
    assert "broken on purpose" in str(err.value)  # the load's error, from the log


@pytest.mark.parametrize("port", ["http_port", "grpc_port", "metrics_port"])
def test_a_port_taken_between_choosing_and_binding_gets_new_free_ports(tmp_path, identity_repo, stopper, port):
    """tritonserver exits on a taken HTTP or gRPC port but only logs a taken metrics port: either
    way the launcher starts it again on new free ports (only those it chose itself)."""
    server = embedded(tmp_path, identity_repo)
    stopper(server)
    chosen = getattr(server, port)
    with socket.socket() as squatter:  # another process binds the chosen port first
        squatter.bind(("127.0.0.1", chosen))
        squatter.listen()
        server.start()
        assert getattr(server, port) != chosen
        assert server.is_ready() and http_status(server.metrics_url) == 200
        server.wait_ready_models(["identity"], timeout=10)
    assert f"'127.0.0.1:{chosen}' already in use" in server.log_tail(5000)


def test_a_port_given_and_taken_is_an_error_naming_it(tmp_path, identity_repo, stopper):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = embedded(tmp_path, identity_repo, metrics_port=taken)
        stopper(server)
        with pytest.raises(TritonStartError, match=rf"port {taken} already in use \(ports: HTTP \d+, gRPC \d+, "
                                                   rf"metrics {taken}; pid \d+"):
            server.start()
    assert not server.is_running()


def test_a_stop_that_waits_its_exit_timeout_says_what_for(tmp_path, identity_repo, stopper, caplog):
    """tritonserver drains open HTTP connections on SIGTERM: a client that keeps one open makes it
    wait its whole exit timeout (then the models get no time and stay "live"). The launcher names
    that wait, not the stage that merely ran out of time after it."""
    server = embedded(tmp_path, identity_repo, extra_args=["--exit-timeout-secs=2"])
    stopper(server)
    server.start()
    with socket.create_connection(("127.0.0.1", server.http_port)) as kept_open:
        kept_open.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {server.http_url}\r\n\r\n".encode())
        assert b"200 OK" in kept_open.recv(4096)
        with caplog.at_level("WARNING", logger="pattern_runtime.launcher"):
            server.stop()
    assert not server.is_running()
    (warning,) = [r.getMessage() for r in caplog.records if "exit timeout" in r.getMessage()]
    assert "waited its whole exit timeout (2s) for 1 HTTP service connections (a client kept its HTTP " \
           "connection open)" in warning
    assert "live models" not in warning


def test_supervision_restarts_after_segv(tmp_path, identity_repo, stopper):
    reported = []
    server = embedded(tmp_path, identity_repo, restart_on_death=True, restart_backoff=0.2,
                      on_death=reported.append)
    stopper(server)
    server.start()
    first_pid, port = server.pid, server.http_port
    os.kill(first_pid, signal.SIGSEGV)

    assert wait_for(lambda: server.pid != first_pid and server.is_ready(), timeout=60)
    (death,) = server.deaths
    assert reported == [death]
    assert death.pid == first_pid and death.signal == "SIGSEGV" and death.restarting
    assert "killed by SIGSEGV" in str(death)
    assert "Signal (11) received" in death.log_tail
    assert server.http_port == port and server.restarts == 1
    server.wait_ready_models(["identity"], timeout=10)
    assert_gone(first_pid)  # the crashed server's stub was cleaned up too
    assert shm_regions(server) == 1  # the crashed server's region was unlinked; the new one's is there

    second_pid = server.pid
    server.stop()
    assert_gone(second_pid)
    assert len(server.deaths) == 1  # stop() is not a death
    assert shm_regions(server) == 0


def test_a_restart_that_hangs_on_a_stub_that_cannot_start_is_a_death_not_a_wait(tmp_path, identity_repo, stopper):
    """The first start is good; the restart's stub cannot load its libpython, so that server would
    wait for it for ever: it is ended and reported as the next death, and past the limit the
    supervisor gives up instead of waiting on it."""
    # a hung restart must be noticed long before the startup timeout
    server = embedded(tmp_path, identity_repo, restart_on_death=True, max_restarts=1, restart_backoff=0.2,
                      startup_timeout=600)
    stopper(server)
    server.start()
    broken = tmp_path / "broken_libpython"
    broken.mkdir()
    (broken / f"libpython{python_version_tag()}.so.1.0").write_bytes(b"")
    server.extra_env["LD_LIBRARY_PATH"] = f"{broken}{os.pathsep}{server_env()['LD_LIBRARY_PATH']}"
    os.kill(server.pid, signal.SIGKILL)

    assert wait_for(lambda: server.gave_up, timeout=120), [str(d) for d in server.deaths]
    first, second = server.deaths
    assert first.signal == "SIGKILL" and first.restarting
    assert not second.restarting and server.restarts == 1
    assert "error while loading shared libraries" in second.log_tail
    assert_gone(second.pid)


def test_supervision_without_restart_reports_and_gives_up(tmp_path, identity_repo, stopper):
    server = embedded(tmp_path, identity_repo)
    stopper(server)
    server.start()
    pid = server.pid
    assert shm_regions(server) == 1
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: server.gave_up, timeout=10)
    (death,) = server.deaths
    assert death.signal == "SIGKILL" and not death.restarting
    assert not server.is_running()
    assert_gone(pid)  # its orphaned Python stub was killed
    assert shm_regions(server) == 0


# --------------------------------------------------------------------------- docker


DOCKER_OK, DOCKER_WHY = docker_available(timeout=2)


def test_docker_available_reports_a_reason():
    ok, reason = docker_available(timeout=2)
    assert isinstance(ok, bool) and reason


@pytest.mark.skipif(not DOCKER_OK, reason=f"Docker not available: {DOCKER_WHY}")
def test_docker_run(identity_repo, stopper):
    server = DockerTritonServer(model_repository=identity_repo, image=os.environ.get("TRITON_IMAGE", DEFAULT_NGC_IMAGE))
    stopper(server)
    with server:
        assert server.is_ready()
        server.wait_ready_models(["identity"], timeout=60)
    assert not server.is_running()


@pytest.mark.skipif(DOCKER_OK, reason="a Docker engine is available")
def test_docker_start_without_engine_is_a_clear_error(tmp_path):
    server = DockerTritonServer(model_repository=tmp_path, project_backends=tmp_path)
    with pytest.raises(TritonStartError, match="no Docker engine reachable"):
        server.start()
    assert not server.is_running()
