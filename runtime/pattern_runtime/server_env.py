"""Where tritonserver's files are and the environment it runs in.

The embedded server is the tritonserver 2.51 binary of the `nvidia-pytriton` wheel; its Python
stubs run the server virtualenv's `python3` (`.venv-server`: the kernel package and the backends'
libraries, nothing else of the project). This module finds the wheel's files (binary, python
backend, stubs, bundled libraries) and the server virtualenv, and builds the server's environment
(PATH, LD_LIBRARY_PATH). A missing piece is a `TritonStartError` that says what to install or build.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from pattern_runtime import paths
from pattern_runtime.processes import StartError

SERVER_VENV_ENV = "TRITON_PATTERNS_SERVER_VENV"


class TritonStartError(StartError):
    """The server could not be started, or did not become ready; the message ends with its log tail."""


def wheel_dir() -> Path:
    """`site-packages/pytriton/tritonserver` of the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")  # locate without importing pytriton
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def python_version_tag(version: Sequence[int] | None = None) -> str:
    major, minor = (version or sys.version_info)[:2]
    return f"{major}.{minor}"


def stub_path(python_version: str | None = None) -> Path:
    """The wheel's `triton_python_backend_stub` for a Python version (default: the running one)."""
    version = python_version or python_version_tag()
    stubs = wheel_dir() / "python_backend_stubs"
    stub = stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in stubs.iterdir() if (p / "triton_python_backend_stub").is_file())
        raise TritonStartError(
            f"the nvidia-pytriton wheel has no Python backend stub for Python {version} "
            f"(it has: {', '.join(available) or 'none'}); run the launcher from a virtualenv "
            f"of one of those versions (project code in Triton must run on 3.10-3.12)"
        )
    return stub


def wheel_libs_dir() -> Path:
    """The wheel's bundled shared libraries (libtritonserver, libcudart, ...)."""
    installed = wheel_dir().parent.parent / "nvidia_pytriton.libs"
    return installed if installed.is_dir() else wheel_dir() / "external_libs"  # editable pytriton


def python_libdir() -> Path | None:
    """Directory of the running interpreter's `libpythonX.Y.so` (None for a static build)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlibrary = f"libpython{python_version_tag()}.so.1.0"
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and (Path(libdir) / ldlibrary).exists():
        return Path(libdir)
    return None


def _prepend(env: dict[str, str], name: str, value: str) -> None:
    env[name] = value + (os.pathsep + env[name] if env.get(name) else "")


def server_venv() -> Path:
    """The server virtualenv, whose `python3` the Python stubs run: `$TRITON_PATTERNS_SERVER_VENV`,
    else the checkout's `.venv-server` (`make server-venv`: the kernel package and the backends'
    pinned libraries, kernel/requirements.txt; nothing else of the project)."""
    return Path(os.environ.get(SERVER_VENV_ENV) or paths.PROJECT_ROOT / ".venv-server")


def server_python_bin(venv: Path | str | None = None) -> Path:
    """`venv/bin` (default `server_venv()`), checked: it has a `python3` of this interpreter's
    version (the stub is chosen for it and links its libpython). There is no fallback to the
    launcher's own virtualenv, where every project package would be importable in the server:
    TritonStartError says how to build the server virtualenv, or to name one."""
    venv = Path(venv) if venv is not None else server_venv()
    python = venv / "bin" / "python3"
    if not python.exists():
        raise TritonStartError(
            f"no server virtualenv at {venv} (its python3 runs the Python stubs): `make server-venv` builds it "
            f"(kernel/requirements.txt + the kernel package); ${SERVER_VENV_ENV}=PATH names another")
    cfg = venv / "pyvenv.cfg"
    version = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", cfg.read_text(), re.M) if cfg.is_file() else None
    if version and version.group(1) != python_version_tag():
        raise TritonStartError(
            f"the server virtualenv {venv} is Python {version.group(1)}, the launcher {python_version_tag()}: "
            f"the stub is the one for the launcher's Python; rebuild it (rm -rf {venv}; make server-venv)")
    return venv / "bin"


def server_env(extra: dict[str, str] | None = None, python_bin: Path | str | None = None) -> dict[str, str]:
    """Environment for the embedded server, so its Python stubs run the server virtualenv.

    * PATH starts with `python_bin` (default `server_python_bin()`): the stub builds `sys.path`
      from the first `python3` on PATH (it ignores PYTHONPATH), so models import that venv's
      packages, the kernel and the backends' libraries only.
    * LD_LIBRARY_PATH starts with this interpreter's libpython directory: the stub links
      `libpythonX.Y.so.1.0`; without it the system's copy (another patch release, or none)
      is loaded. Then the wheel's `nvidia_pytriton.libs` (as pytriton does): the python
      backend library and stub in the assembled directory find libtritonserver and
      libcudart there, their `$ORIGIN`-relative RPATH pointing nowhere from that place.
    """
    env = dict(os.environ)
    _prepend(env, "PATH", str(python_bin if python_bin is not None else server_python_bin()))
    _prepend(env, "LD_LIBRARY_PATH", str(wheel_libs_dir()))
    libdir = python_libdir()
    if libdir is not None:
        _prepend(env, "LD_LIBRARY_PATH", str(libdir))
    env.pop("PYTHONPATH", None)  # nothing of the launcher's world on the server's path
    env.update(extra or {})
    return env

