"""The command lines behind child processes and perf_analyzer runs, without running them: the
parent-death signal set by setpriv (no preexec_fn: tests/e2e/test_spawn.py runs them), and
perf_analyzer's quick (unchecked stability) and default (stable) settings."""

from __future__ import annotations

import os
import signal

import pytest

from loadtest.perf import perf_analyzer_command
from pattern_runtime.processes import ManagedProcess, with_parent_death_signal
from pattern_tools.perf import QUICK


def test_the_parent_death_signal_is_set_by_setpriv_before_the_command():
    argv = with_parent_death_signal(["redis-server", "--port", "6380"])
    assert os.path.basename(argv[0]) == "setpriv" and os.path.isabs(argv[0])
    assert argv[1:] == ["--pdeathsig", "SIGTERM", "--", "redis-server", "--port", "6380"]
    assert with_parent_death_signal(["x"], signal.SIGKILL)[1:3] == ["--pdeathsig", "SIGKILL"]


def test_a_missing_program_is_reported_before_anything_starts(tmp_path):
    # the unit conftest fails the test if a process is started: the check comes first
    with pytest.raises(FileNotFoundError, match="no-such-server"):
        ManagedProcess(["no-such-server", "--port", "1"], tmp_path / "log")
    with pytest.raises(FileNotFoundError, match="redis-server"):
        ManagedProcess(["redis-server"], tmp_path / "log", env={"PATH": str(tmp_path)})


def test_perf_analyzer_is_stable_by_default_and_unchecked_when_quick(tmp_path):
    stable = perf_analyzer_command("iris", "h:1", tmp_path / "in.json", tmp_path / "out.csv", "1:8:7", 2000)
    quick = perf_analyzer_command("iris", "h:1", tmp_path / "in.json", tmp_path / "out.csv", "1:8:7", 2000, quick=True)
    assert " --stability-percentage 100 --max-trials 6" in " ".join(stable)
    assert "count_windows" not in stable
    assert " ".join(QUICK) in " ".join(quick) and "--measurement-interval" not in quick
