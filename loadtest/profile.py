"""`make profile`: where the time goes in the setups that miss a benchmark target.

For each profiled setup this starts the benchmark's server (the same temporary repository as
`loadtest.bench`), drives the setup at its target's concurrency, and meanwhile
- samples every Python stub process of the models involved with py-spy (`--format raw`:
  collapsed stacks; `--native` is off because the stubs' C++ frames add little),
- reads the CPU time of tritonserver, each stub and the load generator from /proc before and
  after, to show who used the two cores.
It writes, under `reports/profile/` (and copies to `docs/bench/profiles/`), one collapsed-stack
file per process, a PNG per setup (CPU share per process, top self-time frames per stub) and
`profiles.md`, which BENCHMARKS.md's "Missed targets" section quotes.

    python -m loadtest.profile                      # every profiled setup, 8 s each
    python -m loadtest.profile --setups heavy --seconds 5
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from loadtest.script import run_script
from pattern_runtime import paths
from pattern_runtime.launcher import TritonServer

from . import bench
from .bench_setup import LoadOptions, Setup

OUT_DIR = paths.REPORTS / "profile"
DOCS_DIR = paths.PROJECT_ROOT / "docs" / "bench" / "profiles"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Profiled:
    setup: str           # a setup of loadtest.bench
    concurrency: int
    models: tuple[str, ...]  # whose stubs are sampled
    target: str          # the missed target, in words
    entry: str           # the model the client calls

    @property
    def stats_models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.entry, *self.models)))


PROFILED = (
    Profiled("triton_heavy_t2_b32_grpc", 32, ("heavy_mlp_t2_b32",),
             "heavy_mlp through Triton vs in-process best >= 0.8x", "heavy_mlp_t2_b32"),
    Profiled("triton_iris_http", 32, ("iris",), "Triton sync vs FastAPI, iris, c=32: throughput >= 3x", "iris"),
    Profiled("digits_ensemble_grpc", 1, ("digits_preprocess", "digits_classifier"),
             "prep-pred ensemble minus sum of steps <= 1 ms", "digits"),
    Profiled("text_bls_grpc", 1, ("text_classify_bls", "text_tokenizer", "text_encoder", "text_classifier"),
             "serial BLS vs ensemble (text pipeline), p50 <= 1.3x", "text_classify_bls"),
)
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def model_stats(server: TritonServer, model: str) -> dict[str, float]:
    """Triton's cumulative statistics of a model (all versions): request count and ns per stage."""
    reply = requests.get(f"http://{server.http_url}/v2/models/{model}/stats", timeout=10)
    reply.raise_for_status()
    totals = collections.Counter()
    for entry in reply.json()["model_stats"]:
        stats = entry["inference_stats"]
        totals["requests"] += stats["success"]["count"]
        totals["request_ns"] += stats["success"]["ns"]
        totals["rows"] += entry["inference_count"]
        totals["executions"] += entry["execution_count"]
        for stage in STAGES:
            totals[f"{stage}_ns"] += stats[stage]["ns"]
    return dict(totals)


def stats_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-request server-side milliseconds of each stage, and the mean batch per execution."""
    d = {k: after[k] - before.get(k, 0) for k in after}
    n = d["requests"] or 1
    return {"requests": d["requests"], "request_ms": d["request_ns"] / n / 1e6,
            **{f"{stage}_ms": d[f"{stage}_ns"] / n / 1e6 for stage in STAGES},
            "rows_per_execution": d["rows"] / (d["executions"] or 1)}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Result:
    profiled: Profiled
    cpu: dict[str, float] = field(default_factory=dict)  # process -> cores used (CPU s / wall s)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> stats_delta
    top: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # stub -> [(frame, share)]
    rows_per_s: float = 0.0
    p50_ms: float = 0.0


def self_time(collapsed: Path, top: int = 8) -> list[tuple[str, float]]:
    """Share of samples whose innermost frame is each function (py-spy raw: `a;b;c count`)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[re.sub(r"\(\S*/", "(", stack.split(";")[-1])] += int(n)  # `f (dir/file.py:7)` -> `f (file.py:7)`
    total = sum(counts.values()) or 1
    return [(frame, n / total) for frame, n in counts.most_common(top)]


def profile(server: TritonServer, setup: Setup, p: Profiled, seconds: float, out: Path) -> Result:
    stubs = {m: pids[0] for m, pids in server.stub_pids().items() if m in p.models}
    missing = set(p.models) - set(stubs)
    if missing:
        raise RuntimeError(f"no stub process found for {sorted(missing)}")
    setup.check()  # warm every model on the path
    pids = {"tritonserver": server.pid, **{f"stub {m}": pid for m, pid in stubs.items()}}
    measured: dict = {}
    load = threading.Thread(target=lambda: measured.setdefault("point", setup.measure(p.concurrency)))
    load.start()
    time.sleep(1.5)  # past the warm-up
    before = {k: _cpu_seconds(pid) for k, pid in pids.items()}
    stats_before = {m: model_stats(server, m) for m in p.stats_models}
    loadgen_before, wall0 = time.process_time(), time.perf_counter()
    spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                               "--duration", str(int(seconds)), "--rate", "250", "--format", "raw", "--nonblocking",
                               "--output", str(out / f"{p.setup}-{m}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for m, pid in stubs.items()]
    for spy in spies:
        spy.wait(timeout=seconds + 60)
    wall = time.perf_counter() - wall0
    result = Result(p, {k: (_cpu_seconds(pid) - before[k]) / wall for k, pid in pids.items()},
                    {m: stats_delta(stats_before[m], model_stats(server, m)) for m in p.stats_models})
    load.join()
    # the load generator runs in this process's threads: its CPU is this process's, minus py-spy's idle wait
    result.cpu["load generator (this process)"] = (time.process_time() - loadgen_before) / wall
    result.top = {m: self_time(out / f"{p.setup}-{m}.txt") for m in stubs if (out / f"{p.setup}-{m}.txt").exists()}
    point = measured.get("point")
    if point:
        result.rows_per_s, result.p50_ms = point.rows_per_s, point.p50_ms
    return result


def plot(result: Result, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(result.top)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    ax = axes[0][0]
    names = list(result.cpu)
    ax.barh(names, [result.cpu[n] for n in names], color="C0")
    ax.set(xlabel="cores used (of 2)", title=f"{result.profiled.setup} c={result.profiled.concurrency}: CPU")
    for ax, (stub, frames) in zip(axes[0][1:], result.top.items(), strict=True):
        ax.barh([f[0][:48] for f in frames][::-1], [f[1] for f in frames][::-1], color="C1")
        ax.set(xlabel="share of samples (self time)", title=f"stub {stub}: top frames")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def markdown(results: list[Result]) -> str:
    lines = ["# Profiles of the missed targets", "",
             f"Written by `make profile` (`python -m loadtest.profile`) on {time.strftime('%Y-%m-%d %H:%M')}. "
             "CPU is cores used during the sampled window (2 = the whole machine); frames are py-spy self time "
             "in each Python stub (idle waiting shows as the stub's receive loop).", ""]
    for r in results:
        p = r.profiled
        lines += [f"## {p.setup}, c={p.concurrency} ({p.target})", "",
                  f"{r.rows_per_s:,.0f} rows/s, p50 {r.p50_ms:.2f} ms while profiled (py-spy itself takes CPU).", "",
                  "| process | cores |", "|---|---|", *[f"| {k} | {v:.2f} |" for k, v in r.cpu.items()], "",
                  "Triton's statistics over the same window (server-side ms per request; rows per execution is "
                  "the mean dynamic batch):", "",
                  "| model | requests | request ms | queue ms | compute input ms | compute infer ms | "
                  "compute output ms | rows per execution |", "|---|---|---|---|---|---|---|---|",
                  *[f"| {m} | {st['requests']:,.0f} | {st['request_ms']:.3f} | {st['queue_ms']:.3f} | "
                    f"{st['compute_input_ms']:.3f} | {st['compute_infer_ms']:.3f} | {st['compute_output_ms']:.3f} | "
                    f"{st['rows_per_execution']:.1f} |" for m, st in r.stats.items()], ""]
        for stub, frames in r.top.items():
            lines += [f"Stub `{stub}`, top self-time frames:", "", "| frame | share |", "|---|---|",
                      *[f"| `{f}` | {s:.0%} |" for f, s in frames], ""]
        lines += [f"![{p.setup}]({p.setup}.png)", ""]
    return "\n".join(lines)


def run(args) -> list[Result]:
    data = bench.Data()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in PROFILED if not args.setups or any(s in p.setup for s in args.setups.split(","))]
    results = []
    with bench.bench_stack(args.out / "logs") as stack:
        load = LoadOptions(duration=args.seconds + 2, warmup=1.0)  # the load outlasts the sampling
        setups = {s.name: s for s in bench.triton_setups(stack.grpc_url, f"http://{stack.http_url}", data, load)}
        for p in chosen:
            print(f"profiling {p.setup} at c={p.concurrency} for {args.seconds:g} s ...", flush=True)
            result = profile(stack.triton, setups[p.setup], p, args.seconds, args.out)
            plot(result, args.out / f"{p.setup}.png")
            results.append(result)
            print(f"  {result.rows_per_s:,.0f} rows/s; cores: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in result.cpu.items()), flush=True)
    (args.out / "profiles.md").write_text(markdown(results))
    if not args.setups:
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        for path in [args.out / "profiles.md", *(args.out / f"{r.profiled.setup}.png" for r in results)]:
            shutil.copy(path, DOCS_DIR / path.name)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default=None, help="comma list of substrings of the profiled setup names")
    parser.add_argument("--seconds", type=float, default=8.0, help="sampling time per setup")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    run(parser.parse_args(argv))
    print(f"report: {OUT_DIR / 'profiles.md'}")
    return 0


if __name__ == "__main__":
    run_script(main)
