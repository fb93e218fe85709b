"""The benchmark's report: the target ratios, the perf_analyzer cross-check, plots and
BENCHMARKS.md, all from one run's outcomes (`loadtest.bench`)."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from pattern_runtime import paths

from . import loadgen
from .bench_setup import Outcome
from .loadgen import Point

DOCS_DIR = paths.PROJECT_ROOT / "docs" / "bench"
BENCHMARKS_MD = paths.PROJECT_ROOT / "BENCHMARKS.md"
OUT_DIR = paths.REPORTS / "bench"


def _points(outcomes: list[Outcome], name: str) -> list[Point]:
    return next((o.points for o in outcomes if o.setup.name == name), [])


def _at(outcomes, name: str, concurrency: int) -> Point | None:
    return next((p for p in _points(outcomes, name) if p.concurrency == concurrency), None)


def _best(points: list[Point]) -> Point | None:
    points = [p for p in points if p is not None and p.requests]
    return max(points, key=lambda p: p.rows_per_s) if points else None


@dataclass
class Target:
    name: str
    goal: str
    value: float | None
    passed: bool | None
    detail: str


# (what, numerator setup, denominator setup, level "low"|"top"|a concurrency, metric,
#  goal: ratio <= goal, None = reported)
COMPARISONS = [
    ("prep-pred BLS vs ensemble (digits), p50", "digits_bls_grpc", "digits_ensemble_grpc", "low", "p50_ms", 1.3),
    ("serial BLS vs ensemble (text pipeline), p50", "text_bls_grpc", "text_ensemble_grpc", "low", "p50_ms", 1.3),
    ("parallel BLS vs ensemble (iris v1 + v2), p50", "parallel_bls_grpc", "parallel_ensemble_grpc", "low", "p50_ms",
     1.3),
    ("response cache hit vs miss, heavy_mlp, p50", "cache_hit_grpc", "cache_miss_grpc", "low", "p50_ms", 0.1),
    ("Redis prediction cache hit vs miss, text pipeline, p50", "text_redis_hit_grpc", "text_redis_miss_grpc", "low",
     "p50_ms", None),
    ("Redis prediction cache hit vs miss, text pipeline, throughput", "text_redis_hit_grpc", "text_redis_miss_grpc",
     "top", "rows_per_s", None),
    ("Redis prediction cache hit vs miss, iris, throughput", "redis_cache_hit_grpc", "redis_cache_miss_grpc", "top",
     "rows_per_s", None),
    ("data cache, Redis hit vs store read, p50", "data_cache_redis_grpc", "data_cache_store_grpc", "low", "p50_ms",
     None),
    ("data cache, Redis hit vs store read, throughput", "data_cache_redis_grpc", "data_cache_store_grpc", "top",
     "rows_per_s", None),
    # the cost of tracing: one request in 1000 within 5% of off; every request reported
    *((f"tracing {what} vs off, {pipeline}, p50", f"{prefix}_trace{rate}_grpc", off, c, "p50_ms", goal)
      for pipeline, prefix, off in (("text_classify", "text", "text_ensemble_grpc"),
                                    ("parallel BLS", "parallel", "parallel_bls_grpc"))
      for rate, what, goal in ((1000, "1 in 1000", 1.05), (1, "every request", None)) for c in (1, 8)),
]
UNITS = {"p50_ms": "ms", "p99_ms": "ms", "rows_per_s": "/s"}


def targets(outcomes: list[Outcome], top: int, low: int = 1) -> list[Target]:
    """The target ratios (patterns vs peers, the gateway, tracing), from this run's points
    (None when a setup was not measured)."""
    found = []

    def add(name, goal, value, passed, detail):
        found.append(Target(name, goal, value, passed if value is not None and not math.isnan(value) else None,
                            detail))

    for model, short, goal in (("iris", "iris", 3.0), ("heavy_mlp", "heavy", 3.5)):
        peer = _best([_at(outcomes, f"fastapi_{short}_w{w}", top) for w in (1, 2)])
        triton = _best([_at(outcomes, f"triton_{short}_{p}", top) for p in ("grpc", "http")])
        if peer and triton:
            ratio, p99 = triton.rows_per_s / peer.rows_per_s, triton.p99_ms / peer.p99_ms
            add(f"Triton sync vs FastAPI, {model}, c={top}: throughput", f">= {goal}x", ratio, ratio >= goal,
                f"{triton.setup} {triton.rows_per_s:,.0f}/s vs {peer.setup} {peer.rows_per_s:,.0f}/s")
            add(f"Triton sync vs FastAPI, {model}, c={top}: p99", "<= 0.3x", p99, p99 <= 0.3,
                f"{triton.setup} {triton.p99_ms:.1f} ms vs {peer.setup} {peer.p99_ms:.1f} ms")
        else:
            add(f"Triton sync vs FastAPI, {model}", f">= {goal}x", None, None, "not measured")
    heavy = _best([p for n in ("triton_heavy_grpc", "triton_heavy_http", "triton_heavy_t2_grpc",
                               "triton_heavy_t2_b32_grpc", "triton_heavy_i2_grpc", "triton_heavy_nobatch_grpc")
                   for p in _points(outcomes, n)])
    limit = _best([p for t in (1, 2) for p in _points(outcomes, f"ort_heavy_mlp_t{t}")])
    add("heavy_mlp through Triton vs in-process best", ">= 0.8x",
        heavy.rows_per_s / limit.rows_per_s if heavy and limit else None,
        bool(heavy and limit and heavy.rows_per_s / limit.rows_per_s >= 0.8),
        f"{heavy.setup} c={heavy.concurrency} {heavy.rows_per_s:,.0f} rows/s vs {limit.setup} batch {limit.batch} "
        f"{limit.rows_per_s:,.0f} rows/s" if heavy and limit else "not measured")
    ens, steps = _at(outcomes, "digits_ensemble_grpc", low), _at(outcomes, "digits_steps_grpc", low)
    add(f"prep-pred ensemble minus sum of steps, p50, c={low}", "<= 1 ms",
        ens.p50_ms - steps.p50_ms if ens and steps else None,
        bool(ens and steps and ens.p50_ms - steps.p50_ms <= 1.0),
        f"ensemble {ens.p50_ms:.2f} ms, steps called directly {steps.p50_ms:.2f} ms" if ens and steps
        else "not measured")
    batch = _best(_points(outcomes, "batch_job"))
    if batch:
        inprocess = batch.extra["inprocess_rows_per_s"]
        add(f"batch job through Triton vs the same job with in-process onnxruntime, rows/s, best c="
            f"{batch.concurrency} (reported, no goal)", "-", batch.rows_per_s / inprocess, None,
            f"{batch.rows_per_s:,.0f} rows/s vs {inprocess:,.0f} rows/s (inference alone, no store: "
            f"{batch.extra['inference_only_rows_per_s']:,.0f} rows/s)")
    found += async_targets(_points(outcomes, "async_jobs"))
    for c in sorted({low, top}):
        direct, through, proxy, tls = (_at(outcomes, n, c) for n in (
            "triton_iris_http", "gateway_iris_http", "gateway_proxy_iris_http", "gateway_tls_iris_http"))
        if direct and through:
            ratio, extra = through.rows_per_s / direct.rows_per_s, through.p50_ms - direct.p50_ms
            beside = "".join(f"; {what} {p.rows_per_s:,.0f}/s ({p.rows_per_s / direct.rows_per_s:.2f}x), "
                             f"p50 {p.p50_ms:.2f} ms"
                             for what, p in (("without the shape check", proxy), ("with TLS", tls)) if p)
            add(f"nginx gateway vs direct, iris HTTP JSON, c={c}: throughput", ">= 0.85x", ratio, ratio >= 0.85,
                f"{through.rows_per_s:,.0f}/s vs {direct.rows_per_s:,.0f}/s{beside}")
            add(f"nginx gateway vs direct, iris HTTP JSON, c={c}: p50 added", "<= 0.3 ms", extra, extra <= 0.3,
                f"{through.p50_ms:.2f} ms vs {direct.p50_ms:.2f} ms")
        else:
            add(f"nginx gateway vs direct, iris HTTP JSON, c={c}", ">= 0.85x", None, None, "not measured")
    for what, num, den, level, metric, goal in COMPARISONS:
        c = {"low": low, "top": top}.get(level, level)
        a, b = _at(outcomes, num, c), _at(outcomes, den, c)
        value = getattr(a, metric) / getattr(b, metric) if a and b else None
        unit = UNITS[metric]
        add(f"{what}, c={c}" + ("" if goal else " (reported, no goal)"), f"<= {goal}x" if goal else "-", value,
            bool(goal and value is not None and value <= goal) if goal else None,
            f"{num} {getattr(a, metric):,.2f} {unit} vs {den} {getattr(b, metric):,.2f} {unit}" if a and b
            else "not measured")
    return found


def async_targets(points: list[Point]) -> list[Target]:
    """Batched async workers against the synchronous endpoint measured beside them."""
    two = next((p for p in points if p.concurrency == 2), None)
    if two is None:
        return [Target("asynchronous jobs/s, 2 workers, vs synchronous iris gRPC", ">= 0.5x", None, None,
                       "not measured")]
    sync, c = two.extra["sync_rows_per_s"], two.extra["concurrency"]
    others = "; ".join(f"{p.concurrency} worker(s): {p.rows_per_s:,.0f} draining, "
                       f"{p.extra['live_jobs_per_s']:,.0f} live "
                       f"(vs {p.extra['sync_rows_per_s']:,.0f})" for p in points if p is not two)
    found = []
    for mode, rate in (("draining a filled queue", two.rows_per_s), ("submitted live", two.extra["live_jobs_per_s"])):
        ratio = rate / sync if sync else float("nan")
        found.append(Target(f"asynchronous jobs/s, 2 workers, {mode}, vs synchronous iris gRPC c={c}", ">= 0.5x",
                            ratio, ratio >= 0.5, f"{rate:,.0f} jobs/s vs {sync:,.0f} rows/s measured just before"
                            + (f"; {others}" if others and mode == "submitted live" else "")))
    latency = two.extra.get("latency") or {}
    if latency:
        found.append(Target("asynchronous submit -> end notification, c=1, 2 workers: p50 (reported, no goal)", "-",
                            latency["p50_ms"], None, f"p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms; "
                            f"the synchronous call on the same rows p50 {latency['sync_p50_ms']:.2f} ms, "
                            f"p99 {latency['sync_p99_ms']:.2f} ms"))
    return found


def perf_crosscheck(outcomes: list[Outcome]) -> list[tuple[str, str, int, Point, Point | None]]:
    """perf_analyzer's points next to the project's own load generator's on the same model."""
    rows = []
    for o in outcomes:
        if o.setup.group == "perf_analyzer":
            own = o.setup.mirrors
            rows += [(o.setup.name, own, p.concurrency, p, _at(outcomes, own, p.concurrency)) for p in o.points]
    return rows


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    wrk = "-"
    if loadgen.wrk_available():
        import subprocess
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (out.stdout + out.stderr).split("[")[0].replace("wrk", "").strip() or "-"
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "tritonserver": "2.51.0 (nvidia-pytriton " + _version("nvidia-pytriton") + ")",
            **{d: _version(d) for d in ("tritonclient", "onnxruntime", "numpy", "fastapi", "uvicorn", "uvloop")},
            "wrk": wrk}


def plots(outcomes: list[Outcome], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    served = [o for o in outcomes if o.setup.group != "limit" and o.points]
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.5))
    styles = {"peer": "--", "perf_analyzer": ":"}
    for ax, models in zip(axes, (("iris",), ("heavy_mlp", "digits"), ("text",)), strict=True):
        for o in served:
            if o.setup.model in models:
                ax.plot([p.concurrency for p in o.points], [p.rows_per_s for p in o.points], marker="o",
                        label=o.setup.name, linestyle=styles.get(o.setup.group, "-"))
        for o in outcomes:  # the limit as horizontal lines: its best batch
            if o.setup.group == "limit" and o.setup.model in models and o.points:
                best = _best(o.points)
                ax.axhline(best.rows_per_s, color="grey", linewidth=0.8, linestyle=":")
                ax.annotate(f"{o.setup.name} b{best.batch}", (1, best.rows_per_s), fontsize=7, color="grey")
        ax.set(xlabel="concurrency", ylabel="rows/s", title=" / ".join(models))
        if ax.lines:  # a partial run (--setups) may leave a panel empty: no log scale without data
            ax.set(xscale="log", yscale="log")
            ax.legend(fontsize=7)
    fig.tight_layout()
    made.append(out / "throughput.png")
    fig.savefig(made[-1], dpi=90)
    plt.close(fig)

    levels = sorted({p.concurrency for o in served for p in o.points})
    fig, axes = plt.subplots(1, len(levels), figsize=(6 * len(levels), 6), squeeze=False)
    for ax, level in zip(axes[0], levels, strict=True):
        rows = [(o.setup.name, _at(outcomes, o.setup.name, level)) for o in served]
        rows = [(n, p) for n, p in rows if p and not math.isnan(p.p50_ms)]  # the batch job has no latency
        y = np.arange(len(rows))
        for i, (key, color) in enumerate((("p50_ms", "C0"), ("p90_ms", "C1"), ("p99_ms", "C3"))):
            ax.barh(y + (i - 1) * 0.27, [getattr(p, key) for _, p in rows], 0.27, label=key[:3], color=color)
        ax.set(yticks=y, yticklabels=[n for n, _ in rows], xlabel="ms", title=f"latency, c={level}")
        if rows:
            ax.set(xscale="log")
            ax.legend(fontsize=8)
    fig.tight_layout()
    made.append(out / "latency.png")
    fig.savefig(made[-1], dpi=90)
    plt.close(fig)
    jobs = _points(outcomes, "async_jobs")
    if jobs:
        from .async_bench import plot as async_plot

        rounds = [{"workers": p.concurrency, "mode": mode, "jobs_per_s": rate} for p in jobs
                  for mode, rate in (("drain", p.rows_per_s), ("live", p.extra["live_jobs_per_s"]))]
        sync = next((p for p in jobs if p.concurrency == 2), jobs[0]).extra  # the targets' reference
        made.append(async_plot({"async": rounds, "sync_rows_per_s": sync["sync_rows_per_s"],
                                "concurrency": sync["concurrency"]}, out / "async_workers.png"))
    return made


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def markdown(outcomes: list[Outcome], found: list[Target], info: dict, args, plot_dir: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m loadtest.bench`) on {time.strftime('%Y-%m-%d %H:%M')}; "
        f"{args.duration:g} s per point after {args.warmup:g} s of warm-up, closed loop. Do not edit by hand: "
        "rerun `make bench`. Numbers are from one run on a shared, noisy machine; compare ratios, not absolutes.",
        "",
        "## Machine and versions",
        "",
        "| | |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Targets, from this run",
        "",
        "| target | goal | this run | result | from |", "|---|---|---|---|---|",
        *[f"| {t.name} | {t.goal} | {fmt(t.value, 2)} | "
          f"{'PASS' if t.passed else 'MISS' if t.passed is not None else 'n/a'} | {t.detail} |" for t in found],
        "",
        "Why a target is missed, with profiles: [docs/bench/missed_targets.md](docs/bench/missed_targets.md) "
        "(written from a `make bench` and a `make profile` run; the profiles themselves: "
        "[docs/bench/profiles/profiles.md](docs/bench/profiles/profiles.md)).",
        "",
        "## All points",
        "",
        "`c` is the number of concurrent closed-loop clients (connections for wrk); for in-process rows it is 1 and "
        "`batch` rows go into each `session.run`. `rows/s` = answered rows per second; `loadgen CPU` is the load "
        "generator's own CPU time over (wall time x cores): how much of the machine it took from the server.",
        "",
        "| setup | what | c | batch | rows/s | p50 ms | p90 ms | p99 ms | errors | loadgen CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error and not o.points:
            lines.append(f"| {o.setup.name} | {o.setup.what} | - | - | - | - | - | - | FAILED: {o.error} | - |")
        for p in o.points:
            lines.append(f"| {o.setup.name} | {o.setup.what} | {p.concurrency} | {p.batch} | {fmt(p.rows_per_s, 0)} | "
                         f"{fmt(p.p50_ms, 2)} | {fmt(p.p90_ms, 2)} | {fmt(p.p99_ms, 2)} | {p.errors} | "
                         f"{'-' if o.setup.group == 'limit' else f'{p.loadgen_cpu:.0%}'} |")
    cross = perf_crosscheck(outcomes)
    if cross:
        lines += ["", "## perf_analyzer cross-check", "",
                  "The same model on the same server measured by perf_analyzer (tritonclient 2.51.0's binary, gRPC, "
                  "`--concurrency-range c:c`) and by this harness's own gRPC load generator.", "",
                  "| perf_analyzer setup | own setup | c | perf_analyzer infer/s | own rows/s | own / perf_analyzer | "
                  "perf_analyzer p99 ms | own p99 ms |", "|---|---|---|---|---|---|---|---|"]
        for name, own_name, c, p, own in cross:
            ratio = own.rows_per_s / p.rows_per_s if own and p.rows_per_s else None
            lines.append(f"| {name} | {own_name} | {c} | {fmt(p.rows_per_s, 0)} | "
                         f"{fmt(own.rows_per_s if own else None, 0)} | {fmt(ratio, 2)} | {fmt(p.p99_ms, 2)} | "
                         f"{fmt(own.p99_ms if own else None, 2)} |")
    lines += ["", "## Plots", "", f"![throughput]({plot_dir}/throughput.png)", "",
              f"![latency]({plot_dir}/latency.png)", ""]
    if _points(outcomes, "async_jobs"):
        lines += [f"![asynchronous jobs/s against workers]({plot_dir}/async_workers.png)", ""]
    return "\n".join(lines)


def write_reports(outcomes: list[Outcome], args) -> tuple[list[Target], list[Path]]:
    args.out.mkdir(parents=True, exist_ok=True)
    top = max(args.concurrency)
    found = targets(outcomes, top, min(args.concurrency))
    info = machine()
    (args.out / "results.json").write_text(json.dumps({
        "machine": info, "duration": args.duration, "warmup": args.warmup,
        "setups": [{"name": o.setup.name, "what": o.setup.what, "correct": o.correct, "ok": o.ok, "error": o.error,
                    "points": [p.as_dict() for p in o.points]} for o in outcomes],
        "targets": [t.__dict__ for t in found],
    }, indent=1))
    made = plots(outcomes, args.out)
    if args.write_md:
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        for path in made:
            shutil.copy(path, DOCS_DIR / path.name)
        BENCHMARKS_MD.write_text(markdown(outcomes, found, info, args, "docs/bench"))
    else:
        (args.out / "BENCHMARKS.md").write_text(markdown(outcomes, found, info, args, "."))
    return found, made
