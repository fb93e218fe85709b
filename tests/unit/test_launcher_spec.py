"""The Triton launcher without a process: backend directory, server environment, command line,
docker spec (starting, serving, stopping and supervising real servers: tests/e2e/test_launcher.py)."""

from __future__ import annotations

import filecmp
import os
import sys
from pathlib import Path

import pytest

from pattern_runtime import docker_server
from pattern_runtime import server_env as environment
from pattern_runtime.backend_folder import assemble_backend_directory
from pattern_runtime.docker_server import DEFAULT_NGC_IMAGE, docker_container_spec
from pattern_runtime.launcher import TRITON_EXIT_TIMEOUT_S, TritonServer
from pattern_runtime.server_env import TritonStartError, server_env, wheel_dir
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.triton_log import stub_start_failure

PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture
def project_backends(tmp_path: Path) -> Path:
    root = tmp_path / "project_backends"
    for name in ("onnxruntime", "router"):
        (root / name).mkdir(parents=True)
        (root / name / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (root / "not_a_backend").mkdir()  # no model.py: ignored
    return root


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
        # copies: tritonserver's chmod of a stub that fails to run stays out of the wheel
        assert not os.path.samefile(installed, source)
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


def test_a_hard_link_left_by_an_earlier_assembly_is_replaced_by_a_copy(tmp_path, project_backends):
    target = assemble_backend_directory(tmp_path / "backends", project_backends)
    stub = target / "python" / "triton_python_backend_stub"
    source = wheel_dir() / "python_backend_stubs" / PYVER / "triton_python_backend_stub"
    stub.unlink()
    os.link(source, stub)
    assemble_backend_directory(target, project_backends)
    assert not os.path.samefile(stub, source) and filecmp.cmp(stub, source, shallow=False)


# what the loader wrote for the stub in a bare Debian 12 container without libpython3.11 (docs/reliability.md)
MISSING_LIBPYTHON = ("/work/project/build/backends-py3.11/python/triton_python_backend_stub: error while loading "
                     "shared libraries: libpython3.11.so.1.0: cannot open shared object file: "
                     "No such file or directory")


def test_a_stub_start_failure_is_found_in_the_log_with_what_to_install():
    log = f'I1207 05:12:18.779992 16270 model_lifecycle.cc:472] "loading: identity:1"\n{MISSING_LIBPYTHON}\n'
    reason = stub_start_failure(log)
    assert reason == (f"a Python backend stub cannot start: {MISSING_LIBPYTHON} (the stub links the shared library "
                      "of the Python that made the server virtualenv; Debian: apt-get install libpython3.11)")
    other = ("/x/triton_python_backend_stub: error while loading shared libraries: "
             "/y/libpython3.11.so.1.0: file too short")
    assert stub_start_failure(other) == f"a Python backend stub cannot start: {other}"
    assert stub_start_failure('I1207 model_lifecycle.cc:472] "loading: identity:1"\n') is None


def test_missing_stub_is_a_clear_error(tmp_path):
    with pytest.raises(TritonStartError, match=r"no Python backend stub for Python 3\.99.*3\.11"):
        assemble_backend_directory(tmp_path / "b", tmp_path, python_version="3.99")


def test_server_env_puts_the_server_venv_first(tmp_path):
    env = server_env({"EXTRA": "1"}, python_bin=tmp_path / "bin")
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "bin")
    assert "PYTHONPATH" not in env
    # this interpreter's libpython first (when shared), then the wheel's bundled libraries
    libdir = environment.python_libdir()
    expected = ([str(libdir)] if libdir else []) + [str(environment.wheel_libs_dir())]
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[: len(expected)] == expected
    assert list(environment.wheel_libs_dir().glob("libtritonserver*.so"))
    assert env["EXTRA"] == "1"


# --------------------------------------------------------------------------- command line


def test_command_line(tmp_path, project_backends):
    server = TritonServer(ServerSettings(
        model_repository=tmp_path,
        project_backends=project_backends,
        backend_directory=tmp_path / "bd",
        http_port=18000,
        grpc_port=18001,
        metrics_port=18002,
        cache_size_bytes=1024,
        log_verbose=1,
        extra_args=["--exit-timeout-secs=5"],
    ))
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
        "--strict-readiness=false", "--exit-on-error=true", "--allow-metrics=true",
        "--model-control-mode=explicit", "--load-model=*", "--log-verbose=1", "--model-load-thread-count=16",
        f"--backend-config=python,shm-region-prefix-name={server.shm_prefix}",
    ):
        assert flag in cmd
    assert cmd[-1] == "--exit-timeout-secs=5"
    assert (server.http_url, server.grpc_url) == ("127.0.0.1:18000", "127.0.0.1:18001")
    assert server.metrics_url == "http://127.0.0.1:18002/metrics"


def test_command_line_defaults_and_model_control(tmp_path):
    server = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path,
                          model_control_mode="explicit", load_models=["a", "b"], cache_size_bytes=None))
    cmd = server.command()
    assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
    assert "--model-control-mode=explicit" in cmd
    assert cmd.count("--load-model=a") == cmd.count("--load-model=b") == 1
    assert not any(a.startswith("--cache-config") for a in cmd)
    assert "--repository-poll-secs=7" in TritonServer(ServerSettings(
        model_repository=tmp_path, project_backends=tmp_path, model_control_mode="poll", repository_poll_secs=7
    )).command()
    with pytest.raises(ValueError):
        TritonServer(ServerSettings(model_repository=tmp_path, model_control_mode="sometimes"))
    with pytest.raises(ValueError):
        TritonServer(ServerSettings(model_repository=tmp_path, model_control_mode="none", load_models=["a"]))
    default = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path)).command()
    assert "--model-control-mode=explicit" in default and "--load-model=*" in default  # every model, reloadable


def test_the_start_waits_for_the_models_loaded_at_start(tmp_path):
    """The server's readiness is not strict, so the start waits for these models one by one."""
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text("")
    (tmp_path / "not_a_model").mkdir()
    every = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path))
    assert every.start_models() == ["a", "b"]  # "*": every model folder
    only_b = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path, load_models=["b"]))
    assert only_b.start_models() == ["b"]
    assert TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path, model_control_mode="none",
                        )).start_models() == ["a", "b"]


# --------------------------------------------------------------------------- docker spec


def test_docker_spec(tmp_path, project_backends):
    spec = docker_container_spec(model_repository=tmp_path, project_backends=project_backends,
                                 http_port=9000, grpc_port=9001, metrics_port=9002)
    assert spec["image"] == DEFAULT_NGC_IMAGE == "nvcr.io/nvidia/tritonserver:25.10-py3"
    assert spec["command"][:3] == ["tritonserver", "--model-repository=/models",
                                   "--backend-directory=/opt/tritonserver/backends"]
    assert "--strict-readiness=false" in spec["command"]
    binds = {v["bind"]: (k, v["mode"]) for k, v in spec["volumes"].items()}
    assert binds["/models"] == (str(tmp_path.resolve()), "ro")
    assert binds["/opt/tritonserver/backends/router"] == (str((project_backends / "router").resolve()), "ro")
    assert "/opt/tritonserver/backends/onnxruntime" not in binds  # the image has the native one
    assert binds[docker_server.CONTAINER_PACKAGE][0] == str(docker_server.KERNEL_DIR)
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


@pytest.mark.parametrize("extra_args, seconds", [
    ([], None),  # none: Triton's default
    (["--exit-timeout-secs=5"], 5.0),
    (["--log-verbose=1", "--exit-timeout-secs", "7"], 7.0),
])
def test_exit_timeout_is_read_from_the_extra_flags(tmp_path, extra_args, seconds):
    server = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path, extra_args=extra_args))
    assert server.exit_timeout_s == (TRITON_EXIT_TIMEOUT_S if seconds is None else seconds)
