"""Asynchronous pattern throughput and latency against the synchronous endpoint, in one run.

    python -m loadtest.async_bench                      # starts Redis + tritonserver, 1/2/4 workers
    python -m loadtest.async_bench --jobs 3000 --workers 1,2 --grpc-url 127.0.0.1:8001 \\
        --redis redis://127.0.0.1:6379/0                 # a running stack

`measure_async(...)` is what the benchmark harness calls. First the reference: iris v2
answered synchronously over gRPC at c=`concurrency` (tritonclient asyncio, `reference_s`
seconds). Then for each worker count, two rounds of `jobs` one-row iris jobs submitted through
`iris_async_submit` over gRPC at c=`concurrency` (tritonclient asyncio), with that many workers
(real processes, stopped by pid): "drain" (the queue filled first, then the workers start:
their own rate, first job started to last done) and "live" (workers waiting, jobs submitted
meanwhile: first submit to last done). Then, with `latency_workers` workers and nothing else
running, `latency_jobs` jobs one at a time: submit to the job's end notification (Redis pub/sub),
beside the synchronous call's latency on the same rows. Every answer is checked against the
synchronous one. Prints a table, writes JSON and a plot of jobs/s against workers (--out).

    python -m loadtest.async_bench --appendfsync everysec,always   # the queue Redis' fsync policy

`measure_fsync(...)`: the queue's Redis with its append-only file on, each `appendfsync` setting
in turn (CONFIG SET, the same Redis and tritonserver, `rounds` rounds interleaved): submits per
second at c=`concurrency` with no worker (every submit acknowledged), the submit's latency one at
a time, and jobs/s end to end with `workers` workers ("live"), after a warm-up that is not counted.
Writes fsync.json and
fsync.md (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
import tritonclient.grpc.aio as grpc_aio
from tqdm import tqdm

from loadtest.script import run_script
from pattern_jobs.async_worker import start_workers
from pattern_kernel.job_queue import JobQueue
from pattern_runtime.processes import wait_for
from triton_patterns.client import PatternClient

from . import loadgen

SUBMIT_MODEL, TARGET = "iris_async_submit", "iris"


def iris_rows(count: int) -> np.ndarray:
    """The held-out iris rows, repeated up to `count`."""
    from pattern_runtime.datasets import iris as iris_export

    held_out = iris_export.load_split()[1].astype(np.float32)
    return np.resize(held_out, (count, held_out.shape[1]))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def _reference(grpc_url: str, rows: np.ndarray, concurrency: int,
                     seconds: float) -> tuple[loadgen.Point, list[int]]:
    """The synchronous endpoint at `concurrency`, and its label for every row (the expected answers)."""
    client = grpc_aio.InferenceServerClient(grpc_url)
    try:
        counter = iter(range(1 << 62))

        async def call(row=None):
            tensor = grpc_aio.InferInput("FEATURES", [1, 4], "FP32")
            tensor.set_data_from_numpy(rows[next(counter) % len(rows)][None] if row is None else row[None])
            return await client.infer(TARGET, [tensor])

        point = await loadgen.async_load("sync_iris_grpc", call, concurrency, seconds, warmup=1.0)
        unique, index = np.unique(rows, axis=0, return_inverse=True)
        labels = [int((await call(u)).as_numpy("LABEL").reshape(-1)[0]) for u in unique]
        return point, [labels[i] for i in np.asarray(index).reshape(-1)]
    finally:
        await client.close()


async def _submit_all(grpc_url: str, rows: np.ndarray, concurrency: int) -> tuple[list[str], float, float]:
    """Every row as a job, `concurrency` submits in flight (tritonclient asyncio, as the
    synchronous reference); the ids in row order, start and end."""
    ids: list[str] = [""] * len(rows)
    todo = iter(range(len(rows)))
    client = grpc_aio.InferenceServerClient(grpc_url)

    async def submitter():
        for i in todo:  # one iterator shared by the coroutines: each row once
            tensor = grpc_aio.InferInput("FEATURES", [1, 4], "FP32")
            tensor.set_data_from_numpy(rows[i][None])
            ids[i] = (await client.infer(SUBMIT_MODEL, [tensor])).as_numpy("JOB_ID").reshape(-1)[0].decode()

    try:
        began = time.time()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        return ids, began, time.time()
    finally:
        await client.close()


def _round(count: int, mode: str, grpc_url: str, redis_url: str, rows: np.ndarray, labels: list[int],
           concurrency: int, log_dir: Path, timeout_s: float) -> dict:
    queue = JobQueue(redis.Redis.from_url(redis_url), "async")

    def workers():
        return start_workers([f"bench-{count}-{i}" for i in range(count)], grpc_url, redis_url, log_dir,
                             "--block-ms", "200")

    running = []
    try:
        if mode == "live":
            running = workers()
        ids, began, submitted = asyncio.run(_submit_all(grpc_url, rows, concurrency))
        if mode == "drain":
            running = workers()
        if not wait_for(lambda: queue.depth()["stream"] == 0, timeout=timeout_s, interval=0.05):
            raise RuntimeError(f"{count} worker(s), {mode}: {queue.depth()} after {timeout_s:.0f} s; logs in {log_dir}")
    finally:
        for worker in running:
            worker.terminate(timeout=20)
    return _summary(count, mode, queue.states(ids), labels, began, submitted)


def _summary(count: int, mode: str, states: list, labels: list[int], began: float, submitted: float) -> dict:
    """jobs/s: drain, from the first job's start to the last one's end (the workers' rate, without
    their start-up); live, from the first submit to the last end."""
    done = [s for s in states if s is not None and s.status == "done"]
    starts = [s.created + s.timings["queue_ms"] / 1000 for s in done]
    ends = [s.created + s.timings["total_ms"] / 1000 for s in done]
    wrong = sum(int(np.asarray(s.outputs["LABEL"]).reshape(-1)[0]) != labels[i]
                for i, s in enumerate(states) if s is not None and s.status == "done")
    first = min(starts) if mode == "drain" and starts else began
    jobs_per_s = len(done) / (max(ends) - first) if ends else 0.0
    return {
        "workers": count, "mode": mode, "jobs": len(states), "done": len(done), "wrong": wrong,
        "submit_per_s": len(states) / (submitted - began), "jobs_per_s": jobs_per_s,
        "p50_total_ms": _percentile([s.timings["total_ms"] for s in done], 50),
        "p50_infer_ms": _percentile([s.timings["infer_ms"] for s in done], 50),
        "mean_batch_jobs": float(np.mean([s.batch_jobs for s in done])) if done else 0.0,
    }


def _latency(grpc_url: str, redis_url: str, rows: np.ndarray, labels: list[int], count: int, jobs: int,
             log_dir: Path) -> dict:
    """One job at a time: submit to end notification, and the synchronous call on the same rows."""
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.psubscribe("async:job:*")
    running = start_workers([f"latency-{i}" for i in range(count)], grpc_url, redis_url, log_dir, "--block-ms", "200")
    job_ms, sync_ms, wrong = [], [], 0
    try:
        with PatternClient(grpc_url, "grpc") as client:
            for i in tqdm(range(jobs), desc="submit -> result, c=1", unit="job", leave=False):
                row = rows[i % len(rows)]
                start = time.perf_counter()
                job_id = client.submit(row, model=SUBMIT_MODEL)
                deadline = time.monotonic() + 30
                while True:  # None: nothing yet, or the subscription's own confirmation
                    message = listener.get_message(timeout=max(deadline - time.monotonic(), 0))
                    if message is not None and json.loads(message["data"])["job_id"] == job_id:
                        break
                    if time.monotonic() >= deadline:
                        raise RuntimeError(f"job {job_id}: no end notification within 30 s; logs in {log_dir}")
                job_ms.append((time.perf_counter() - start) * 1000)
                wrong += client.result(job_id).class_id != labels[i % len(rows)]
                start = time.perf_counter()
                client.synchronous(row, version=2)
                sync_ms.append((time.perf_counter() - start) * 1000)
    finally:
        for worker in running:
            worker.terminate(timeout=20)
        listener.close()
    return {"workers": count, "jobs": jobs, "wrong": wrong,
            "p50_ms": _percentile(job_ms, 50), "p99_ms": _percentile(job_ms, 99),
            "sync_p50_ms": _percentile(sync_ms, 50), "sync_p99_ms": _percentile(sync_ms, 99)}


def measure_async(
    grpc_url: str,
    redis_url: str,
    worker_counts: tuple[int, ...] = (1, 2, 4),
    jobs: int = 3000,
    concurrency: int = 32,
    reference_s: float = 3.0,
    latency_jobs: int = 200,
    latency_workers: int = 2,
    timeout_s: float = 300.0,
    log_dir: Path | None = None,
) -> dict:
    """Run the measurement against a running tritonserver and Redis; see the module docstring."""
    rows = iris_rows(jobs)
    JobQueue(redis.Redis.from_url(redis_url), "async").ensure_group()
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="async-bench-"))
    reference, labels = asyncio.run(_reference(grpc_url, rows, concurrency, reference_s))
    rounds = []
    for count in tqdm(worker_counts, desc="async jobs", unit="worker count", leave=False):
        for mode in ("drain", "live"):
            rounds.append(_round(count, mode, grpc_url, redis_url, rows, labels, concurrency, log_dir, timeout_s))
    latency = (_latency(grpc_url, redis_url, rows, labels, latency_workers, latency_jobs, log_dir)
               if latency_jobs else None)
    return {"jobs": jobs, "concurrency": concurrency, "sync_rows_per_s": reference.rows_per_s,
            "sync_p50_ms": reference.p50_ms, "async": rounds, "latency": latency}


def _submit_latency(grpc_url: str, rows: np.ndarray, jobs: int) -> list[float]:
    """Milliseconds of each of `jobs` submits made one at a time (the job acknowledged by Redis)."""
    times = []
    with PatternClient(grpc_url, "grpc") as client:
        for i in range(jobs):
            start = time.perf_counter()
            client.submit(rows[i % len(rows)], model=SUBMIT_MODEL)
            times.append((time.perf_counter() - start) * 1000)
    return times


def _aof_on(client: redis.Redis) -> None:
    if client.config_get("appendonly")["appendonly"] != "yes":
        client.config_set("appendonly", "yes")  # Redis writes the file's base first
    if not wait_for(lambda: int(client.info("persistence")["aof_rewrite_in_progress"]) == 0, 60, interval=0.1):
        raise RuntimeError("the append-only file's first rewrite did not end within 60 s")


def measure_fsync(grpc_url: str, redis_url: str, settings: tuple[str, ...] = ("everysec", "always"),
                  jobs: int = 2000, concurrency: int = 32, latency_jobs: int = 300, workers: int = 2,
                  rounds: int = 2, timeout_s: float = 300.0, log_dir: Path | None = None) -> dict:
    """See the module docstring; every row of every round, for `fsync_table`."""
    rows = iris_rows(jobs)
    client = redis.Redis.from_url(redis_url)
    queue = JobQueue(client, "async")
    queue.ensure_group()
    _aof_on(client)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="async-fsync-"))
    _, labels = asyncio.run(_reference(grpc_url, rows, concurrency, 1.0))
    asyncio.run(_submit_all(grpc_url, rows[:500], concurrency))  # warm-up (first calls, the batcher): not counted
    client.delete(queue.stream)
    queue.ensure_group()
    results = []
    for round_ in range(1, rounds + 1):
        for setting in settings:
            client.config_set("appendfsync", setting)
            ids, began, ended = asyncio.run(_submit_all(grpc_url, rows, concurrency))
            acknowledged = sum(s is not None for s in queue.states(ids))
            client.delete(queue.stream)
            queue.ensure_group()
            latency = _submit_latency(grpc_url, rows, latency_jobs)
            client.delete(queue.stream)
            queue.ensure_group()
            live = _round(workers, "live", grpc_url, redis_url, rows, labels, concurrency, log_dir, timeout_s)
            results.append({"appendfsync": setting, "round": round_, "jobs": jobs, "acknowledged": acknowledged,
                            "submit_per_s": jobs / (ended - began),
                            "submit_p50_ms": _percentile(latency, 50), "submit_p99_ms": _percentile(latency, 99),
                            "workers": workers, "jobs_per_s": live["jobs_per_s"], "done": live["done"],
                            "wrong": live["wrong"]})
    client.config_set("appendfsync", settings[0])
    return {"concurrency": concurrency, "latency_jobs": latency_jobs, "rounds": results}


def fsync_table(report: dict) -> str:
    lines = [f"| appendfsync | round | submits/s, c={report['concurrency']}, no worker | submit p50 ms, c=1 | "
             f"submit p99 ms, c=1 | jobs/s end to end (live) | done | wrong |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        lines.append(f"| {r['appendfsync']} | {r['round']} | {r['submit_per_s']:,.0f} | {r['submit_p50_ms']:.2f} | "
                     f"{r['submit_p99_ms']:.2f} | {r['jobs_per_s']:,.0f} ({r['workers']} workers) | "
                     f"{r['done']}/{r['jobs']} | {r['wrong']} |")
    by = {}
    for r in report["rounds"]:
        by.setdefault(r["appendfsync"], []).append(r)
    if {"everysec", "always"} <= set(by):
        mean = {k: {f: float(np.mean([r[f] for r in v])) for f in ("submit_per_s", "submit_p50_ms", "jobs_per_s")}
                for k, v in by.items()}
        lines.append(f"\nalways / everysec (means over the rounds): submits/s "
                     f"{mean['always']['submit_per_s'] / mean['everysec']['submit_per_s']:.2f}x, submit p50 "
                     f"{mean['always']['submit_p50_ms'] / mean['everysec']['submit_p50_ms']:.2f}x, jobs/s "
                     f"{mean['always']['jobs_per_s'] / mean['everysec']['jobs_per_s']:.2f}x")
    return "\n".join(lines)


def table(report: dict) -> str:
    sync = report["sync_rows_per_s"]
    lines = [
        f"synchronous iris v2 over gRPC, c={report['concurrency']}: {sync:,.0f} rows/s "
        f"(p50 {report['sync_p50_ms']:.2f} ms)",
        f"jobs: {report['jobs']} one-row iris jobs submitted through {SUBMIT_MODEL} at c={report['concurrency']}",
        "| workers | mode | jobs done | wrong | submit/s | jobs/s | vs synchronous | p50 created->done ms | "
        "p50 infer ms | jobs per request |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["async"]:
        lines.append(
            f"| {r['workers']} | {r['mode']} | {r['done']}/{r['jobs']} | {r['wrong']} | {r['submit_per_s']:,.0f} | "
            f"{r['jobs_per_s']:,.0f} | {r['jobs_per_s'] / sync:.2f}x | {r['p50_total_ms']:.1f} | "
            f"{r['p50_infer_ms']:.2f} | {r['mean_batch_jobs']:.1f} |"
        )
    if report["latency"]:
        lat = report["latency"]
        lines.append(f"\nc=1, {lat['workers']} workers, {lat['jobs']} jobs: submit -> end notification p50 "
                     f"{lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms; "
                     f"synchronous call p50 {lat['sync_p50_ms']:.2f} ms, "
                     f"p99 {lat['sync_p99_ms']:.2f} ms; wrong {lat['wrong']}")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    """jobs/s against workers, drain and live, with the synchronous endpoint's rate and its half."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, marker in (("drain", "o"), ("live", "s")):
        points = [r for r in report["async"] if r["mode"] == mode]
        ax.plot([r["workers"] for r in points], [r["jobs_per_s"] for r in points], marker=marker,
                label=f"async, {mode}")
    sync = report["sync_rows_per_s"]
    ax.axhline(sync, color="grey", linestyle="--", label=f"synchronous gRPC c={report['concurrency']}")
    ax.axhline(sync / 2, color="grey", linestyle=":", label="target: 0.5x synchronous")
    ax.set_xlabel("worker processes")
    ax.set_ylabel("jobs/s (one iris row per job)")
    ax.set_xticks(sorted({r["workers"] for r in report["async"]}))
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Asynchronous pattern: batched workers vs the synchronous endpoint")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.async_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--workers", default="1,2,4", help="comma list of worker counts")
    p.add_argument("--concurrency", type=int, default=32, help="submits (and synchronous calls) in flight")
    p.add_argument("--latency-jobs", type=int, default=200, help="jobs one at a time for the latency (0: none)")
    p.add_argument("--grpc-url", default=None, help="gRPC address of a running server (default: start one)")
    p.add_argument("--redis", default=None, help="Redis URL the running server uses")
    p.add_argument("--out", type=Path, default=Path("reports/bench/async"), help="JSON and plot directory")
    p.add_argument("--appendfsync", default=None, metavar="SETTINGS",
                   help="instead: compare these appendfsync settings of the queue's Redis (e.g. everysec,always)")
    p.add_argument("--rounds", type=int, default=2, help="with --appendfsync: rounds of every setting, interleaved")
    args = p.parse_args(argv)
    if args.appendfsync:
        return _fsync_main(args)
    counts = tuple(int(x) for x in args.workers.split(","))
    options = {"jobs": args.jobs, "concurrency": args.concurrency, "latency_jobs": args.latency_jobs}
    if args.grpc_url:
        report = measure_async(args.grpc_url, args.redis, counts, **options)
    else:
        from pattern_runtime.stack import Stack

        with Stack(redis_maxmemory=None, redis_policy=None, seed_digits=None) as stack:
            report = measure_async(stack.grpc_url, stack.redis_url, counts, **options)
    print(table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "async.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'async.json'} and {plot(report, args.out / 'async_workers.png')}")
    ok = all(r["done"] == r["jobs"] and r["wrong"] == 0 for r in report["async"])
    return 0 if ok and not (report["latency"] or {}).get("wrong") else 1


def _fsync_main(args) -> int:
    settings = tuple(args.appendfsync.split(","))
    options = {"settings": settings, "jobs": args.jobs, "concurrency": args.concurrency,
               "latency_jobs": args.latency_jobs or 300, "workers": int(args.workers.split(",")[-1]),
               "rounds": args.rounds}
    if args.grpc_url:
        report = measure_fsync(args.grpc_url, args.redis, **options)
    else:
        from pattern_runtime.server_settings import ServerSettings
        from pattern_runtime.stack import Stack

        with Stack(redis_maxmemory=None, redis_policy=None, seed_digits=None,
                   server=ServerSettings(load_models=[TARGET, SUBMIT_MODEL, "async_result"])) as stack:
            report = measure_fsync(stack.grpc_url, stack.redis_url, **options)
    text = fsync_table(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fsync.json").write_text(json.dumps(report, indent=2))
    (args.out / "fsync.md").write_text(text + "\n")
    print(f"wrote {args.out / 'fsync.json'} and {args.out / 'fsync.md'}")
    return 0 if all(r["acknowledged"] == r["jobs"] == r["done"] and r["wrong"] == 0 for r in report["rounds"]) else 1


if __name__ == "__main__":
    run_script(main)
