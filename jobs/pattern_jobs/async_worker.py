"""Workers of the asynchronous pattern: read jobs from the Redis Stream (consumer group), run
them on their target models through Triton gRPC, store the results, notify, acknowledge.

    triton-patterns worker --processes 2 --url 127.0.0.1:8001 --redis redis://127.0.0.1:6379/0
    make worker WORKERS=2

A worker reads up to `--prefetch` jobs at once and runs them as a batch: jobs for the same model,
version and input layout go to the model in one request (cut at its max_batch_size rows), their
starts and ends are pipelined to Redis, and each job still has its own state, retries and dead
letter: when a batched request fails with an error a row can cause (INVALID_ARGUMENT,
INTERNAL), its halves are retried apart until the failing job is alone. Jobs
pending longer than `--idle-timeout-ms` (their worker died, or a retry is due) are taken over
with XAUTOCLAIM; a worker keeps the jobs in its hands fresh (XCLAIM JUSTID) so that a slow job
is not taken from a live worker. A failed attempt is retried up to `--max-attempts` deliveries,
then the job goes to the dead-letter stream as `failed` with its last error (at once for bad
input: INVALID_ARGUMENT). While Triton is unreachable the job in hand waits, no attempt spent.
SIGTERM or SIGINT: finish the jobs in hand, then exit. With `--processes N` a supervisor runs
N workers (restarting any that dies) and forwards the signal to each by pid. A Redis too old for
the queue's scripts (before 7.0) is refused at start with exit code 78 (EX_CONFIG), which the
supervisor does not restart: it stops the others and exits with it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import redis
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from pattern_kernel.batching import request_batch_size
from pattern_kernel.job_queue import Job, JobQueue, UnsupportedRedis, decide
from pattern_kernel.redis_link import REDIS_URL_ENV
from triton_patterns.credentials import authorize, grpc_client_options
from triton_patterns.endpoints import DEFAULT_REDIS, server_url

LOG = logging.getLogger("pattern_jobs.async_worker")
NOT_RETRYABLE = ("StatusCode.INVALID_ARGUMENT",)
# errors one row of a batched request can cause: the batch is split to find that row's job
ROW_ERRORS = ("StatusCode.INVALID_ARGUMENT", "StatusCode.INTERNAL")
EX_CONFIG = 78  # sysexits.h: a worker that cannot run with its configuration, not to be restarted


@dataclass
class WorkerSettings:
    triton_url: str = field(default_factory=lambda: server_url("grpc"))
    redis_url: str = DEFAULT_REDIS
    namespace: str = "async"
    ttl_seconds: int = 3600
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    idle_timeout_ms: int = 30000
    max_attempts: int = 3
    prefetch: int = 64
    block_ms: int = 1000
    job_timeout_s: float = 60.0


class Worker:
    """One consumer of the group. `run(stop)` until `stop` is set; then the jobs in hand finish."""

    def __init__(self, settings: WorkerSettings):
        self.s = settings
        self.queue = JobQueue(redis.Redis.from_url(settings.redis_url, socket_timeout=10), settings.namespace,
                              settings.ttl_seconds)
        # keys ($TRITON_PATTERNS_API_KEY) and TLS ($TRITON_PATTERNS_GRPC_ROOT_CERT) as the SDK's
        self.triton = authorize(grpcclient.InferenceServerClient(settings.triton_url, **grpc_client_options()))
        self.outputs: dict[tuple[str, int], list[str]] = {}
        self.max_batch: dict[tuple[str, int], int] = {}
        self.in_hand: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.counts = {"done": 0, "failed": 0, "retried": 0, "duplicate": 0}

    # -- the loop

    def run(self, stop: threading.Event) -> dict[str, int]:
        self.queue.check_server()
        self._triton_up()  # connect before joining: the first jobs do not wait for the channel to Triton
        self.queue.register(self.s.name)
        heartbeat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
        heartbeat.start()
        reclaim_every = max(self.s.idle_timeout_ms / 2000, 0.05)
        next_reclaim = 0.0
        LOG.info("worker %s: stream %s, triton %s", self.s.name, self.queue.stream, self.s.triton_url)
        while not stop.is_set():
            try:
                jobs = []
                if time.monotonic() >= next_reclaim:
                    jobs = self.queue.reclaim(self.s.name, self.s.idle_timeout_ms, self.s.prefetch)
                    next_reclaim = 0.0 if len(jobs) == self.s.prefetch else time.monotonic() + reclaim_every
                if not jobs:
                    jobs = self.queue.read(self.s.name, self.s.prefetch, self.s.block_ms)
                self._hold(jobs)
                self.handle_batch(jobs, stop)  # in hand: finished even when stop is set meanwhile
            except redis.ConnectionError as exc:
                LOG.warning("worker %s: Redis unreachable (%s); retrying in 1 s", self.s.name, exc)
                stop.wait(1.0)
        LOG.info("worker %s: stopped; %s", self.s.name, self.counts)
        return self.counts

    def _hold(self, jobs: list[Job]) -> None:
        with self.lock:
            self.in_hand.update((j.entry_id, j) for j in jobs)

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = max(self.s.idle_timeout_ms / 3000, 0.05)
        while True:
            time.sleep(interval)
            with self.lock:
                ids = list(self.in_hand)
            try:
                self.queue.touch(self.s.name, ids)
            except redis.RedisError:
                pass
            if stop.is_set() and not ids:
                return

    # -- a batch of jobs

    def handle(self, job: Job, stop: threading.Event) -> str:
        """One job: `handle_batch` of one."""
        return self.handle_batch([job], stop)[0]

    def handle_batch(self, jobs: list[Job], stop: threading.Event) -> list[str]:
        """The jobs read at once. Those for the same model, version and input layout go to the
        model together, in requests of at most its max_batch_size rows; each job is started and
        ended on its own (a batch's starts and ends in one Redis round trip each). Returns each
        job's outcome: done, failed, retried, duplicate or left (stopping during an outage)."""
        outcomes: dict[str, str] = {}
        try:
            runnable = []
            for job in jobs:
                if job.deliveries > self.s.max_attempts:  # e.g. its workers kept dying
                    outcomes[job.entry_id] = self._give_up(job)
                else:
                    runnable.append(job)
            for chunk in self._chunks(runnable):
                outcomes.update(self._run_chunk(chunk, stop))
        except _Outage:
            pass  # stopping during an outage: another worker takes the rest over later
        finally:
            with self.lock:
                for job in jobs:
                    self.in_hand.pop(job.entry_id, None)
        return [outcomes.get(job.entry_id, "left") for job in jobs]

    def _give_up(self, job: Job) -> str:
        last = self.queue.state(job.job_id)
        attempts = job.deliveries - 1
        error = f"{last.error if last and last.error else 'its worker died'} (after {attempts} attempts)"
        return self._count("failed" if self.queue.fail(job, error, attempts=attempts) else "duplicate")

    def _chunks(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs grouped by model, version and input layout (names, dtypes, row shapes), in the
        order read, each group cut at the model's max_batch_size rows (one job per request for a
        model that does not batch)."""
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            layout = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(job.inputs.items()))
            groups.setdefault((job.model, job.version, layout), []).append(job)
        chunks = []
        for (model, version, _), group in groups.items():
            limit, chunk, rows = self._max_batch_size(model, version) if len(group) > 1 else 0, [], 0
            for job in group:
                size = request_batch_size(job.inputs)
                if chunk and (limit == 0 or rows + size > limit):
                    chunks.append(chunk)
                    chunk, rows = [], 0
                chunk.append(job)
                rows += size
            chunks.append(chunk)
        return chunks

    def _run_chunk(self, chunk: list[Job], stop: threading.Event) -> dict[str, str]:
        started_ok = self.queue.start_many(chunk, self.s.name)
        duplicates = [job for job, ok in zip(chunk, started_ok, strict=True) if not ok]
        if duplicates:
            self.queue.acknowledge(duplicates)
        jobs = [job for job, ok in zip(chunk, started_ok, strict=True) if ok]
        outcomes = {job.entry_id: self._count("duplicate") for job in duplicates}
        if not jobs:
            return outcomes
        started = time.time()
        answers = self._attempt(jobs, stop)
        pipe, planned = self.queue.pipeline(), []
        for job in jobs:
            answer = answers[job.entry_id]
            timings = _timings(job.created, started)
            if isinstance(answer, InferenceServerException):
                planned.append(self._plan_failure(job, answer, timings, pipe))
            else:
                outputs, version, infer_ms = answer
                self.queue.complete(job, outputs, version, {**timings, "infer_ms": infer_ms}, pipe=pipe)
                planned.append("done")
        for job, what, written in zip(jobs, planned, pipe.execute(), strict=True):
            outcomes[job.entry_id] = self._count(what if written or what == "retried" else "duplicate")
        return outcomes

    def _plan_failure(self, job: Job, exc: InferenceServerException, timings: dict, pipe) -> str:
        message = f"{exc.message()} ({exc.status()})"
        error = message if job.model in message else f"model '{job.model}': {message}"
        if decide(job.deliveries, self.s.max_attempts, exc.status() not in NOT_RETRYABLE) == "retry":
            self.queue.retry_later(job, error, pipe=pipe)
            return "retried"
        self.queue.fail(job, error, timings, pipe=pipe)
        return "failed"

    def _attempt(self, jobs: list[Job], stop: threading.Event) -> dict[str, tuple | InferenceServerException]:
        """Each job's (outputs, model version, infer ms) or error, from one request with all
        their rows. When it fails for a reason a row can cause (bad input, the model's own
        error), the halves are tried apart until the failing jobs are alone: one bad row fails
        its own job only."""
        try:
            outputs, version, infer_ms = self.call(_merged(jobs), stop)
        except InferenceServerException as exc:
            if len(jobs) == 1 or exc.status() not in ROW_ERRORS:
                return {job.entry_id: exc for job in jobs}
            half = len(jobs) // 2
            return {**self._attempt(jobs[:half], stop), **self._attempt(jobs[half:], stop)}
        if len(jobs) == 1:
            return {jobs[0].entry_id: (outputs, version, infer_ms)}
        answers, offset = {}, 0
        for job in jobs:
            rows = request_batch_size(job.inputs)
            answers[job.entry_id] = ({n: a[offset:offset + rows] for n, a in outputs.items()}, version, infer_ms)
            offset += rows
        return answers

    def _count(self, what: str) -> str:
        self.counts[what] += 1
        return what

    def _max_batch_size(self, model: str, version: int) -> int:
        """The model's max_batch_size (0: one job per request, also when its config is unreadable:
        each job then fails or succeeds on its own)."""
        key = (model, version)
        if key not in self.max_batch:
            try:
                config = self.triton.get_model_config(model, _version(version), as_json=True)["config"]
                self.max_batch[key] = int(config.get("max_batch_size", 0))
            except InferenceServerException:
                return 0
        return self.max_batch[key]

    def _output_names(self, model: str, version: int) -> list[str]:
        key = (model, version)
        if key not in self.outputs:
            meta = self.triton.get_model_metadata(model, _version(version), as_json=True)
            self.outputs[key] = [o["name"] for o in meta["outputs"]]
        return self.outputs[key]

    def call(self, job: Job, stop: threading.Event) -> tuple[dict[str, np.ndarray], str, float]:
        """The target model's outputs for the job's inputs; while Triton is unreachable, wait
        (the job stays in hand, no attempt is spent) until it is back or `stop` is set."""
        wait = 0.2
        while True:
            try:
                names = self._output_names(job.model, job.version)
                inputs = []
                for name, array in job.inputs.items():
                    tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                    tensor.set_data_from_numpy(array)
                    inputs.append(tensor)
                requested = [grpcclient.InferRequestedOutput(n) for n in names]
                start = time.perf_counter()
                result = self.triton.infer(job.model, inputs, model_version=_version(job.version), outputs=requested,
                                           client_timeout=self.s.job_timeout_s)
                infer_ms = (time.perf_counter() - start) * 1000
                version = result.get_response().model_version
                return {n: result.as_numpy(n) for n in names}, version, infer_ms
            except InferenceServerException:
                if self._triton_up():
                    raise
                if stop.is_set():
                    raise _Outage() from None
                LOG.warning("worker %s: Triton unreachable; job %s waits %.1f s", self.s.name, job.job_id, wait)
                stop.wait(wait)
                wait = min(wait * 2, 5.0)

    def _triton_up(self) -> bool:
        try:
            return bool(self.triton.is_server_live(client_timeout=2))
        except InferenceServerException:
            return False


class _Outage(Exception):
    """Triton was unreachable when the worker was asked to stop."""


def _version(version: int) -> str:
    return "" if version is None or int(version) < 0 else str(version)


def _merged(jobs: list[Job]) -> Job:
    """One request's worth: the jobs' inputs concatenated along the batch dimension."""
    if len(jobs) == 1:
        return jobs[0]
    first = jobs[0]
    inputs = {name: np.concatenate([job.inputs[name] for job in jobs]) for name in first.inputs}
    return Job(first.entry_id, f"{first.job_id} and {len(jobs) - 1} more", first.model, first.version, inputs,
               min(job.created for job in jobs), max(job.deliveries for job in jobs))


def _timings(created: float, started: float) -> dict[str, float]:
    now = time.time()
    return {"queue_ms": (started - created) * 1000, "total_ms": (now - created) * 1000}


# --------------------------------------------------------------------------- processes


def run_one(settings: WorkerSettings) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        Worker(settings).run(stop)
    except UnsupportedRedis as exc:
        LOG.error("worker %s: %s", settings.name, exc)
        return EX_CONFIG
    return 0


def worker_command(name: str, grpc_url: str, redis_url: str, *options: str) -> list[str]:
    """argv of one worker process (`--processes 1`) named `name`; `options`: more flags."""
    return [sys.executable, "-m", "pattern_jobs.async_worker", "--processes", "1", "--name", name,
            "--url", grpc_url, "--redis", redis_url, *options]


def start_workers(names: list[str], grpc_url: str, redis_url: str, log_dir, *options: str,
                  timeout: float = 60.0) -> list:
    """Worker processes (logs `<log_dir>/<name>.log`), returned once each is a consumer of the
    queue (an earlier worker's name, holding no job, is removed first so that the new one is seen
    joining); if they do not all join within `timeout`, they are stopped (by pid) and RuntimeError."""
    from pathlib import Path

    from pattern_runtime.processes import ManagedProcess, wait_for

    with redis.Redis.from_url(redis_url) as client:
        queue = JobQueue(client)
        queue.forget_idle_consumers(names)
        workers = [ManagedProcess(worker_command(n, grpc_url, redis_url, *options), Path(log_dir) / f"{n}.log")
                   for n in names]
        joined = wait_for(lambda: set(names) <= queue.consumers(), timeout=timeout, interval=0.1)
    if not joined:
        for worker in workers:
            worker.terminate(timeout=5)
        raise RuntimeError(f"workers {names} did not join the queue within {timeout:.0f} s; logs in {log_dir}")
    return workers


def _child_argv(args: argparse.Namespace, index: int) -> list[str]:
    return worker_command(
        f"{args.name}-{index}", args.url, args.redis,
        "--namespace", args.namespace, "--ttl-seconds", str(args.ttl_seconds),
        "--idle-timeout-ms", str(args.idle_timeout_ms), "--max-attempts", str(args.max_attempts),
        "--prefetch", str(args.prefetch), "--block-ms", str(args.block_ms),
        "--job-timeout", str(args.job_timeout),
    )


def supervise(args: argparse.Namespace) -> int:
    """N worker processes; a SIGTERM/SIGINT is forwarded to each by pid and waited for; a worker
    that dies otherwise is restarted after a second, except one that refused its configuration
    (EX_CONFIG): then the others are stopped and the supervisor exits with it."""
    from pattern_runtime.processes import await_parent_death_signal, with_parent_death_signal

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())

    def spawn(index: int) -> subprocess.Popen:
        child = subprocess.Popen(with_parent_death_signal(_child_argv(args, index)))
        await_parent_death_signal(child.pid)
        return child

    children = {i: spawn(i) for i in range(args.processes)}
    print(f"workers started: {' '.join(str(p.pid) for p in children.values())}", flush=True)
    refused = 0
    while not refused and not stopping.wait(0.5):
        for i, child in list(children.items()):
            if child.poll() == EX_CONFIG:
                LOG.error("worker %s-%d (pid %d) refused its configuration (exit %d): stopping the workers",
                          args.name, i, child.pid, EX_CONFIG)
                refused = EX_CONFIG
                break
            if child.poll() is not None:
                LOG.warning("worker %s-%d (pid %d) exited with %s; restarting",
                            args.name, i, child.pid, child.returncode)
                time.sleep(1.0)
                children[i] = spawn(i)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    # a worker ended by the SIGTERM sent to it stopped as asked (one just restarted may not have
    # its handler yet, and holds no job then)
    codes = [child.wait() for child in children.values()]
    return refused or max((0 if c == -signal.SIGTERM else abs(c) for c in codes), default=0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = WorkerSettings()
    p.add_argument("--processes", type=int, default=2, help="worker processes (default %(default)s)")
    p.add_argument("--url", default=defaults.triton_url, help="Triton gRPC address (default %(default)s)")
    p.add_argument("--redis", default=os.environ.get(REDIS_URL_ENV) or defaults.redis_url,
                   help=f"Redis URL (default ${REDIS_URL_ENV} or {defaults.redis_url})")
    p.add_argument("--namespace", default=defaults.namespace)
    p.add_argument("--ttl-seconds", type=int, default=defaults.ttl_seconds, help="results' lifetime")
    p.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}", help="consumer name (prefix)")
    p.add_argument("--idle-timeout-ms", type=int, default=defaults.idle_timeout_ms,
                   help="take over a job pending this long (default %(default)s)")
    p.add_argument("--max-attempts", type=int, default=defaults.max_attempts,
                   help="deliveries before a job goes to the dead-letter stream (default %(default)s)")
    p.add_argument("--prefetch", type=int, default=defaults.prefetch, help="jobs read at once per process")
    p.add_argument("--block-ms", type=int, default=defaults.block_ms, help="XREADGROUP block time")
    p.add_argument("--job-timeout", type=float, default=defaults.job_timeout_s, help="seconds per Triton call")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.processes > 1:
        return supervise(args)
    return run_one(WorkerSettings(
        triton_url=args.url, redis_url=args.redis, namespace=args.namespace, ttl_seconds=args.ttl_seconds,
        name=args.name, idle_timeout_ms=args.idle_timeout_ms, max_attempts=args.max_attempts,
        prefetch=args.prefetch, block_ms=args.block_ms, job_timeout_s=args.job_timeout,
    ))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pattern_jobs.async_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
