"""The server virtualenv (.venv-server): its pins agree with requirements.txt, and the launcher
refuses to start a server without it (or with one of another Python) instead of falling back to
its own virtualenv, where every project package is importable."""

from __future__ import annotations

import re

import pytest

from pattern_runtime import paths
from pattern_runtime.server_env import SERVER_VENV_ENV, TritonStartError, python_version_tag, server_python_bin

PIN = re.compile(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)", re.M)


def pins(path) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(path.read_text())}


def test_kernel_requirements_are_pinned_as_the_project_pins_them():
    kernel = pins(paths.PROJECT_ROOT / "kernel" / "requirements.txt")
    project = pins(paths.PROJECT_ROOT / "requirements.txt")
    assert kernel and {name: project.get(name) for name in kernel} == kernel


def _venv(root, version: str):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python3").touch()
    (root / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {version}.3\n")
    return root


def test_the_server_venv_is_found_by_environment(tmp_path, monkeypatch):
    venv = _venv(tmp_path / "v", python_version_tag())
    monkeypatch.setenv(SERVER_VENV_ENV, str(venv))
    assert server_python_bin() == venv / "bin"


def test_a_missing_server_venv_is_a_clear_error(tmp_path):
    with pytest.raises(TritonStartError, match=r"no server virtualenv at .*make server-venv"):
        server_python_bin(tmp_path / "absent")


def test_a_server_venv_of_another_python_is_refused(tmp_path):
    with pytest.raises(TritonStartError, match=r"is Python 3\.99"):
        server_python_bin(_venv(tmp_path / "v", "3.99"))
