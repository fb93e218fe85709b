"""The parts' allowed imports (pyproject.toml [tool.importlinter], docs/architecture.md), checked by
import-linter: the checkout keeps them, and the same contracts break on an upward import, an import
of export/ or a cycle (shown on a small tree of packages with the parts' names); and every import
of a project module names one that exists."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pattern_runtime import paths

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PARTS = ("pattern_kernel", "triton_patterns", "pattern_runtime", "pattern_jobs", "pattern_tools", "export", "loadtest")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with `root`'s pyproject.toml, the packages found from `root` first."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache", "--no-logo"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_checkout_keeps_its_layers():
    run = lint_imports(paths.PROJECT_ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def _tree(tmp_path: Path, imports: dict[str, str]) -> Path:
    """Every part as a package of two modules `a` and `b`; `imports` {module: line} adds imports."""
    shutil.copy(paths.PROJECT_ROOT / "pyproject.toml", tmp_path)
    for part in PARTS:
        (tmp_path / part).mkdir()
        for module in ("__init__", "a", "b"):
            (tmp_path / part / f"{module}.py").write_text(imports.get(f"{part}.{module}", "") + "\n")
    return tmp_path


def test_downward_imports_are_allowed(tmp_path):
    run = lint_imports(_tree(tmp_path, {
        "pattern_tools.a": "import pattern_jobs.a, pattern_runtime.a, triton_patterns.a, pattern_kernel.a",
        "export.a": "import pattern_tools.a",
        "pattern_runtime.a": "from . import b",
    }))
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("module, line, broken", [
    ("pattern_kernel.a", "import triton_patterns.a", "layered"),  # upward
    ("triton_patterns.a", "import pattern_runtime.a", "layered"),
    ("pattern_jobs.b", "import pattern_tools.b", "layered"),
    ("pattern_tools.a", "import export.a", "imports export/"),
    ("export.a", "import loadtest.a", "layered"),  # export and loadtest are independent
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, line, broken):
    run = lint_imports(_tree(tmp_path, {module: line}))
    assert run.returncode == 1, run.stdout
    assert "BROKEN" in run.stdout and broken in run.stdout.split("Broken contracts")[-1]


def test_a_cycle_inside_a_part_breaks_a_contract(tmp_path):
    run = lint_imports(_tree(tmp_path, {"pattern_runtime.a": "from . import b",
                                        "pattern_runtime.b": "from . import a"}))
    assert run.returncode == 1, run.stdout
    assert "No cycles are allowed in pattern_runtime" in run.stdout


def _top_level_names(path: Path) -> set[str]:
    """Names a module binds at its top level (defs, classes, assignments, imports), read, not run."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _unresolved(path: Path) -> list[str]:
    """`module:line name` for each import of a project module or name that does not exist
    (import-linter leaves those out of its graph: a module moved by the split went unnoticed)."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            wanted = [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in wanted:
            if module.split(".")[0] not in PARTS:
                continue
            spec = importlib.util.find_spec(module)
            if spec is None:
                missing.append(f"{path}:{node.lineno} {module}")
            elif name and name != "*" and name not in _top_level_names(Path(spec.origin)) and not (
                    spec.submodule_search_locations and importlib.util.find_spec(f"{module}.{name}")):
                missing.append(f"{path}:{node.lineno} {module}.{name}")
    return missing


def test_every_import_of_a_project_module_resolves(monkeypatch):
    monkeypatch.syspath_prepend(str(paths.PROJECT_ROOT))  # export/ and loadtest/ from the checkout
    folders = ("kernel", "clients", "runtime", "jobs", "tools", "export", "loadtest", "backends", "tests")
    files = [f for folder in folders for f in sorted((paths.PROJECT_ROOT / folder).rglob("*.py"))
             if "build" not in f.relative_to(paths.PROJECT_ROOT).parts]
    assert [m for f in files for m in _unresolved(f)] == []
