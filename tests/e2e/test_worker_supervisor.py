"""The asynchronous pattern's worker supervisor (`triton-patterns worker --processes N`) against
the session's tritonserver and Redis: a worker killed with SIGKILL is restarted and the jobs
still complete; SIGTERM stops every worker and the supervisor; a worker that refused its
configuration (exit 78) is not restarted: the others are stopped and the supervisor exits 78."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import numpy as np
import psutil
import pytest

from pattern_jobs import async_worker
from pattern_kernel.job_queue import DONE, JobQueue, Submission
from pattern_runtime.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.e2e
NAMESPACE = "supervised"  # not the session's "async": its consumers stay out of the other tests' counts
ROW = {"FEATURES": np.array([[6.7, 3.0, 5.2, 2.3]], dtype=np.float32)}


def _workers(supervisor: ManagedProcess) -> dict[int, str]:
    """pid -> consumer name of the supervisor's worker processes."""
    found = {}
    for child in psutil.Process(supervisor.pid).children():
        try:
            argv = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--name" in argv:
            found[child.pid] = argv[argv.index("--name") + 1]
    return found


def test_a_killed_worker_is_restarted_and_sigterm_stops_them_all(triton, redis_server, tmp_path):
    queue = JobQueue(redis_server.client(), NAMESPACE, ttl_seconds=120)
    supervisor = ManagedProcess([sys.executable, "-m", "pattern_jobs.async_worker", "--processes", "2",
                                 "--name", "sup", "--url", triton.grpc_url, "--redis", redis_server.url,
                                 "--namespace", NAMESPACE, "--block-ms", "200", "--idle-timeout-ms", "1000"],
                                tmp_path / "supervisor.log")
    try:
        assert wait_for(lambda: {"sup-0", "sup-1"} <= queue.consumers(), timeout=60, interval=0.1), \
            supervisor.log_tail()
        first = _workers(supervisor)
        assert sorted(first.values()) == ["sup-0", "sup-1"], first
        killed = next(pid for pid, name in first.items() if name == "sup-0")
        os.kill(killed, signal.SIGKILL)
        # the new sup-0 runs (a second start in the log): it joined the group under the same name
        assert wait_for(lambda: supervisor.log_path.read_text().count("worker sup-0: stream") == 2
                        and killed not in _workers(supervisor), timeout=30), supervisor.log_tail()
        ids = [s.job_id for s in queue.submit_many([Submission("iris", 1, ROW)] * 20)]
        assert wait_for(lambda: all(st and st.status == DONE for st in queue.states(ids)), timeout=60), \
            supervisor.log_tail()
        workers = list(_workers(supervisor))
        os.kill(supervisor.pid, signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0, supervisor.log_tail()
        assert not [pid for pid in workers if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert "exited with -9; restarting" in supervisor.log_tail()
    finally:
        supervisor.terminate(timeout=15)


def test_a_worker_that_refused_its_configuration_stops_the_supervisor(monkeypatch):
    parser = argparse.ArgumentParser()
    async_worker.add_arguments(parser)
    args = parser.parse_args(["--processes", "2", "--name", "w"])
    programs = {0: f"raise SystemExit({async_worker.EX_CONFIG})", 1: "import time; time.sleep(120)"}
    monkeypatch.setattr(async_worker, "_child_argv", lambda _args, index: [sys.executable, "-c", programs[index]])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    before = {p.pid for p in psutil.Process().children()}
    started = time.monotonic()
    try:
        code = async_worker.supervise(args)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == async_worker.EX_CONFIG
    assert time.monotonic() - started < 30  # neither restarted in a loop nor waited on until the sleeper ends
    assert [p for p in psutil.Process().children() if p.pid not in before] == []  # the sleeper was stopped
