"""Run as a process of its own by test_spawn.py: starts servers with this project's launchers while
gRPC calls are busy in the same process, and prints its progress, one JSON object per line.

    spawn_churn.py churn DIR --rounds N --triton-every K
        starts a small tritonserver (the target), then 4 threads call it over gRPC (2 streams,
        2 unary) while the main thread starts and stops redis-server and an nginx gateway N
        times, and another small tritonserver every K rounds; {"start": what} before each start
        or stop, {"done": what, "pid": pid} after it, and at the end {"calls": {...}, "errors": [...]}.
    spawn_churn.py hold DIR
        starts redis-server, a small tritonserver and a gateway, prints {"holding": {name: pid}}
        and waits to be killed.
    spawn_churn.py atfork DIR
        counts the pthread_atfork "prepare" handlers run while it starts redis-server and runs
        ManagedProcess commands, then (the control) while it runs one Popen with a preexec_fn:
        {"atfork": {"managed": n, "preexec_fn": m}}.

A test that waits on this process can bound each step and dump its stacks when one never ends,
which it could not do from inside a process whose thread is stuck in fork() holding the GIL.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from test_launcher import IDENTITY_MODEL, embedded, write_model

from pattern_runtime.gateway import Gateway
from pattern_runtime.processes import ManagedProcess
from pattern_runtime.redis_server import RedisServer

STREAMS, UNARY = 2, 2
STEP = ["the target's start"]  # the step in progress, named in the gRPC errors


def say(**event) -> None:
    print(json.dumps(event), flush=True)


def small_triton(directory: Path, name: str):
    return embedded(directory / name, write_model(directory / name / "repo", "identity", IDENTITY_MODEL))


def step(what: str, action):
    STEP[0] = what
    say(start=what)
    result = action()
    say(done=what, pid=getattr(result, "pid", None))
    return result


class GrpcLoad:
    """Threads calling `identity` over gRPC until stopped, in bursts: a client (a stream, or unary
    calls) opened, a few calls, closed, a short random pause. gRPC's fork handlers do nothing
    while a thread is inside a gRPC call (an open stream always is); in the gaps they act."""

    def __init__(self, url: str):
        self.url = url
        self.calls = {"stream": 0, "unary": 0}
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(self._stream,), daemon=True) for _ in range(STREAMS)]
        self.threads += [threading.Thread(target=self._loop, args=(self._unary,), daemon=True) for _ in range(UNARY)]

    @staticmethod
    def _input():
        tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        return tensor

    def _loop(self, burst) -> None:
        while not self.stopping.is_set():
            try:
                with grpcclient.InferenceServerClient(self.url) as client:
                    burst(client, random.randint(1, 20))
            except Exception as exc:  # noqa: BLE001 - reported at the end
                self.errors.append(f"{burst.__name__}, during {STEP[0]}: {exc!r}")
                return
            time.sleep(random.random() * 0.05)

    def _stream(self, client, calls: int) -> None:
        answered = threading.Semaphore(0)

        def callback(result, error):
            if error is not None:
                self.errors.append(f"stream, during {STEP[0]}: {error}")
            answered.release()

        client.start_stream(callback=callback)
        for _ in range(calls):
            client.async_stream_infer("identity", [self._input()])
            if not answered.acquire(timeout=60):
                raise TimeoutError("no stream response within 60 s")
            self.calls["stream"] += 1
        client.stop_stream()

    def _unary(self, client, calls: int) -> None:
        for _ in range(calls):
            client.infer("identity", [self._input()], client_timeout=60)
            self.calls["unary"] += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=70)


def churn(directory: Path, rounds: int, triton_every: int) -> None:
    target = step("tritonserver (target)", small_triton(directory, "target").start)
    try:
        with GrpcLoad(target.grpc_url) as load:
            for round_ in range(1, rounds + 1):
                redis = step(f"redis-server, round {round_}", RedisServer(directory=directory / "redis").start)
                gateway = step(f"gateway, round {round_}",
                               Gateway(target.http_url, target.grpc_url, directory=directory / "gateway").start)
                if round_ % triton_every == 0:
                    other = step(f"tritonserver, round {round_}", small_triton(directory, f"other{round_}").start)
                    step(f"stop tritonserver, round {round_}", other.stop)
                step(f"stop gateway, round {round_}", gateway.stop)
                step(f"stop redis-server, round {round_}", redis.stop)
        say(calls=load.calls, errors=load.errors)
    finally:
        target.stop()


def hold(directory: Path) -> None:
    redis = RedisServer(directory=directory / "redis").start()
    triton = small_triton(directory, "held").start()
    gateway = Gateway(triton.http_url, triton.grpc_url, directory=directory / "gateway").start()
    say(holding={"redis-server": redis.pid, "tritonserver": triton.pid, "nginx": gateway.pid})
    threading.Event().wait()


def atfork(directory: Path) -> None:
    prepared = [0]
    prepare = ctypes.CFUNCTYPE(None)(lambda: prepared.__setitem__(0, prepared[0] + 1))
    # glibc's pthread_atfork is a static wrapper around this exported one (NULL: no DSO to unload with)
    if ctypes.CDLL(None).__register_atfork(prepare, None, None, None) != 0:
        raise OSError("__register_atfork failed")
    RedisServer(directory=directory / "redis").start().stop()
    for _ in range(5):
        ManagedProcess(["true"], directory / "true.log").wait(30)
    managed = prepared[0]
    subprocess.run(["true"], preexec_fn=lambda: None, check=True)
    say(atfork={"managed": managed, "preexec_fn": prepared[0] - managed})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["churn", "hold", "atfork"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--triton-every", type=int, default=5)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    if args.mode == "churn":
        churn(args.directory, args.rounds, args.triton_every)
    elif args.mode == "hold":
        hold(args.directory)
    else:
        atfork(args.directory)


if __name__ == "__main__":
    sys.exit(main())
