"""Copy-ability, tested: README's "Copy a pattern into your repository" steps, run as written in a
folder of their own (the circuit breaker's config and backend folder, iris v1 with the onnxruntime
shim, a fresh virtualenv with only the kernel package and its pinned libraries), a fresh
tritonserver on that repository and backend folder, and README's calls against it: a good row
answered by the model, then the breaker's default once its target is unloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_new_user import shell_blocks  # this folder is on sys.path (pytest's default import mode)

from pattern_runtime import paths
from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_settings import ServerSettings

# a virtualenv and pip install (600-s deadline), 135 s under load
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

README = paths.PROJECT_ROOT / "README.md"
BY_THIS_TEST = "tests/e2e/test_copy_pattern.py"
NOT_IN_THE_SERVER = ("triton_patterns", "pattern_runtime", "pattern_jobs", "pattern_tools", "export")


def readme_blocks() -> list[str]:
    """README's shell blocks that this test runs (their skip note names it), in order."""
    return [b.text for b in shell_blocks(README) if b.skip and BY_THIS_TEST in b.skip]


def bash(script: str, env: dict[str, str]) -> str:
    run = subprocess.run(["bash", "-c", "set -eo pipefail\n" + script], cwd=paths.PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"exit {run.returncode}\n{script}\n{run.stdout}\n{run.stderr}"
    return run.stdout


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    """README's copy steps, run in a temporary DEST; the environment they ran with."""
    setup, serve, calls = readme_blocks()
    assert "--model-repository $DEST/models --backends $DEST/backends --server-venv $DEST/venv" in serve
    dest = tmp_path_factory.mktemp("my-triton")
    env = {**os.environ, "DEST": str(dest), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    bash(setup, env)
    return dest, env, calls


def test_the_copy_holds_the_pattern_and_only_the_kernel(copied):
    dest, _, _ = copied
    assert sorted(p.name for p in (dest / "backends").iterdir()) == ["circuit_breaker", "onnxruntime"]
    assert sorted(p.name for p in (dest / "models").iterdir()) == ["iris", "iris_breaker"]
    python = dest / "venv" / "bin" / "python3"
    kernel = subprocess.run([python, "-c", "import pattern_kernel; print(pattern_kernel.__file__)"],
                            capture_output=True, text=True, check=True).stdout
    assert kernel.startswith(str(dest / "venv"))  # installed into it, not the checkout's
    for name in NOT_IN_THE_SERVER:
        found = subprocess.run([python, "-c", f"import importlib.util as u; print(u.find_spec('{name}'))"],
                               capture_output=True, text=True, check=True, cwd=dest).stdout.strip()
        assert found == "None", f"{name} importable in the copy's virtualenv: {found}"


def test_a_fresh_server_answers_with_the_copied_pattern(copied):
    dest, env, calls = copied
    with TritonServer(ServerSettings(model_repository=dest / "models", project_backends=dest / "backends",
                      server_venv=dest / "venv", restrict_admin_apis=False)) as server:
        server.wait_ready_models(["iris_breaker", "iris"])
        assert server.stub_python == dest / "venv" / "bin" / "python3"
        out = bash(calls.replace("localhost:8000", server.http_url), env)
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(answers) == 2, out
    good, fallback = ({o["name"]: o["data"] for o in a["outputs"]} for a in answers)
    assert good["LABEL"] == [0] and good["FALLBACK"] == [False] and good["FALLBACK_REASON"] == [""]
    assert abs(sum(good["PROBABILITIES"]) - 1) < 1e-4 and good["PROBABILITIES"][0] > 0.5
    assert fallback["FALLBACK"] == [True] and fallback["FALLBACK_REASON"] == ["target_error"]
    assert fallback["LABEL"] == [0] and fallback["PROBABILITIES"] == pytest.approx([0.3333, 0.3333, 0.3334])
