"""tools/system_packages.py without installing: which packages each target needs, what counts as
present, and what a user who can neither be root nor sudo is told (the install itself:
tools/bare_machine_check.sh, in a bare Debian container)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from pattern_runtime import paths
from pattern_runtime.gateway import DEBIAN_NJS_MODULE

spec = importlib.util.spec_from_file_location("system_packages", paths.PROJECT_ROOT / "tools" / "system_packages.py")
system_packages = sys.modules["system_packages"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(system_packages)
Need = system_packages.Need

PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_the_test_list_is_the_demo_list_and_the_test_tools():
    demo = [need.package for need in system_packages.needs("demo")]
    test = [need.package for need in system_packages.needs("test")]
    assert demo == ["redis-server", "nginx", "libnginx-mod-http-js", f"libpython{PYTHON}", "openssl", "curl",
                    "logrotate"]
    assert test == demo + ["prometheus=2.42.*", "libb64-0d", "wrk", "make"]


def test_the_njs_module_checked_is_the_one_the_gateway_loads():
    assert system_packages.NJS_MODULE == DEBIAN_NJS_MODULE


def test_libpython_is_needed_by_the_stubs_soname():
    need = system_packages.libpython_need((3, 10))
    assert (need.package, need.libraries) == ("libpython3.10", ("libpython3.10.so.1.0",))


def test_a_need_is_missing_what_it_lacks(monkeypatch, tmp_path):
    monkeypatch.setattr(system_packages, "loader_libraries", lambda: frozenset({"libb64.so.0d"}))
    present = tmp_path / "module.so"
    present.write_bytes(b"")
    need = Need("x", "why", programs=("sh", "no-such-program-here"), libraries=("libb64.so.0d", "libnope.so.1"),
                files=(str(present), str(tmp_path / "absent.so")))
    assert need.missing() == ["no-such-program-here", "libnope.so.1", str(tmp_path / "absent.so")]


@pytest.fixture
def one_missing(monkeypatch):
    monkeypatch.setattr(system_packages, "needs", lambda target: [
        Need("sh-package", "present", programs=("sh",)),
        Need("prometheus=2.42.*", "the monitoring test", programs=("no-such-program-here",)),
    ])


def test_nothing_missing_prints_nothing(monkeypatch, capsys):
    monkeypatch.setattr(system_packages, "needs", lambda target: [Need("sh-package", "present", programs=("sh",))])
    assert system_packages.main(["test"]) == 0
    assert capsys.readouterr() == ("", "")


def test_without_root_or_sudo_it_stops_with_the_command_to_run(monkeypatch, capsys, one_missing):
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(system_packages, "_can_sudo", lambda: False)
    assert system_packages.main(["test"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "make test needs Debian packages that are missing: prometheus=2.42.* "
        "(the monitoring test: no-such-program-here)",
        "run: sudo apt-get update && sudo apt-get install --no-install-recommends 'prometheus=2.42.*'",
    ]


def test_dry_run_reports_and_succeeds(monkeypatch, capsys, one_missing):
    assert system_packages.main(["demo", "--dry-run"]) == 0
    assert "missing: prometheus=2.42.*" in capsys.readouterr().err
