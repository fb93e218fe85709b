"""Unit tests start no process (but a few short tools, TOOLS) and connect to no server of another
process on this host: a test that does fails with a message saying to move it to tests/e2e/, where
tritonserver, Redis and prometheus run."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess

import psutil  # installed with locust
import pytest

MOVE = "unit tests need no process: move this test to tests/e2e/"
TOOLS = {"git", "lscpu", "ldconfig", "uname",  # short commands libraries and manifests run; no server
         "lint-imports",  # test_layering.py: import-linter on trees of its own (in-process it would see
                          # the imported parts)
         "ruff"}  # test_lint.py: a short check, no server


def _listening(connections) -> set[int]:
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def _served_by_another_process(port: int) -> bool:
    return port in _listening(psutil.net_connections("inet")) - _listening(psutil.Process().net_connections("inet"))


def _is_loopback(host) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host) if host == "localhost" else host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_processes_no_outside_servers(monkeypatch):
    execute_child = subprocess.Popen._execute_child

    def no_process(popen, argv, *args, **kwargs):
        command = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)
        if os.path.basename(str(command[0]).split()[0]) not in TOOLS:
            raise AssertionError(f"{MOVE} (it starts a process: {command})")
        return execute_child(popen, argv, *args, **kwargs)

    def no_fork(*args, **kwargs):
        raise AssertionError(f"{MOVE} (it forks)")

    def guarded(connect):
        def check(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and _is_loopback(address[0]) \
                    and _served_by_another_process(address[1]):
                raise AssertionError(f"{MOVE} (it connects to a server outside the test's process: "
                                     f"{address[0]}:{address[1]})")
            return connect(sock, address)
        return check

    monkeypatch.setattr(subprocess.Popen, "_execute_child", no_process)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, no_fork)
    monkeypatch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))
