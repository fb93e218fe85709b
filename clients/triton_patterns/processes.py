"""Small helpers shared by the server launchers: free ports, waiting, log tails, child processes.

`ManagedProcess` runs one command in its own process group with stdout/stderr appended to a
log file, and only ever signals what it started (its pid, or the process group it created).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------- ports, HTTP, waiting


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free on `host` a moment ago (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def http_status(
    url: str, timeout: float = 2.0, method: str = "GET", headers: Mapping[str, str] | None = None
) -> int | None:
    """HTTP status code of `url`, or None when nothing answers."""
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    interval: float = 0.2,
    abort: Callable[[], bool] | None = None,
) -> bool:
    """Poll `condition` until it is true (True), `abort` becomes true or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if (abort is not None and abort()) or time.monotonic() >= deadline:
            return False
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# --------------------------------------------------------------------------- logs


def tail(path: str | os.PathLike | None, lines: int = 60, max_bytes: int = 256 * 1024) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def describe_returncode(returncode: int | None) -> str:
    """'exit code 1', 'killed by SIGSEGV', or 'running'."""
    if returncode is None:
        return "running"
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return f"exit code {returncode}"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# --------------------------------------------------------------------------- child processes


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the child when the thread that spawned it ends."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    PR_SET_PDEATHSIG = 1  # noqa: N806
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One child process in its own process group, output appended to `log_path`.

    `die_with_parent` (Linux) makes the kernel SIGTERM the child when the *thread* that
    spawned it ends, so a crashed test run leaves no server behind; spawn from a
    long-lived thread (the main thread, or the supervisor's own thread).
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: str | os.PathLike,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        die_with_parent: bool = True,
    ):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # own session and process group: pgid == pid
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        self.pid = self.popen.pid
        self.started_at = time.monotonic()

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Return code, or None if still running after `timeout`."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def signal_group(self, signum: int) -> None:
        """Signal the process group this object created (leftover children included)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def terminate(self, timeout: float = 30.0, signum: int = signal.SIGTERM) -> int | None:
        """`signum` to the process, wait up to `timeout`, then SIGKILL its whole group; reap it."""
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)
            if self.wait(timeout) is None:
                LOG.warning("pid %s did not exit %.0fs after %s: SIGKILL", self.pid, timeout, signal_name(signum))
                self.signal_group(signal.SIGKILL)
        returncode = self.wait(10)
        self.kill_leftovers()
        return returncode

    def kill_leftovers(self) -> None:
        """SIGKILL what remains of the group once the leader is gone (e.g. orphaned workers)."""
        if self.popen.poll() is not None:
            self.signal_group(signal.SIGKILL)

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (Linux /proc), zombies excluded."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members
