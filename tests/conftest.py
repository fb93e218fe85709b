"""Time limits for every test (docs/reliability.md, "Time limits").

pytest-timeout (pyproject.toml: `--timeout`, `timeout_method = "thread"`, `@pytest.mark.timeout(N)`
for the tests that need longer) dumps every thread's stack and ends the run when a test passes its
limit, also when the main thread is stuck in C code, which its signal method cannot interrupt.
Its timer is a Python thread, so it cannot act while a thread stuck in C holds the GIL; for that
case faulthandler's own watchdog thread (C, no GIL needed) dumps every thread's stack and ends the
run BACKSTOP_S seconds later.
"""

from __future__ import annotations

import faulthandler
import os
import sys

import pytest

BACKSTOP_S = 60

_stderr_fd: int | None = None


@pytest.hookimpl
def pytest_configure(config):
    global _stderr_fd
    # the terminal's stderr (a test's fd 2 is pytest's capture file, lost when the run ends at once)
    _stderr_fd = os.dup(sys.stderr.fileno())


@pytest.hookimpl
def pytest_unconfigure(config):
    global _stderr_fd
    if _stderr_fd is not None:
        os.close(_stderr_fd)
        _stderr_fd = None


@pytest.hookimpl
def pytest_timeout_set_timer(item, settings):
    """Arms the backstop beside pytest-timeout's own timer (None: pytest-timeout's runs too)."""
    if _stderr_fd is not None:
        faulthandler.dump_traceback_later(settings.timeout + BACKSTOP_S, exit=True, file=_stderr_fd)


@pytest.hookimpl
def pytest_timeout_cancel_timer(item):
    faulthandler.cancel_dump_traceback_later()
