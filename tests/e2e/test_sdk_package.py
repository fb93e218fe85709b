"""The SDK installed on its own, as a user installs it: its wheel (`clients/pyproject.toml`) into a
fresh virtualenv with --no-deps, then its listed dependencies (`clients/requirements.txt`); nothing
else of the project is importable there, and a user's script calls the session's server with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pattern_runtime import paths
from triton_patterns import PatternClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # a virtualenv and pip install

CLIENTS = paths.PROJECT_ROOT / "clients"
NOT_IN_THE_SDK = ("pattern_kernel", "pattern_runtime", "pattern_jobs", "pattern_tools", "export", "loadtest")
ROW = [6.7, 3.0, 5.2, 2.3]

USER_SCRIPT = """
import asyncio, importlib.util, json, sys

from triton_patterns import AsyncPatternClient, PatternClient

http_url, grpc_url, absent = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
row = [6.7, 3.0, 5.2, 2.3]
out = {"importable": [name for name in absent if importlib.util.find_spec(name) is not None]}
with PatternClient(http_url) as client:
    p = client.canary(row, user_id="sdk-user")
    out["canary"] = [p.model, p.label, p.arm, p.target]
    out["synchronous"] = client.synchronous(row, version=1).label
    job = client.submit(row)  # queued: no worker serves the session's queue; its document is read back
    out["job"] = [job, client.result(job).job_id, client.result(job).status]
    out["admin"] = [m.name for m in client.models()][:1]  # admin key from $TRITON_PATTERNS_ADMIN_KEY_FILE


async def streamed():
    async with AsyncPatternClient(grpc_url, "grpc") as client:
        return [p.stage for p in await client.time_difference_stream(row)]

out["stream"] = asyncio.run(streamed())
print(json.dumps(out))
"""


def run(command: list, **kwargs) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"exit {done.returncode}: {' '.join(map(str, command))}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the SDK's wheel (no dependencies) and its listed dependencies."""
    root = tmp_path_factory.mktemp("sdk")
    source = shutil.copytree(CLIENTS, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist",
         source], cwd=root)  # built from a copy: the build writes its egg-info and build/ beside the sources
    [wheel] = (root / "dist").glob("triton_patterns_client-*.whl")
    run([sys.executable, "-m", "venv", root / "venv"])
    python = root / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--no-deps", wheel])
    run([python, "-m", "pip", "install", "-q", "-r", CLIENTS / "requirements.txt"])
    run([python, "-m", "pip", "check"])  # the wheel's declared dependencies are all there
    return python


def test_the_wheel_holds_the_sdk_only(sdk_venv):
    files = run([sdk_venv, "-c", "import importlib.metadata as m; "
                 "print('\\n'.join(str(f) for f in m.files('triton-patterns-client')))"]).split()
    packages = {f.split("/")[0] for f in files if f.endswith(".py")}
    assert packages == {"triton_patterns"}
    assert "triton_patterns/py.typed" in files and "triton_patterns/pattern_methods.py" in files


def test_a_user_script_calls_the_server_with_the_sdk_alone(sdk_venv, triton, tmp_path):
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TRITON_PATTERNS_"))}
    env["TRITON_PATTERNS_ADMIN_KEY_FILE"] = str(paths.ADMIN_KEY_FILE)  # the session server's admin key
    out = json.loads(run([sdk_venv, script, triton.http_url, triton.grpc_url, ",".join(NOT_IN_THE_SDK)],
                         cwd=tmp_path, env=env).splitlines()[-1])
    assert out["importable"] == []
    with PatternClient(triton.http_url) as checkout:  # the checkout's SDK gives the same answers
        expected = checkout.canary(ROW, user_id="sdk-user")
        assert out["canary"] == [expected.model, expected.label, expected.arm, expected.target]
        assert out["synchronous"] == checkout.synchronous(ROW, version=1).label
    job_id, read_back, status = out["job"]
    assert job_id and read_back == job_id and status in ("queued", "running", "done")
    assert out["admin"] and out["stream"] == ["fast", "slow"]
