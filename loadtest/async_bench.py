"""Asynchronous pattern throughput: jobs/s with N worker processes, against in-process
onnxruntime on the same rows (one row per job, one row per `session.run`).

    python -m loadtest.async_bench                      # starts Redis + tritonserver, 1/2/4 workers
    python -m loadtest.async_bench --jobs 400 --workers 1,2 --url 127.0.0.1:8000 \\
        --grpc-url 127.0.0.1:8001 --redis redis://127.0.0.1:6379/0      # a running stack

`measure_async(...)` is the function the benchmark harness calls: for each worker count it
runs two rounds of `jobs` iris rows submitted through `iris_async_submit` from `submitters`
threads, with that many workers (real processes, stopped by pid): "drain" (the queue filled
first, then the workers start: their own rate, first job started to last done) and "live"
(workers waiting, jobs submitted meanwhile: first submit to last done). Per round: submit
rate, jobs/s, p50/p95 of the jobs' total time (created to done), p50 of the Triton call, wrong
answers, and the ratio to in-process onnxruntime on the same rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pattern_jobs.async_worker import start_workers
from pattern_kernel.job_queue import JobQueue
from pattern_runtime.processes import wait_for
from triton_patterns import paths
from triton_patterns.client import PatternClient

ONNX = paths.MODEL_REPOSITORY / "iris" / "2" / "model.onnx"


def iris_rows(count: int) -> np.ndarray:
    """The held-out iris rows, repeated up to `count`."""
    from pattern_runtime.datasets import iris as iris_export

    held_out = iris_export.load_split()[1].astype(np.float32)
    return np.resize(held_out, (count, held_out.shape[1]))


def inprocess(rows: np.ndarray, repeat: int = 3) -> dict:
    """iris v2 in this process, one row per run, 1 thread: rows/s (best of `repeat`) and labels."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(ONNX), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    labels = [int(np.asarray(session.run(["LABEL"], {name: r[None]})[0]).reshape(-1)[0]) for r in rows]
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for r in rows:
            session.run(None, {name: r[None]})
        best = max(best, len(rows) / (time.perf_counter() - start))
    return {"rows_per_s": best, "labels": labels}


def _start_workers(count: int, grpc_url: str, redis_url: str, log_dir: Path) -> list:
    return start_workers([f"bench-{count}-{i}" for i in range(count)], grpc_url, redis_url, log_dir,
                         "--block-ms", "200")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_async(
    http_url: str,
    grpc_url: str,
    redis_url: str,
    worker_counts: tuple[int, ...] = (1, 2, 4),
    jobs: int = 300,
    submitters: int = 4,
    timeout_s: float = 300.0,
    log_dir: Path | None = None,
) -> dict:
    """Run the measurement against a running tritonserver and Redis; see the module docstring."""
    import redis

    rows = iris_rows(jobs)
    reference = inprocess(rows)
    queue = JobQueue(redis.Redis.from_url(redis_url), "async")
    queue.ensure_group()
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="async-bench-"))
    results = []

    def submit_share(k: int) -> list[tuple[int, str]]:
        """Submitter k's rows k, k+submitters, ...; its own client (tritonclient HTTP is per thread)."""
        with PatternClient(http_url) as client:
            return [(i, client.submit(rows[i])) for i in range(k, jobs, submitters)]

    def submit_all() -> tuple[list[str], float, float]:
        began = time.time()
        with ThreadPoolExecutor(submitters) as pool:
            shares = [x for share in pool.map(submit_share, range(submitters)) for x in share]
        return [job_id for _, job_id in sorted(shares)], began, time.time()

    for count in worker_counts:
        for mode in ("drain", "live"):
            if mode == "drain":  # the queue filled first, then the workers empty it
                ids, began, submitted = submit_all()
                workers = _start_workers(count, grpc_url, redis_url, log_dir)
            else:  # workers waiting; jobs submitted meanwhile (end to end)
                workers = _start_workers(count, grpc_url, redis_url, log_dir)
            try:
                if mode == "live":
                    ids, began, submitted = submit_all()
                wait_for(lambda: queue.depth()["stream"] == 0, timeout=timeout_s, interval=0.05)
            finally:
                for w in workers:
                    w.terminate(timeout=20)
            results.append(_summary(count, mode, queue.states(ids), reference, began, submitted))
    return {"inprocess_rows_per_s": reference["rows_per_s"], "rows": jobs, "async": results}


def _summary(count: int, mode: str, states: list, reference: dict, began: float, submitted: float) -> dict:
    """jobs/s: drain, from the first job's start to the last one's end (the workers' rate, without
    their start-up); live, from the first submit to the last end."""
    done = [s for s in states if s is not None and s.status == "done"]
    starts = [s.created + s.timings["queue_ms"] / 1000 for s in done]
    ends = [s.created + s.timings["total_ms"] / 1000 for s in done]
    wrong = sum(int(np.asarray(s.outputs["LABEL"]).reshape(-1)[0]) != reference["labels"][i]
                for i, s in enumerate(states) if s is not None and s.status == "done")
    first = min(starts) if mode == "drain" and starts else began
    jobs_per_s = len(done) / (max(ends) - first) if ends else 0.0
    total = [s.timings["total_ms"] for s in done]
    return {
        "workers": count, "mode": mode, "jobs": len(states), "done": len(done), "wrong": wrong,
        "submit_per_s": len(states) / (submitted - began), "jobs_per_s": jobs_per_s,
        "p50_total_ms": _percentile(total, 50), "p95_total_ms": _percentile(total, 95),
        "p50_infer_ms": _percentile([s.timings["infer_ms"] for s in done], 50),
        "ratio_to_inprocess": jobs_per_s / reference["rows_per_s"],
    }


def table(report: dict) -> str:
    lines = [
        f"in-process onnxruntime (iris v2, 1 row per run, 1 thread): {report['inprocess_rows_per_s']:,.0f} rows/s",
        "| workers | mode | jobs done | wrong | submit/s | jobs/s | p50 total ms | p95 total ms | p50 infer ms | vs in-process |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["async"]:
        lines.append(
            f"| {r['workers']} | {r['mode']} | {r['done']}/{r['jobs']} | {r['wrong']} | {r['submit_per_s']:,.0f} | "
            f"{r['jobs_per_s']:,.0f} | {r['p50_total_ms']:.1f} | {r['p95_total_ms']:.1f} | "
            f"{r['p50_infer_ms']:.2f} | {r['ratio_to_inprocess']:.3f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.async_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--workers", default="1,2,4", help="comma list of worker counts")
    p.add_argument("--submitters", type=int, default=4, help="threads submitting jobs")
    p.add_argument("--url", default=None, help="HTTP address of a running server (default: start one)")
    p.add_argument("--grpc-url", default=None)
    p.add_argument("--redis", default=None, help="Redis URL the running server uses")
    args = p.parse_args(argv)
    counts = tuple(int(x) for x in args.workers.split(","))
    if args.url:
        report = measure_async(args.url, args.grpc_url, args.redis, counts, args.jobs, args.submitters)
    else:
        from pattern_runtime.stack import Stack

        with Stack(redis_maxmemory=None, redis_policy=None, seed_digits=None) as stack:
            report = measure_async(stack.http_url, stack.grpc_url, stack.redis_url, counts, args.jobs, args.submitters)
    print(table(report))
    return 0 if all(r["done"] == r["jobs"] and r["wrong"] == 0 for r in report["async"]) else 1


if __name__ == "__main__":
    sys.exit(main())
