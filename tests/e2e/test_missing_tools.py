"""A system program the CLI needs and does not find is one line on stderr and exit code 1, never a
traceback (the Debian packages themselves: tools/system_packages.py, run by `make demo` / `make test`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).parent / "triton-patterns"


def test_the_demo_without_redis_server_says_so_in_one_line(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([str(CLI), "demo"], env={**os.environ, "PATH": str(empty)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [
        "triton-patterns demo: redis-server not found on PATH; install the system package: "
        "apt-get install redis-server (`make demo` and `make test` do)"], done.stderr
