"""How the benchmark and load-test scripts end: `run_script(main)` exits with main's code, and a start
that failed (a missing program or library, a server that would not start) is its message on
stderr and exit code 1, as the CLI prints it, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from pattern_runtime.processes import StartError


def run_script(main: Callable[[], int]) -> NoReturn:
    try:
        code = main()
    except StartError as exc:
        print(f"{_script_name(main)}: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


def _script_name(main: Callable[[], int]) -> str:
    """`loadtest.bench` for `python -m loadtest.bench` (whose module is `__main__`)."""
    if main.__module__ != "__main__":
        return main.__module__
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]
