"""Small helpers shared by the server launchers: free ports, waiting, log tails, child processes.

`ManagedProcess` runs one command in its own process group with stdout/stderr appended to a
log file, and only ever signals what it started (its pid, or the process group it created).

Spawning never runs a `preexec_fn`, so CPython starts the child with vfork() and exec(), and no
pthread_atfork handler of this process runs. Those handlers can make fork() wait for ever: gRPC
(grpcio, its fork support on by default) registers some that stop its threads before a fork,
while the forking thread holds the GIL; a test session, a benchmark or a user's program that has
used gRPC can stop inside fork(). "Die with the parent" (PR_SET_PDEATHSIG) is therefore set by
util-linux's `setpriv --pdeathsig SIGTERM -- COMMAND`, which sets it and execs the command (same
pid), not by Python code run in a forked child. docs/reliability.md ("Starting child processes")
has the details and the tests.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

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


SETPRIV = "setpriv"  # util-linux (Essential in Debian): sets the parent-death signal, then execs


def with_parent_death_signal(argv: Sequence[str], signum: int = signal.SIGTERM) -> list[str]:
    """`argv` run through `setpriv --pdeathsig`: the kernel sends `signum` to the command when
    the *thread* that spawned it ends (PR_SET_PDEATHSIG is kept across exec; the command keeps
    setpriv's pid). Spawn it without a preexec_fn, so that no fork handler runs (module docstring)."""
    return [_setpriv(), "--pdeathsig", signal_name(signum), "--", *argv]


def _setpriv() -> str:
    setpriv = shutil.which(SETPRIV) or shutil.which(SETPRIV, path="/usr/bin:/bin")
    if setpriv is None:
        raise FileNotFoundError(f"{SETPRIV} not found on PATH (it makes child servers die with this process); "
                                "install the system package: apt-get install util-linux")
    return os.path.realpath(setpriv)


def await_parent_death_signal(pid: int, timeout: float = 10.0) -> bool:
    """Wait until the child `pid` started by `with_parent_death_signal` is past setpriv (it has
    set the signal and exec'd the command, or exited), so that the spawning thread may end: until
    then, an ending thread would leave the child without it. False if still in setpriv after `timeout`."""
    setpriv = _setpriv()

    def past_setpriv() -> bool:
        try:
            return os.readlink(f"/proc/{pid}/exe") != setpriv
        except OSError:  # exited (or a zombie)
            return True

    return wait_for(past_setpriv, timeout, interval=0.001)


def _check_program(program: str, env: Mapping[str, str] | None) -> None:
    """FileNotFoundError for a program not on the child's PATH, as Popen raises for one it runs itself."""
    if os.sep not in program and shutil.which(program, path=os.pathsep.join(os.get_exec_path(env))) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


class ManagedProcess:
    """One child process in its own process group, output appended to `log_path`.

    `die_with_parent` (Linux) makes the kernel SIGTERM the child when the *thread* that
    spawned it ends, so a crashed test run leaves no server behind; spawn from a
    long-lived thread (the main thread, or the supervisor's own thread). The child is
    started by vfork() and exec(): no fork handler of this process runs (module docstring).
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
        if die_with_parent:
            _check_program(self.argv[0], env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                with_parent_death_signal(self.argv) if die_with_parent else self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # own session and process group: pgid == pid (vfork allows it)
            )
        self.pid = self.popen.pid
        if die_with_parent and not await_parent_death_signal(self.pid):
            LOG.warning("pid %s still in %s after 10 s: it may outlive this process", self.pid, SETPRIV)
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


# --------------------------------------------------------------------------- local servers


SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class StartError(RuntimeError):
    """A server could not be started: its program or a library missing, it exited, or it was not
    ready in time. The message says which (and has the log tail); the CLI prints it without a traceback."""


class LocalServer:
    """A server program (Redis, Prometheus, ...) run as a child process on a local port, in a
    directory of its own (a temporary one, removed by stop(), unless `directory` is given).

    Subclasses say how to run it (`command`), when it is ready (`is_ready`), what it logs when
    its port is taken (`port_taken`) and how to stop it (`_shutdown`). A port this object chose
    that another process binds first (between choosing and binding) is replaced by a new free
    one, up to `start_attempts` starts; a failed start raises `start_error` with the port, pid,
    exit code and log tail. Only the process it started is ever signalled.
    """

    name = "server"
    package = ""  # the Debian package that provides the binary, for the missing-binary message
    log_name = "server.log"
    port_taken = "Address already in use"
    start_error: type[StartError] = StartError
    start_attempts = 3
    log_tail_lines = 40

    def __init__(self, port: int | None, host: str, directory: str | os.PathLike | None,
                 startup_timeout: float, binary: str):
        self.host = host
        self._port_chosen = not port
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.binary = binary
        self._own_directory = directory is None
        self.directory = Path(directory) if directory else None
        self.log_dir: Path | None = None  # where the log goes, when not in `directory` (a lasting log folder)
        self._proc: ManagedProcess | None = None

    def command(self) -> list[str]:  # pragma: no cover - subclasses
        raise NotImplementedError

    def is_ready(self) -> bool:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _prepare(self) -> None:
        """Checks and files needed before each start (the directory exists)."""

    def environment(self) -> dict[str, str] | None:
        """The child's environment (None: this process's)."""
        return None

    def _new_ports(self) -> None:
        """Replace the ports this object chose, after one of them was taken by another process."""
        self.port = free_port(self.host)

    def _shutdown(self, proc: ManagedProcess, timeout: float) -> None:
        proc.terminate(timeout)

    def binary_path(self) -> str:
        """The program: on PATH, or where Debian puts daemons (nginx), off a normal user's PATH."""
        path = shutil.which(self.binary, path=os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN]))
        if path is None:
            raise self.start_error(f"{self.binary} not found on PATH; install the system package: "
                                   f"apt-get install {self.package or self.binary} (`make demo` and `make test` do)")
        return path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def process(self) -> ManagedProcess | None:
        """The process of the latest start (exited or not); None before a start and after stop()."""
        return self._proc

    @property
    def log_path(self) -> Path | None:
        folder = self.log_dir or self.directory
        return Path(folder) / self.log_name if folder else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def log_tail(self, lines: int | None = None) -> str:
        return self._proc.log_tail(lines or self.log_tail_lines) if self._proc else ""

    def start(self):
        if self.is_running():
            raise RuntimeError(f"{self.name} already running (pid {self.pid})")
        self.binary_path()  # fail before creating anything
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix=f"triton-patterns-{self.name}-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, self.start_attempts + 1):
            try:
                self._prepare()
            except Exception:
                self.stop()
                raise
            proc = self._proc = ManagedProcess(self.command(), self.log_path, env=self.environment(),
                                               cwd=self.directory)
            started = time.monotonic()
            if wait_for(self.is_ready, self.startup_timeout, interval=0.05,
                        abort=lambda proc=proc: not proc.is_running()):
                return self
            state = (f"exited ({describe_returncode(proc.returncode)})" if not proc.is_running()
                     else f"was not ready within {time.monotonic() - started:.0f}s")
            tail_text = proc.log_tail(self.log_tail_lines)
            proc.terminate(timeout=5)
            this_run = tail_text.rsplit("\n=== ", 1)[-1]
            if self._port_chosen and attempt < self.start_attempts and self.port_taken.lower() in this_run.lower():
                LOG.warning("%s port %s taken by another process: trying a new free port", self.name, self.port)
                self._new_ports()
                continue
            message = (f"{self.name} on {self.host}:{self.port} (pid {proc.pid}) {state}; "
                       f"last lines of {self.log_path}:\n{tail_text}")
            self.stop(timeout=2)
            raise self.start_error(message)
        raise AssertionError("unreachable")

    def restart(self):
        """Start again after the process ended: the same port(s) and directory, so clients find it
        where they did and it keeps its data (`pattern_runtime.supervision`)."""
        if self._proc is not None:
            self._proc.terminate(timeout=5)  # reaps it; SIGKILLs what is left of its process group
        chosen = self._port_chosen
        self._port_chosen = False  # the port is the one clients know now: never replaced
        try:
            return self.start()
        finally:
            self._port_chosen = chosen

    def stop(self, timeout: float = 10.0) -> None:
        """`_shutdown` (SIGTERM by default, SIGKILL after `timeout`) of the process it started;
        its own directory removed."""
        proc = self._proc
        if proc is not None:
            if proc.is_running():
                self._shutdown(proc, timeout)
            proc.terminate(timeout)  # a no-op once it has exited; reaps it and its group
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self._proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
