"""What a new user runs, run for real: `triton-patterns serve` as a
subprocess on free ports (with the embedded Redis it starts, its data in the test's folder, and
the data store it seeds), every
command of the fenced shell blocks in README.md and docs/patterns/*.md against it, `triton-patterns
perf`, and SIGTERM stopping the server and its Redis.

How the command test works: each ```bash block is one test, run by bash from the repository root
with `set -eo pipefail` (a failing command fails the block and is named), `.venv/bin` first on PATH
(the pattern pages write `triton-patterns`), and the stack's addresses in TRITON_PATTERNS_URL,
TRITON_PATTERNS_GRPC_URL, TRITON_PATTERNS_METRICS_URL and TRITON_PATTERNS_REDIS_URL. Addresses
written with the default ports (localhost:8000, 127.0.0.1:8001, :8002, 127.0.0.1:6379) are
rewritten to the stack's free ports: that server is what the docs assume. A block preceded by
`<!-- doc-test: skip REASON -->` is reported as skipped with REASON; an output line starting with
`{"error"` (a curl answer carrying an error) fails the block too. Blocks run in file order, since
some continue from the one before (a job id, a weight change and its reset).

The tests of this module share one server and run in order: the last one stops it.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pattern_runtime import paths
from pattern_runtime.processes import free_ports
from triton_patterns.client import PatternClient

# serve's start and each doc block have 600-s deadlines of their own
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DOCS = [paths.PROJECT_ROOT / "README.md", *sorted((paths.PROJECT_ROOT / "docs" / "patterns").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")
SKIP = re.compile(r"<!--\s*doc-test:\s*skip\s+(?P<reason>.+?)\s*-->")
SHELL = {"bash", "sh", "shell", "console"}
VENV_BIN = Path(sys.executable).parent
START_DEADLINE_S = 600  # a hang guard only: a slow machine takes minutes to load every model
BLOCK_DEADLINE_S = 600


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    text: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(paths.PROJECT_ROOT)}:{self.line}"


def shell_blocks(path: Path) -> list[Block]:
    """The fenced shell blocks of a markdown file, with the skip reason of the comment before each."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening["lang"]:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{path}:{i + 1}: fence ``` not closed")
        if opening["lang"] in SHELL:
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP.search(before)
            indent = len(opening["indent"])
            body = "\n".join(line[indent:] for line in lines[i + 1:end])
            blocks.append(Block(path, i + 1, body, skip["reason"] if skip else None))
        i = end + 1
    return blocks


BLOCKS = [block for doc in DOCS for block in shell_blocks(doc)]


class Served:
    """`triton-patterns serve` on free ports, and `triton-patterns worker` for the async pages."""

    def __init__(self, tmp: Path, *serve_args: str):
        self.http, self.grpc, self.metrics, self.redis = free_ports(4)
        self.tmp = tmp
        self.env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "TRITON_PATTERNS_URL": f"127.0.0.1:{self.http}",
                    "TRITON_PATTERNS_GRPC_URL": f"127.0.0.1:{self.grpc}",
                    "TRITON_PATTERNS_METRICS_URL": f"127.0.0.1:{self.metrics}",
                    "TRITON_PATTERNS_REDIS_URL": f"redis://127.0.0.1:{self.redis}/0",
                    "TRITON_PATTERNS_BATCH_DB": f"sqlite:///{tmp / 'batch.sqlite'}"}
        self.argv = [str(VENV_BIN / "triton-patterns"), "serve", "--http-port", str(self.http), "--grpc-port",
                     str(self.grpc), "--metrics-port", str(self.metrics), "--redis-port", str(self.redis),
                     "--data-store", str(tmp / "store.sqlite"), "--data-dir", str(tmp / "redis-data"), *serve_args]
        self.log = tmp / "serve.log"
        self.worker = None
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        """The serve command (again, after a stop: the same ports and data folder); its output
        appended to `log`, the start's offset kept for `banner`."""
        serve_env = {k: v for k, v in self.env.items() if k != "TRITON_PATTERNS_REDIS_URL"}  # its own Redis
        serve_env["TRITON_PATTERNS_STATE_DIR"] = str(self.tmp / "state")  # its logs there, not in ~/.local/state
        self._banner_at = self.log.stat().st_size if self.log.exists() else 0
        return subprocess.Popen(self.argv, stdout=self.log.open("a"), stderr=subprocess.STDOUT, env=serve_env,
                                cwd=paths.PROJECT_ROOT)

    def banner(self) -> str:
        """What the latest start printed."""
        with self.log.open() as log:
            log.seek(self._banner_at)
            return log.read()

    def restart(self) -> None:
        """SIGTERM serve, then the same command again, waited for."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(120) == 0, self.banner()[-3000:]
        self.proc = self._start()
        self.wait_ready(worker=False)

    def wait_ready(self, worker: bool = True) -> None:
        started = time.monotonic()
        while "Ctrl-C to stop" not in self.banner():
            if self.proc.poll() is not None:
                pytest.fail(f"triton-patterns serve exited ({self.proc.returncode}):\n{self.banner()[-3000:]}")
            if time.monotonic() - started > START_DEADLINE_S:
                pytest.fail(f"triton-patterns serve not ready after {START_DEADLINE_S} s:\n{self.banner()[-3000:]}")
            time.sleep(0.5)
        if not worker:
            return
        self.worker = subprocess.Popen([str(VENV_BIN / "triton-patterns"), "worker", "--processes", "1"],
                                       stdout=(self.tmp / "worker.log").open("w"), stderr=subprocess.STDOUT,
                                       env=self.env, cwd=paths.PROJECT_ROOT)

    def redis_pid(self) -> int:
        match = re.search(r"redis-server pid (\d+)", self.banner())
        assert match, f"the banner names no embedded Redis:\n{self.banner()}"
        return int(match[1])

    def stop(self) -> None:
        for proc in (self.worker, self.proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    stack = Served(tmp_path_factory.mktemp("served"))
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def test_serve_starts_redis_and_names_it_in_the_banner(served):
    banner = served.banner()
    assert f"redis://127.0.0.1:{served.redis}/0 (embedded redis-server pid {served.redis_pid()}" in banner
    assert "records: digit-<i>, text-<i>" in banner, banner


def test_redis_backed_patterns_answer_without_setup(served):
    with PatternClient(f"127.0.0.1:{served.http}") as client:
        first = client.prediction_cache("The goalkeeper saved a penalty.")
        again = client.prediction_cache("The goalkeeper saved a penalty.")
        assert (first.cache_hit, again.cache_hit) == (False, True)
        assert again.label == first.label
        job = client.submit([6.7, 3.0, 5.2, 2.3])
        assert client.wait(job, timeout_s=60, redis_url=served.env["TRITON_PATTERNS_REDIS_URL"]).status == "done"
        assert client.data_cache("digit-1").label


def _rewrite(text: str, served: Served) -> str:
    for port, new in ((8000, served.http), (8001, served.grpc), (8002, served.metrics), (6379, served.redis)):
        text = re.sub(rf"\b(localhost|127\.0\.0\.1):{port}\b", f"127.0.0.1:{new}", text)
    return text


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_commands_run_as_written(block, served):
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    script = ("set -eo pipefail\ntrap 'echo \"doc-test: this command failed: $BASH_COMMAND\" >&2' ERR\n"
              + _rewrite(block.text, served))
    done = subprocess.run(["bash", "-c", script], cwd=paths.PROJECT_ROOT, env=served.env, text=True,
                          capture_output=True, timeout=BLOCK_DEADLINE_S)
    shown = f"{block.id}:\n{block.text}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert done.returncode == 0, shown
    assert not [line for line in done.stdout.splitlines() if line.startswith('{"error"')], shown


def test_perf_runs_perf_analyzer_on_an_image_model(served, tmp_path):
    out = tmp_path / "digits.csv"
    # --quick: reported whatever the spread of its windows (a busy machine may never give 3 that agree)
    done = subprocess.run([str(VENV_BIN / "triton-patterns"), "perf", "--quick", "digits", "--concurrency-range", "1:2",
                           "-f", str(out)],
                          env={k: v for k, v in served.env.items() if k != "LD_LIBRARY_PATH"},
                          text=True, capture_output=True, timeout=BLOCK_DEADLINE_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert [row["Concurrency"] for row in rows] == ["1", "2"]
    assert all(float(row["Inferences/Second"]) > 0 for row in rows)


def test_sigterm_stops_serve_and_its_redis(served):
    redis_pid = served.redis_pid()
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(120) == 0, served.banner()[-3000:]
    assert not _alive(redis_pid), f"redis-server pid {redis_pid} still runs after serve stopped"


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
