"""The SDK stands on its own: its generated modules (contract.py, pattern_methods.py) are what
`python -m pattern_tools.sdk_gen` writes from the kernel and the pattern table, it imports no other
part of the project, its distribution's pins are the project's, and a user's import works."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re

import pytest

import triton_patterns
from pattern_kernel import access, job_queue
from pattern_runtime import paths
from pattern_tools import sdk_gen
from triton_patterns import contract, pattern_methods
from triton_patterns.methods import pattern_methods as table_methods
from triton_patterns.patterns import PatternSpec

SDK = paths.PROJECT_ROOT / "clients"
PIN = re.compile(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)", re.M)


@pytest.mark.parametrize("path", list(sdk_gen.generated()), ids=lambda p: p.name)
def test_each_generated_module_is_what_the_command_writes(path):
    assert path.read_text() == sdk_gen.generated()[path], (
        f"{path.relative_to(paths.PROJECT_ROOT)} is out of date: run `python -m pattern_tools.sdk_gen`")


def test_the_check_names_a_stale_file_and_the_command(tmp_path, monkeypatch, capsys):
    for path, text in sdk_gen.generated().items():
        (tmp_path / path.name).write_text(text)
    monkeypatch.setattr(sdk_gen, "SDK", tmp_path)
    monkeypatch.setattr(sdk_gen, "PROJECT_ROOT", tmp_path.parent)
    assert sdk_gen.main(["--check"]) == 0
    (tmp_path / "pattern_methods.py").write_text("# edited by hand\n")
    assert sdk_gen.main(["--check"]) == 1
    assert capsys.readouterr().out == (
        f"{tmp_path.name}/pattern_methods.py is out of date: run `python -m pattern_tools.sdk_gen`\n")


def test_a_new_table_entry_changes_the_generated_methods():
    extra = PatternSpec("echo", "echo_model", "TEXT", "BYTES", ("LABEL", "PROBABILITIES"), "text", "an echo", "hi")
    methods = table_methods((extra,))
    source = sdk_gen.methods_source(methods)
    assert source != sdk_gen.methods_source()
    assert "    def echo(self, text: str, model: str = \"echo_model\") -> Prediction:" in source
    assert "    async def echo(self, text: str, model: str = \"echo_model\") -> Prediction:" in source


def test_the_contract_is_the_kernels():
    for name in ("ADMIN_HEADER", "API_HEADER", "GRPC_HEADER_PREFIX", "ADMIN_KEY_ENV", "ADMIN_KEY_FILE_ENV"):
        assert getattr(contract, name) == getattr(access, name)
    assert (contract.ENDED, contract.UNKNOWN) == (job_queue.ENDED, job_queue.UNKNOWN)
    state = job_queue.JobState("j1", "done", outputs={"LABEL": job_queue.tensor_from_json(
        {"dtype": "<i8", "shape": [1], "data": [2]})})
    copied = contract.state_from_json(state.as_json())
    assert [f.name for f in dataclasses.fields(copied)] == [f.name for f in dataclasses.fields(state)]
    assert copied.as_json() == state.as_json()


def _imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_sdk_imports_no_other_part_of_the_project():
    parts = {"pattern_kernel", "pattern_runtime", "pattern_jobs", "pattern_tools", "export", "loadtest"}
    modules = sorted((SDK / "triton_patterns").glob("*.py"))
    assert len(modules) > 5
    assert {m.name: _imports(m) & parts for m in modules} == {m.name: set() for m in modules}
    assert not any(p for p in SDK.rglob("*") if p.name == "paths.py")  # nothing knows the checkout


def _pins(path) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(path.read_text())}


def test_the_sdk_distribution_pins_what_the_project_pins():
    sdk, project = _pins(SDK / "requirements.txt"), _pins(paths.PROJECT_ROOT / "requirements.txt")
    assert sdk and {name: project.get(name) for name in sdk} == sdk
    declared = (SDK / "pyproject.toml").read_text()
    for name in sdk:  # each pinned package is a dependency or an extra of the distribution
        assert f'"{name.split("[")[0]}' in declared, name


def test_a_user_imports_the_clients_from_the_package():
    from triton_patterns import AsyncPatternClient, PatternClient, Prediction  # noqa: F401

    assert {"AsyncPatternClient", "PatternClient", "PatternError", "Prediction", "JobResult"} <= set(
        triton_patterns.__all__)
    assert issubclass(PatternClient, pattern_methods.PatternMethods)
    assert issubclass(AsyncPatternClient, pattern_methods.AsyncPatternMethods)
    assert inspect.iscoroutinefunction(AsyncPatternClient.canary)
