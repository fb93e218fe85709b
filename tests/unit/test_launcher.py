"""The Triton launcher: backend directory, command line, docker spec, and real start/stop/supervision."""

from __future__ import annotations

import filecmp
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pattern_runtime import launcher
from pattern_runtime.launcher import (
    DEFAULT_NGC_IMAGE,
    DockerTritonServer,
    TritonServer,
    TritonStartError,
    assemble_backend_directory,
    docker_available,
    docker_container_spec,
    server_env,
    wheel_dir,
)
from pattern_runtime.processes import group_members, http_status, wait_for

PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"

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
def project_backends(tmp_path: Path) -> Path:
    root = tmp_path / "project_backends"
    for name in ("onnxruntime", "router"):
        (root / name).mkdir(parents=True)
        (root / name / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (root / "not_a_backend").mkdir()  # no model.py: ignored
    return root


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
    return TritonServer(
        model_repository=repo,
        backend_directory=tmp_path / "backend_dir",
        log_dir=tmp_path / "logs",
        startup_timeout=60,
        **kwargs,
    )


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


# --------------------------------------------------------------------------- backend directory


def test_assemble_backend_directory(tmp_path, project_backends):
    target = assemble_backend_directory(tmp_path / "backends", project_backends)
    python = target / "python"
    wheel_python = wheel_dir() / "backends" / "python"
    expected = {
        "libtriton_python.so": wheel_python / "libtriton_python.so",
        "triton_python_backend_utils.py": wheel_python / "triton_python_backend_utils.py",
        "triton_python_backend_stub": wheel_dir() / "python_backend_stubs" / PYVER / "triton_python_backend_stub",
    }
    for name, source in expected.items():
        installed = python / name
        # real files (core rejects a libtriton_python.so whose real path leaves the directory)
        assert installed.is_file() and not installed.is_symlink()
        assert filecmp.cmp(installed, source, shallow=False)
    assert os.access(python / "triton_python_backend_stub", os.X_OK)

    linked = {p.name: p.resolve() for p in target.iterdir() if p.is_symlink()}
    assert linked == {"onnxruntime": (project_backends / "onnxruntime").resolve(),
                      "router": (project_backends / "router").resolve()}

    # rerun: idempotent, and a backend removed from the project disappears
    inode = (python / "libtriton_python.so").stat().st_ino
    (project_backends / "router" / "model.py").unlink()
    assemble_backend_directory(target, project_backends)
    assert sorted(p.name for p in target.iterdir()) == ["onnxruntime", "python"]
    assert (python / "libtriton_python.so").stat().st_ino == inode


def test_missing_stub_is_a_clear_error(tmp_path):
    with pytest.raises(TritonStartError, match=r"no Python backend stub for Python 3\.99.*3\.11"):
        assemble_backend_directory(tmp_path / "b", tmp_path, python_version="3.99")


def test_server_env_puts_the_server_venv_first(tmp_path):
    env = server_env({"EXTRA": "1"}, python_bin=tmp_path / "bin")
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "bin")
    assert "PYTHONPATH" not in env
    # this interpreter's libpython first (when shared), then the wheel's bundled libraries
    libdir = launcher.python_libdir()
    expected = ([str(libdir)] if libdir else []) + [str(launcher.wheel_libs_dir())]
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[: len(expected)] == expected
    assert list(launcher.wheel_libs_dir().glob("libtritonserver*.so"))
    assert env["EXTRA"] == "1"


# --------------------------------------------------------------------------- command line


def test_command_line(tmp_path, project_backends):
    server = TritonServer(
        model_repository=tmp_path,
        project_backends=project_backends,
        backend_directory=tmp_path / "bd",
        http_port=18000,
        grpc_port=18001,
        metrics_port=18002,
        cache_size_bytes=1024,
        log_verbose=1,
        extra_args=["--exit-timeout-secs=5"],
    )
    cmd = server.command()
    assert cmd[0] == str(wheel_dir() / "bin" / "tritonserver")
    for flag in (
        f"--model-repository={tmp_path.resolve()}",
        f"--backend-directory={tmp_path / 'bd'}",
        f"--cache-directory={wheel_dir() / 'caches'}",
        "--cache-config=local,size=1024",
        "--http-address=127.0.0.1", "--http-port=18000",
        "--grpc-address=127.0.0.1", "--grpc-port=18001",
        "--metrics-address=127.0.0.1", "--metrics-port=18002",
        "--strict-readiness=true", "--exit-on-error=true", "--allow-metrics=true",
        "--model-control-mode=explicit", "--load-model=*", "--log-verbose=1",
        f"--backend-config=python,shm-region-prefix-name={server.shm_prefix}",
    ):
        assert flag in cmd
    assert cmd[-1] == "--exit-timeout-secs=5"
    assert (server.http_url, server.grpc_url) == ("127.0.0.1:18000", "127.0.0.1:18001")
    assert server.metrics_url == "http://127.0.0.1:18002/metrics"


def test_command_line_defaults_and_model_control(tmp_path):
    server = TritonServer(model_repository=tmp_path, project_backends=tmp_path,
                          model_control_mode="explicit", load_models=["a", "b"], cache_size_bytes=None)
    cmd = server.command()
    assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
    assert "--model-control-mode=explicit" in cmd
    assert cmd.count("--load-model=a") == cmd.count("--load-model=b") == 1
    assert not any(a.startswith("--cache-config") for a in cmd)
    assert "--repository-poll-secs=7" in TritonServer(
        model_repository=tmp_path, project_backends=tmp_path, model_control_mode="poll", repository_poll_secs=7
    ).command()
    with pytest.raises(ValueError):
        TritonServer(model_repository=tmp_path, model_control_mode="sometimes")
    with pytest.raises(ValueError):
        TritonServer(model_repository=tmp_path, model_control_mode="none", load_models=["a"])
    default = TritonServer(model_repository=tmp_path, project_backends=tmp_path).command()
    assert "--model-control-mode=explicit" in default and "--load-model=*" in default  # every model, reloadable


# --------------------------------------------------------------------------- docker spec


def test_docker_spec(tmp_path, project_backends):
    spec = docker_container_spec(model_repository=tmp_path, project_backends=project_backends,
                                 http_port=9000, grpc_port=9001, metrics_port=9002)
    assert spec["image"] == DEFAULT_NGC_IMAGE == "nvcr.io/nvidia/tritonserver:25.10-py3"
    assert spec["command"][:3] == ["tritonserver", "--model-repository=/models",
                                   "--backend-directory=/opt/tritonserver/backends"]
    assert "--strict-readiness=true" in spec["command"]
    binds = {v["bind"]: (k, v["mode"]) for k, v in spec["volumes"].items()}
    assert binds["/models"] == (str(tmp_path.resolve()), "ro")
    assert binds["/opt/tritonserver/backends/router"] == (str((project_backends / "router").resolve()), "ro")
    assert "/opt/tritonserver/backends/onnxruntime" not in binds  # the image has the native one
    assert binds[launcher.CONTAINER_PACKAGE][0] == str(launcher.KERNEL_DIR)
    assert spec["ports"] == {"8000/tcp": ("127.0.0.1", 9000), "8001/tcp": ("127.0.0.1", 9001),
                             "8002/tcp": ("127.0.0.1", 9002)}
    assert spec["shm_size"] == "1g"
    assert spec["detach"] is True and spec["auto_remove"] is True
    assert spec["labels"]["app"] == "triton-patterns" and spec["name"]
    assert "device_requests" not in spec


@pytest.mark.parametrize("gpus, count, ids", [(True, -1, None), ("all", -1, None), ("0,1", None, ["0", "1"])])
def test_docker_spec_gpus(tmp_path, gpus, count, ids):
    spec = docker_container_spec(model_repository=tmp_path, project_backends=tmp_path, gpus=gpus,
                                 image="nvcr.io/nvidia/tritonserver:24.10-py3", shm_size="2g")
    (request,) = spec["device_requests"]
    assert request["Capabilities"] == [["gpu"]]
    if count is not None:
        assert request["Count"] == count
    else:
        assert request["DeviceIDs"] == ids
    assert spec["image"].endswith("24.10-py3") and spec["shm_size"] == "2g"


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
