"""The checkout passes `ruff check` with the rules of pyproject.toml [tool.ruff] (also `make lint`), and the
same configuration catches what it is there for (shown on a small file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pattern_runtime import paths

RUFF = Path(sys.executable).parent / "ruff"


def ruff_check(*args: str, cwd: Path = paths.PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "concise", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_checkout_passes_ruff():
    run = ruff_check(".")
    assert run.returncode == 0, \
        f"ruff check found (fix them; `ruff check --fix` sorts imports):\n{run.stdout}{run.stderr}"


def test_the_configuration_catches_long_lines_broad_excepts_and_unsorted_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport json\n\n"
                   "try:\n    json.dumps(sys.argv)\nexcept Exception:\n    pass\n"
                   f"X = {'1' * 121}\n")
    run = ruff_check("--config", str(paths.PROJECT_ROOT / "pyproject.toml"), str(bad), cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert {"I001", "BLE001", "E501"} <= {word for line in run.stdout.splitlines() for word in line.split()[1:2]}
