"""Starting child processes: no fork handler runs, starts end in bounded time while gRPC is busy in
the same process, and the servers die with the process (or the thread) that started them.

The starting is done by spawn_churn.py in a process of its own, watched from here: a thread stuck
in fork() holds the GIL, so no code in its own process could bound it or say where it is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pattern_runtime.processes import ManagedProcess, describe_returncode, group_members, wait_for

pytestmark = pytest.mark.e2e

HELPER = Path(__file__).with_name("spawn_churn.py")
PY_SPY = Path(sys.executable).parent / "py-spy"
STEP_BOUND_S = 60  # one start or stop of redis-server or nginx, with the machine busy
TRITON_STEP_BOUND_S = 180  # one start or stop of a small tritonserver (its own startup timeout is 60 s)


def events(log: Path) -> list[dict]:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def stacks(pid: int) -> str:
    """Every thread's stack of `pid`, native frames included (py-spy), for a failure message."""
    if not PY_SPY.exists():
        return f"(py-spy not in {PY_SPY.parent}: no stacks)"
    done = subprocess.run([str(PY_SPY), "dump", "--native", "--pid", str(pid)], capture_output=True, text=True,
                          timeout=60)
    return done.stdout + done.stderr


def outcome(helper: ManagedProcess, log: Path) -> str:
    """The helper's exit and its traceback's start (the frames and the exception's first lines:
    a server's start error carries that server's whole log tail)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    traceback = text[text.rfind("Traceback (most recent call last)"):] if "Traceback" in text else text[-3000:]
    return f"spawn_churn.py {describe_returncode(helper.returncode)}:\n" + "\n".join(traceback.splitlines()[:60])


def run_helper(tmp_path: Path, *args: str) -> tuple[ManagedProcess, Path]:
    log = tmp_path / "helper.log"
    return ManagedProcess([sys.executable, "-u", str(HELPER), *args, str(tmp_path / "servers")], log,
                          cwd=HELPER.parent), log


def watch(helper: ManagedProcess, log: Path, until=lambda seen: False) -> list[dict]:
    """The helper's events once it exits (or `until` them): fails, with its stacks, when one of its
    steps (the last {"start": ...} without its {"done": ...}) runs past its bound."""
    seen, progress_at = [], time.monotonic()
    while helper.is_running() and not until(seen):
        latest = events(log)
        if len(latest) > len(seen):
            seen, progress_at = latest, time.monotonic()
        step = seen[-1].get("start", "the helper's start-up") if seen else "the helper's start-up"
        bound = TRITON_STEP_BOUND_S if "tritonserver" in step or not seen else STEP_BOUND_S
        if time.monotonic() - progress_at > bound:
            dump = stacks(helper.pid)
            helper.terminate(timeout=10)
            pytest.fail(f"{step}: not done after {bound} s (pid {helper.pid}); its threads:\n{dump}\n"
                        f"its log:\n{helper.log_tail(30)}")
        time.sleep(0.2)
    return events(log)


def test_managed_processes_run_no_fork_handler(tmp_path):
    """A pthread_atfork handler (gRPC registers some) counts its runs: none while a server and
    commands start through ManagedProcess; one for a Popen with a preexec_fn (the control)."""
    helper, log = run_helper(tmp_path, "atfork")
    try:
        counted = watch(helper, log)
        assert helper.wait(30) == 0, outcome(helper, log)
    finally:
        helper.terminate(timeout=10)
    assert counted[-1]["atfork"] == {"managed": 0, "preexec_fn": 1}


@pytest.mark.timeout(600)
def test_servers_start_and_stop_in_bounded_time_while_grpc_streams_are_busy(tmp_path):
    """30 rounds of redis-server and nginx, and a small tritonserver every 5th, started and stopped
    by a process whose other threads stream to a tritonserver over gRPC the whole time."""
    helper, log = run_helper(tmp_path, "churn", "--rounds", "30", "--triton-every", "5")
    try:
        done = watch(helper, log)
        assert helper.wait(30) == 0, outcome(helper, log)
    finally:
        helper.terminate(timeout=10)
    starts = [e["done"] for e in done if "done" in e and not e["done"].startswith("stop")]
    assert len(starts) == 1 + 30 + 30 + 6, starts
    result = done[-1]
    assert result["errors"] == []
    assert result["calls"]["stream"] > 0 and result["calls"]["unary"] > 0, result


@pytest.mark.timeout(600)
def test_servers_die_with_a_killed_parent(tmp_path):
    """kill -9 of the process that started redis-server, nginx and tritonserver: each of them and
    every process of their groups (nginx workers, Python stubs) is gone soon after."""
    helper, log = run_helper(tmp_path, "hold")
    try:
        held = watch(helper, log, until=lambda seen: bool(seen) and "holding" in seen[-1])[-1]["holding"]
        groups = {name: group_members(pid) for name, pid in held.items()}
        assert all(groups.values()), groups
        os.kill(helper.pid, signal.SIGKILL)
        survivors = lambda: {name: [p for p in members if p in group_members(held[name])]  # noqa: E731
                             for name, members in groups.items() if set(members) & set(group_members(held[name]))}
        wait_for(lambda: not survivors(), timeout=120, interval=0.5)
        assert survivors() == {}, f"alive 120 s after their parent was killed: {survivors()} (of {groups})"
    finally:
        helper.terminate(timeout=10)
        for pid in locals().get("held", {}).values():  # a failed test leaves nothing running either
            for member in group_members(pid):
                os.kill(member, signal.SIGKILL)


def test_a_child_started_by_a_thread_dies_when_that_thread_ends(tmp_path):
    """The parent-death signal follows the spawning *thread* (PR_SET_PDEATHSIG): start servers from
    a long-lived thread."""
    started = []
    spawner = threading.Thread(target=lambda: started.append(ManagedProcess(["sleep", "600"], tmp_path / "sleep.log")))
    spawner.start()
    spawner.join()
    child = started[0]
    try:
        assert child.wait(30) == -signal.SIGTERM
    finally:
        child.terminate(timeout=5)
