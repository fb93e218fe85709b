"""What the router backend costs and does under load: latency through each rollout model against
iris called directly, and how many requests a shadow mirrors or skips.

    python -m loadtest.rollouts_bench                    # starts Redis + tritonserver (rollout models only)
    python -m loadtest.rollouts_bench --url 127.0.0.1:8000 --redis redis://127.0.0.1:6379/0

Per model and concurrency (threads in a closed loop, one row per request, HTTP): requests,
p50/p99 latency in ms, requests/s, and for the shadow models the comparisons by result
(shadow_comparisons_total on the metrics port, counted over the run). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from loadtest.script import run_script
from pattern_jobs.bluegreen import heldout_set
from pattern_runtime import paths
from triton_patterns.client import PatternClient

# (model, request parameters); iris v1 direct is the baseline
SETUPS = [
    ("iris", None),
    ("iris_live", None),
    ("iris_canary", "user_id"),
    ("iris_route", None),
    ("iris_shadow", None),
    ("iris_shadow_slow", None),
]
REPOSITORY_MODELS = ["iris", "iris_slow", "iris_live", "iris_canary", "iris_ab", "iris_route", "iris_shadow",
                     "iris_shadow_slow"]


def shadow_counts(metrics_url: str, model: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("shadow_comparisons_total{") and f'model="{model}"' in line:
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = float(line.rsplit(" ", 1)[1])
    return counts


def measure(url: str, model: str, key: str | None, rows: np.ndarray, threads: int, seconds: float) -> dict:
    times: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def run(index: int) -> None:
        with PatternClient(url) as client:
            i = index
            while not stop.is_set():
                params = {key: f"user-{i % 1000}"} if key else None
                start = time.perf_counter()
                try:
                    if model == "iris":
                        client.predict("synchronous", rows[i % len(rows)], version=1)
                    else:
                        client.predict("canary", rows[i % len(rows)], model=model, parameters=params)
                    elapsed = (time.perf_counter() - start) * 1000
                    with lock:
                        times.append(elapsed)
                except Exception:  # noqa: BLE001 - counted
                    with lock:
                        errors[0] += 1
                i += threads

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    return {"requests": len(times), "errors": errors[0], "p50": float(np.percentile(times, 50)),
            "p99": float(np.percentile(times, 99)), "rps": len(times) / wall}


@contextlib.contextmanager
def stack():
    """Redis and a tritonserver on a repository holding only the rollout models and their targets."""
    from pattern_runtime.server_settings import ServerSettings
    from pattern_runtime.stack import Stack

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repository"
        for name in REPOSITORY_MODELS:
            shutil.copytree(paths.model_folder(name), repo / name)
        with Stack(redis_maxmemory=None, redis_policy=None, seed_digits=None,
                   server=ServerSettings(model_repository=repo, cache_size_bytes=None)) as stack:
            yield stack.http_url, stack.metrics_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server's HTTP address (default: start one)")
    parser.add_argument("--metrics-url", default=None, help="with --url: http://HOST:8002/metrics")
    parser.add_argument("--concurrency", default="1,4", help="comma list (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per model and concurrency")
    args = parser.parse_args(argv)
    rows, _ = heldout_set("iris")
    with (contextlib.nullcontext((args.url, args.metrics_url)) if args.url else stack()) as (url, metrics_url):
        print("| model | concurrency | requests | errors | p50 ms | p99 ms | req/s | shadow results |")
        print("|---|---|---|---|---|---|---|---|")
        for model, key in SETUPS:
            for threads in (int(c) for c in args.concurrency.split(",")):
                before = shadow_counts(metrics_url, model) if metrics_url and "shadow" in model else {}
                r = measure(url, model, key, rows, threads, args.seconds)
                shadow = ""
                if before or (metrics_url and "shadow" in model):
                    time.sleep(2.0 if model == "iris_shadow_slow" else 0.5)  # let the last comparisons land
                    after = shadow_counts(metrics_url, model)
                    shadow = ", ".join(f"{k} {after[k] - before.get(k, 0):.0f}" for k in sorted(after)
                                       if after[k] - before.get(k, 0))
                print(f"| {model} | {threads} | {r['requests']} | {r['errors']} | {r['p50']:.2f} | {r['p99']:.2f} "
                      f"| {r['rps']:.0f} | {shadow} |", flush=True)
    return 0


if __name__ == "__main__":
    run_script(main)
