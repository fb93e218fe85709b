"""`triton-patterns serve --gateway` as a real subprocess on free ports (Redis, tritonserver, nginx):
it stops in order without waiting out tritonserver's exit timeout while keep-alive clients (HTTP and
gRPC) hold connections through the gateway, leaving no process of its groups; its logs live in one
folder, capped by size with old rotations pruned, and are kept after the stop; an nginx master killed
with SIGKILL is restarted on the same ports, and past the restart limit serve exits 1."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from pattern_runtime import paths
from pattern_runtime.processes import free_ports, group_members, wait_for

pytestmark = pytest.mark.e2e

SETOSA = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "FEATURES", "shape": [1, 4], "datatype": "FP32", "data": SETOSA}]}
READY_TIMEOUT_S = 240
STOP_TIMEOUT_S = 90


class Serve:
    """One `triton-patterns serve` subprocess; its output (stdout and stderr) collected by a thread;
    the process groups it started (its children lead their own groups) recorded once it is ready."""

    def __init__(self, tmp_path: Path, repository: Path, *args: str):
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log_dir = tmp_path / "logs"
        command = [str(Path(sys.executable).with_name("triton-patterns")), "serve", "--gateway",
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                   "--metrics-port", str(self.metrics_port), "--redis-port", "0", "--log-dir", str(self.log_dir),
                   "--data-dir", str(tmp_path / "redis-data"), "--data-store", str(tmp_path / "store.sqlite"),
                   "--model-repository", str(repository), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.groups: list[int] = []

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> None:
        if not wait_for(lambda: "Ctrl-C to stop" in self.lines or self.proc.poll() is not None, READY_TIMEOUT_S, 0.2) \
                or self.proc.poll() is not None:
            pytest.fail(f"serve (pid {self.proc.pid}, exit {self.proc.poll()}) not ready on HTTP {self.http_port} "
                        f"within {READY_TIMEOUT_S}s:\n{self.output[-6000:]}")
        self.record_groups()

    def record_groups(self) -> None:
        self.groups = sorted(set(self.groups) | set(children(self.proc.pid)))

    def nginx_pid(self) -> int | None:
        """The nginx master serve started (its workers are the master's children), None while there is none."""
        masters = [p for p in children(self.proc.pid) if _comm(p) == "nginx"]
        assert len(masters) <= 1, masters
        return masters[0] if masters else None

    def stop(self) -> float:
        """SIGTERM; the seconds until serve exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.wait()
        return time.monotonic() - started

    def wait(self) -> int:
        try:
            returncode = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit within {STOP_TIMEOUT_S}s:\n{self.output[-6000:]}")
        self._reader.join(10)
        return returncode

    def left_running(self) -> dict[int, list[int]]:
        """{group serve started: its members still alive}, empty groups left out."""
        return {group: members for group in self.groups if (members := group_members(group))}

    def kill(self) -> None:
        """After a failed test: SIGKILL serve and the process groups it started."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for group in self.groups:
            if group_members(group):
                os.killpg(group, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split() if stat else []
        if fields and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


SLOW_MS = 4000  # in flight when the stop begins; less than the gateway's worker_shutdown_timeout (5 s)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """iris, and iris_slow answering 4 s late: a repository that loads in seconds."""
    repo = tmp_path_factory.mktemp("serve-repository")
    for model in ("iris", "iris_slow"):
        shutil.copytree(paths.MODEL_REPOSITORY / model, repo / model)
    config = repo / "iris_slow" / "config.pbtxt"
    config.write_text(re.sub(r'(key: "latency_ms", value: \{ string_value: ")\d+', rf"\g<1>{SLOW_MS}",
                             config.read_text()))
    assert f'"{SLOW_MS}"' in config.read_text()
    return repo


@pytest.fixture()
def serve(tmp_path, repository):
    started = []

    def start(*args: str) -> Serve:
        run = Serve(tmp_path, repository, *args)
        started.append(run)
        run.wait_ready()
        return run

    yield start
    for run in started:
        run.kill()


def stops_of(run: Serve) -> list[str]:
    return [line for line in run.lines if line.startswith("stopping ")]


def _tensor(module, row=SETOSA):
    tensor = module.InferInput("FEATURES", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([row], dtype=np.float32))
    return tensor


def _this_run(log: Path) -> str:
    return log.read_text(errors="replace").rsplit("\n=== ", 1)[-1]


def test_serve_stops_in_order_without_waiting_for_keepalive_clients_and_leaves_nothing(serve):
    run = serve()
    gateway = f"http://127.0.0.1:{run.http_port}"
    session = requests.Session()  # keeps its connection to nginx, which keeps one to tritonserver
    assert session.post(f"{gateway}/v2/models/iris/infer", json=BODY).json()["outputs"][0]["data"] == [0]
    http = httpclient.InferenceServerClient(f"127.0.0.1:{run.http_port}", concurrency=2)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{run.grpc_port}")  # one HTTP/2 connection, kept
    assert http.infer("iris", [_tensor(httpclient)]).as_numpy("LABEL").tolist() == [[0]]
    assert grpc.infer("iris", [_tensor(grpcclient)]).as_numpy("LABEL").tolist() == [[0]]
    with ThreadPoolExecutor(1) as pool:  # a request in flight when the stop begins is answered
        slow = pool.submit(requests.post, f"{gateway}/v2/models/iris_slow/infer", json=BODY, timeout=30)
        time.sleep(SLOW_MS / 1000 / 2)
        seconds = run.stop()
        answer = slow.result()
    print(f"serve --gateway stopped in {seconds:.1f}s under keep-alive clients:", *stops_of(run), sep="\n  ")
    assert run.proc.returncode == 0, run.output[-4000:]
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [0], answer.text
    stops = [line.split(" ...")[0] for line in stops_of(run)]
    assert stops == ["stopping gateway", "stopping tritonserver", "stopping redis-server", "stopping redis-cache"], \
        run.output[-3000:]
    log = _this_run(run.log_dir / "tritonserver.log")
    assert "Exit timeout expired" not in log, log[-3000:]
    waits = [int(n) for n in re.findall(r"Found (\d+) HTTP service connections", log)]
    assert not any(waits), f"tritonserver waited for HTTP connections {waits}:\n{log[-3000:]}"
    assert run.left_running() == {}, f"left running after serve exited: {run.left_running()}"
    http.close()
    grpc.close()
    session.close()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def test_logs_are_capped_pruned_and_kept_after_the_stop(serve):
    max_bytes, keep, batch = 2048, 2, 5
    run = serve("--log-max-size", str(max_bytes), "--log-keep", str(keep))
    gateway = f"http://127.0.0.1:{run.http_port}"
    access = run.log_dir / "nginx-access.log"
    session = requests.Session()

    def logged(marker: str) -> int:  # access-log lines of requests to that "model"
        return sum(p.read_text().count(f'"model":"{marker}"') for p in run.log_dir.glob("nginx-access.log*"))

    def send(marker: str, count: int = 1) -> None:
        for _ in range(count):  # any request makes one access-log line (this one a 400: no such model)
            assert session.get(f"{gateway}/v2/models/{marker}/ready").status_code == 400
        assert wait_for(lambda: logged(marker) == count, 10), f"nginx did not log {marker} {count} times"

    # batches of 5 requests (~1.1 kB of access log), each sent once the last one is written; a log over
    # its size is rotated by serve before the next batch: every file then holds at most max_bytes + a batch
    send("first-request")
    most_files, batches = 0, 0
    while logged("first-request") or not access.with_name(f"{access.name}.{keep}").exists():
        assert batches < 100, f"no rotation of {access} after {batches} batches:\n{run.output[-3000:]}"
        batches += 1
        send(f"batch-{batches:04d}", batch)
        assert wait_for(lambda: _size(access) <= max_bytes, 15), \
            f"{access} ({_size(access)} bytes) not rotated:\n{run.output[-3000:]}"
        most_files = max(most_files, len(list(run.log_dir.glob("nginx-access.log*"))))
    send("last-request")
    assert run.stop() and run.proc.returncode == 0, run.output[-4000:]

    files = sorted(run.log_dir.glob("nginx-access.log*"))
    assert [p.name for p in files] == ["nginx-access.log", "nginx-access.log.1", "nginx-access.log.2"]
    assert most_files == keep + 1
    line = max(len(text) + 1 for p in files for text in p.read_text().splitlines())
    sizes = {p.name: _size(p) for p in files}
    assert all(size <= max_bytes + batch * line for size in sizes.values()), (sizes, line)
    assert logged("first-request") == 0 and logged("batch-0001") == 0  # the oldest deleted
    assert logged("last-request") == 1 and logged(f"batch-{batches:04d}") == batch  # the newest kept
    # every log of serve is in the folder, rotated when over its size, and still there after the stop
    kept = {p.name for p in run.log_dir.iterdir()}
    assert {"tritonserver.log", "tritonserver.log.1", "redis-server.log", "redis-cache.log",
            "nginx-error.log"} <= kept, kept
    assert not {f"{name}.{keep + 1}" for name in ("tritonserver.log", "nginx-access.log")} & kept, kept
    assert "Ready to accept connections" in (run.log_dir / "redis-server.log").read_text()
    assert "successfully unloaded" in (run.log_dir / "tritonserver.log").read_text()


def test_a_killed_nginx_is_restarted_on_its_ports_then_given_up_past_the_limit(serve):
    run = serve("--max-restarts", "1")
    gateway = f"http://127.0.0.1:{run.http_port}"
    first = run.nginx_pid()
    os.kill(first, signal.SIGKILL)
    # the killed master's workers go on serving on the inherited sockets until serve ends them
    assert wait_for(lambda: run.nginx_pid() not in (None, first) and _status(f"{gateway}/v2/health/ready") == 200,
                    20), \
        f"nginx not restarted on port {run.http_port}:\n{run.output[-4000:]}"
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{run.grpc_port}")
    assert grpc.infer("iris", [_tensor(grpcclient)]).as_numpy("LABEL").tolist() == [[0]]  # gRPC port too
    grpc.close()
    death = next(i for i, line in enumerate(run.lines) if f"gateway pid {first} died (killed by SIGKILL)" in line)
    assert "restarting" in run.lines[death] and "nginx-error.log" in run.lines[death], run.lines[death]
    assert any("starting: /usr/sbin/nginx" in line for line in run.lines[death:]), "no log tail with the death"
    # logged once restart() returns, which may be a moment after the new nginx answers
    assert wait_for(lambda: any("gateway restarted (restart 1 of 1)" in line for line in run.lines), 10), \
        run.output[-4000:]

    run.record_groups()  # the new nginx's group too
    os.kill(run.nginx_pid(), signal.SIGKILL)
    assert run.wait() == 1, run.output[-4000:]
    assert "serve: gateway given up: stopping" in run.output
    assert run.left_running() == {}, f"left running after serve exited: {run.left_running()}"


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None
