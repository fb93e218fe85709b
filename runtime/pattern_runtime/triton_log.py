"""What tritonserver's log says: why a start failed, which ports were taken, what a shutdown waited for.

The launcher appends every start's output to one log, each start after a `=== ` line
(`ManagedProcess`); `this_run` is the part of the latest start, which the other functions read.
"""

from __future__ import annotations

import re
from pathlib import Path

from pattern_runtime.processes import ManagedProcess, describe_returncode, tail

LOG_TAIL_LINES = 60
KNOWN_STARTUP_ABORT = "boost::interprocess::lock_exception"
EXIT_TIMEOUT_EXPIRED = "Exit timeout expired"
_ERROR_LINE = re.compile(r"^E\d{4} |unrecognized option|invalid argument|[Ee]rror: ")
_HARMLESS_ON_CPU = re.compile(r"NVML|CudaDriverHelper|DCGM")
# tritonserver 2.51 exits when its HTTP or gRPC port is taken, but only logs a taken metrics port
_PORT_IN_USE = re.compile(r"failed to start \w+ service: .*Socket '[^']*:(\d+)' already in use")


def this_run(log_path: Path) -> str:
    """The part of a log appended by the latest start (ManagedProcess writes a `=== ` line)."""
    return tail(log_path, 5000).rsplit("\n=== ", 1)[-1]


def error_lines(log_text: str, limit: int = 10) -> list[str]:
    """The first error lines of a run (not the GPU probes' on a CPU-only host)."""
    return [line for line in log_text.splitlines()
            if _ERROR_LINE.search(line) and not _HARMLESS_ON_CPU.search(line)][:limit]


# What tritonserver counts down for on shutdown, once a second ("Timeout 12: Found 1 HTTP service
# connections"), and why each may never reach 0 in 2.51.
_SHUTDOWN_WAIT = re.compile(r"Timeout \d+: Found (\d+) (HTTP service connections|live models|"
                            r"model versions that have in-flight inferences)")
_SHUTDOWN_WAIT_CAUSES = {
    "HTTP service connections": "a client kept its HTTP connection open",
    "live models": "models still unloading (slow on a busy host), or a Python-based model whose load failed, "
                   "or whose stub died while serving, which is never freed",
    "model versions that have in-flight inferences": "requests still running",
}


def shutdown_waits(log_text: str) -> str:
    """What a shutdown that ran out its exit timeout waited for (what it counted down for over
    more than one tick; the stages after it get no time and report once), with the likely cause."""
    ticks: dict[str, int] = {}
    last: dict[str, int] = {}
    for count, kind in _SHUTDOWN_WAIT.findall(log_text):
        last[kind] = int(count)
        ticks[kind] = ticks.get(kind, 0) + (int(count) > 0)
    waited = [k for k, n in ticks.items() if n > 1] or [k for k, n in last.items() if n > 0]
    return "; ".join(f"{last[k]} {k} ({_SHUTDOWN_WAIT_CAUSES[k]})" for k in waited) or "something the log does not name"


def ports_in_use(log_text: str) -> list[int]:
    """Ports that tritonserver reported as already in use."""
    return sorted({int(port) for port in _PORT_IN_USE.findall(log_text)})


# A Python stub that ends before it reaches the server (the loader cannot find its libpython; bash
# cannot run it) leaves its model loading for ever: tritonserver 2.51 logs nothing more and never
# gets ready (docs/reliability.md#a-stub-that-cannot-start). The loader's line or the backend's own.
_STUB_START_FAILURE = re.compile(
    r"^.*(?:error while loading shared libraries: |Failed to run python backend stub).*$", re.M)
_MISSING_LIBPYTHON = re.compile(r"\b(libpython\d+\.\d+)\.so\.1\.0: cannot open shared object file")


def stub_start_failure(log_text: str) -> str | None:
    """Why a Python stub could not start, from the server's log (None: no such line)."""
    found = _STUB_START_FAILURE.search(log_text)
    if found is None:
        return None
    reason = f"a Python backend stub cannot start: {found.group(0).strip()}"
    library = _MISSING_LIBPYTHON.search(found.group(0))
    if library:
        reason += (f" (the stub links the shared library of the Python that made the server virtualenv; "
                   f"Debian: apt-get install {library.group(1)})")
    return reason


def start_error_message(reason: str, proc: ManagedProcess, log_path: Path, ports: str) -> str:
    """Reason, the run's error lines (a bad flag's is followed by 100 lines of usage), log tail;
    for a stub that cannot start, whose reason is the whole story, the log's path only."""
    run = this_run(log_path)
    errors = error_lines(run)
    parts = [f"{reason} (ports: {ports}; pid {proc.pid}, {describe_returncode(proc.returncode)})"]
    if stub_start_failure(run):
        return "\n".join([*parts, f"log: {log_path}"])
    if errors:
        parts.append("errors:\n" + "\n".join(errors))
    parts.append(f"last lines of {log_path}:\n{proc.log_tail(LOG_TAIL_LINES)}")
    return "\n".join(parts)
