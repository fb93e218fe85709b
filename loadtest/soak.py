"""`make soak`: a bounded locust run over every pattern while the servers' resident memory is sampled.

Starts the stack the locust runner starts (`pattern_runtime.stack.running_stack`: Redis and
tritonserver on free ports), runs `loadtest/locustfile.py` headless through
`loadtest.locust_run.run_locust` with `--csv-full-history` (stats every second per pattern), and
meanwhile reads every `--interval` seconds the RSS (`VmRSS` of /proc/<pid>/status) of
tritonserver, of each Python stub (`TritonServer.stub_pids()`) and of redis-server. Writes under
`--out` (reports/soak/): the locust CSVs and HTML, `memory.csv`, `soak.json` (per pattern and
protocol: requests, failures, error rate, p50/p99 overall and per time window; per process: RSS
after warm-up and at the end, growth) and `soak.png`; prints a summary and exits 1 when the error
rate of a pattern or of the whole run is above `--max-error-rate`, a pattern got no request, a
process exited, or a process grew by more than both `--max-growth-pct` and `--max-growth-mb`
after the warm-up (a leak), naming which.

    python -m loadtest.soak --duration 10m --users 1
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtest import locust_run
from loadtest.script import run_script
from pattern_runtime import paths
from triton_patterns.patterns import PATTERNS

OUT_DIR = paths.REPORTS / "soak"
OVERALL = ("Aggregated", "")  # (name, protocol) of locust's total row


@dataclass(frozen=True)
class Limits:
    max_error_rate: float = 0.001  # per pattern and protocol, and overall
    max_growth_pct: float = 50.0  # a leak: RSS grew by more than both, from the end of warm-up to the end
    max_growth_mb: float = 50.0


@dataclass(frozen=True)
class Sample:
    t_s: float  # since the soak started
    process: str
    pid: int
    rss_mb: float


# --------------------------------------------------------------------------- memory


def rss_mb(pid: int) -> float | None:
    """Resident set size of `pid` in MB (VmRSS of /proc/<pid>/status), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def server_processes(triton, redis) -> list[tuple[str, int]]:
    """(name, pid) of tritonserver, redis-server and every Python stub ("stub <model>")."""
    found = [("tritonserver", triton.pid), ("redis-server", redis.pid)]
    found += [(f"stub {model}", pid) for model, pids in sorted(triton.stub_pids().items()) for pid in sorted(pids)]
    return [(name, pid) for name, pid in found if pid]


class MemorySampler:
    """Samples the RSS of `targets()` every `interval` seconds in a thread, from `start()` to `stop()`."""

    def __init__(self, targets: Callable[[], list[tuple[str, int]]], interval: float):
        self.targets, self.interval = targets, interval
        self.samples: list[Sample] = []
        self.rounds: list[float] = []  # the time of each sampling round
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self.started = 0.0  # unix time of the first round

    def __enter__(self) -> MemorySampler:
        self.started = time.time()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self._round()  # one last look at the end of the load

    def _round(self) -> None:
        now = round(time.time() - self.started, 2)
        for name, pid in self.targets():
            rss = rss_mb(pid)
            if rss is not None:
                self.samples.append(Sample(now, name, pid, round(rss, 2)))
        self.rounds.append(now)

    def _run(self) -> None:
        while True:
            self._round()
            if self._stop.wait(self.interval):
                return


def memory_report(samples: list[Sample], warmup_s: float) -> list[dict]:
    """Per process (name, pid): RSS at the first sample after warm-up ("start") and at the last, growth, peak."""
    by_process: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        by_process.setdefault((s.process, s.pid), []).append(s)
    report = []
    for (name, pid), seen in by_process.items():
        start = next((s for s in seen if s.t_s >= warmup_s), seen[-1])
        end = seen[-1]
        growth = end.rss_mb - start.rss_mb
        report.append({
            "process": name, "pid": pid, "samples": len(seen), "first_s": seen[0].t_s, "last_s": end.t_s,
            "rss_first_mb": seen[0].rss_mb, "rss_start_mb": start.rss_mb, "rss_end_mb": end.rss_mb,
            "rss_peak_mb": max(s.rss_mb for s in seen), "growth_mb": round(growth, 2),
            "growth_pct": round(100 * growth / start.rss_mb, 1) if start.rss_mb else 0.0,
        })
    return sorted(report, key=lambda r: (not r["process"].startswith(("tritonserver", "redis")),
                                         r["process"], r["pid"]))


# --------------------------------------------------------------------------- latency over time


def _number(value: str) -> float:
    return float("nan") if value in ("", "N/A") else float(value)


def read_history(path: Path) -> dict[tuple[str, str], list[dict]]:
    """locust's `_stats_history.csv` (with --csv-full-history) by (name, protocol): per second, the
    cumulative request and failure counts and the percentiles of the last ~10 s."""
    history: dict[tuple[str, str], list[dict]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            key = (r["Name"], r["Type"])
            history.setdefault(key, []).append({
                "t": int(r["Timestamp"]), "requests": int(r["Total Request Count"]),
                "failures": int(r["Total Failure Count"]), "rps": _number(r["Requests/s"]),
                "p50_ms": _number(r["50%"]), "p99_ms": _number(r["99%"]),
            })
    return history


def windows(rows: list[dict], t0: float, width: float) -> list[dict]:
    """Windows of `width` seconds from `t0`: requests and failures in each (from the cumulative counts),
    p50 = median of locust's per-second 10-s p50 in the window, p99 = the highest 10-s p99 in it."""
    found, before = [], {"requests": 0, "failures": 0}
    end = max((r["t"] for r in rows), default=t0)
    k = 0
    while t0 + k * width < end:
        lo, hi = t0 + k * width, t0 + (k + 1) * width
        inside = [r for r in rows if lo < r["t"] <= hi]
        k += 1
        if not inside:
            continue
        p50s = [r["p50_ms"] for r in inside if not math.isnan(r["p50_ms"])]
        p99s = [r["p99_ms"] for r in inside if not math.isnan(r["p99_ms"])]
        last = inside[-1]
        if not p50s and found:  # only the final counts, after locust's last history row: part of the window before
            found[-1].update(end_s=round(hi - t0),
                             requests=last["requests"] - before["requests"] + found[-1]["requests"],
                             failures=last["failures"] - before["failures"] + found[-1]["failures"])
            before = last
            continue
        found.append({
            "start_s": round(lo - t0), "end_s": round(hi - t0),
            "requests": last["requests"] - before["requests"], "failures": last["failures"] - before["failures"],
            "p50_ms": statistics.median(p50s) if p50s else None, "p99_ms": max(p99s) if p99s else None,
        })
        before = last
    return found


def read_totals(path: Path) -> dict[tuple[str, str], dict]:
    """locust's final `_stats.csv` by (name, protocol), the "Aggregated" row included."""
    with path.open() as f:
        return {
            (r["Name"], r["Type"]): {
                "requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                "p50_ms": _number(r["50%"]), "p99_ms": _number(r["99%"]), "rps": round(float(r["Requests/s"]), 2),
            }
            for r in csv.DictReader(f)
        }


def latency_report(out: Path, started: float, window_s: float) -> list[dict]:
    """One entry per (pattern, protocol) and one overall: totals, error rate and windows."""
    stats = out / "locust_stats.csv"
    totals = read_totals(stats)
    history = read_history(out / "locust_stats_history.csv")
    ended = stats.stat().st_mtime  # written once the users stopped; the history misses the last second or two
    report = []
    for (name, protocol), total in totals.items():
        rows = history.get((name, protocol), [])
        final = {"t": max([ended, *(r["t"] for r in rows)]), "requests": total["requests"],
                 "failures": total["failures"], "p50_ms": math.nan, "p99_ms": math.nan}
        report.append({
            "pattern": "overall" if (name, protocol) == OVERALL else name, "protocol": protocol or "all",
            **total, "error_rate": total["failures"] / total["requests"] if total["requests"] else 0.0,
            "windows": windows([*rows, final], started, window_s),
        })
    return sorted(report, key=lambda r: (r["pattern"] == "overall", r["pattern"], r["protocol"]))


# --------------------------------------------------------------------------- verdict, plot, summary


def problems(latency: list[dict], memory: list[dict], patterns: list[str], protocol: str, limits: Limits,
             last_round_s: float) -> list[str]:
    """Why the soak failed: a (pattern, protocol) without requests, an error rate above the limit,
    a process gone before the last sampling round (at `last_round_s`), a process that grew past both
    growth limits after warm-up."""
    found = [p for p in locust_run.problems(
        [locust_run.Row(r["pattern"], r["protocol"], r["requests"], 0, 0, 0, 0) for r in latency], patterns, protocol)]
    for r in latency:
        if r["error_rate"] > limits.max_error_rate:
            found.append(f"error rate of {r['pattern']} over {r['protocol']}: {r['error_rate']:.2%} "
                         f"({r['failures']} of {r['requests']}) > {limits.max_error_rate:.2%}")
    for m in memory:
        if m["last_s"] < last_round_s:
            found.append(f"{m['process']} (pid {m['pid']}) exited during the soak (last seen at {m['last_s']:.0f} s)")
        elif m["growth_mb"] > limits.max_growth_mb and m["growth_pct"] > limits.max_growth_pct:
            found.append(f"memory of {m['process']} (pid {m['pid']}) grew {m['growth_mb']:.0f} MB "
                         f"(+{m['growth_pct']:.0f}%) after warm-up: "
                         f"{m['rss_start_mb']:.0f} -> {m['rss_end_mb']:.0f} MB "
                         f"(limits {limits.max_growth_mb:.0f} MB and {limits.max_growth_pct:.0f}%)")
    return found


def stubs_total(samples: list[Sample]) -> tuple[list[float], list[float]]:
    """The summed RSS of every stub, per sampling round (time, MB)."""
    rounds: dict[float, float] = {}
    for s in samples:
        if s.process.startswith("stub "):
            rounds[s.t_s] = rounds.get(s.t_s, 0.0) + s.rss_mb
    return list(rounds), list(rounds.values())


def plot(out: Path, history: dict[tuple[str, str], list[dict]], started: float, samples: list[Sample],
         memory: list[dict], warmup_s: float) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, mem) = plt.subplots(2, 1, figsize=(11, 9), sharex=True)
    overall = history.get(OVERALL, [])
    ts = [r["t"] - started for r in overall]
    lat.plot(ts, [r["p50_ms"] for r in overall], label="p50 (all patterns)", color="C0")
    lat.plot(ts, [r["p99_ms"] for r in overall], label="p99 (all patterns)", color="C3")
    rps = lat.twinx()
    rps.plot(ts, [r["rps"] for r in overall], label="req/s", color="grey", linewidth=0.8, alpha=0.6)
    rps.set_ylabel("req/s")
    lat.set(ylabel="ms (locust's 10-s window)", title="latency over time")
    lat.legend(loc="upper left", fontsize=8)
    rps.legend(loc="upper right", fontsize=8)

    def line(name: str, pid: int, **style) -> None:
        seen = [s for s in samples if s.process == name and s.pid == pid]
        mem.plot([s.t_s for s in seen], [s.rss_mb for s in seen], **style)

    for m in memory:
        if not m["process"].startswith("stub "):
            line(m["process"], m["pid"], label=f"{m['process']} ({m['pid']})", linewidth=2)
    stubs = [m for m in memory if m["process"].startswith("stub ")]
    for m in sorted(stubs, key=lambda m: -m["growth_mb"])[:5]:  # the stubs that grew most
        line(m["process"], m["pid"], label=f"{m['process']} ({m['pid']})", linewidth=1)
    total_t, total_mb = stubs_total(samples)
    mem.plot(total_t, total_mb, label=f"all {len(stubs)} stubs, summed", color="black", linestyle="--")
    for ax in (lat, mem):
        ax.axvline(warmup_s, color="grey", linestyle=":", linewidth=1)
    mem.set(xlabel="seconds since start (dotted: end of warm-up)", ylabel="RSS MB", title="resident memory",
            yscale="log")
    mem.legend(fontsize=7, ncol=2, loc="center right")
    fig.tight_layout()
    path = out / "soak.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _ms(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0f}"


def print_summary(report: dict) -> None:
    from rich.table import Table

    from pattern_tools.demo import console

    out = report["out"]
    table = Table(title=f"soak {report['duration_s']} s, {report['users_per_pattern']} user(s) per pattern: "
                        f"{out}/soak.json, soak.png")
    for column in ("pattern", "protocol", "requests", "failures", "error %", "p50 ms", "p99 ms",
                   "worst window p99", "req/s"):
        table.add_column(column, justify="left" if column in ("pattern", "protocol") else "right")
    for r in report["patterns"]:
        worst = max((w["p99_ms"] for w in r["windows"] if w["p99_ms"] is not None), default=None)
        table.add_row(r["pattern"], r["protocol"], str(r["requests"]), str(r["failures"]),
                      f"{100 * r['error_rate']:.2f}", _ms(r["p50_ms"]), _ms(r["p99_ms"]), _ms(worst),
                      f"{r['rps']:.1f}", end_section=r["pattern"] == "overall")
    console.print(table)

    memory = report["processes"]
    stubs = [m for m in memory if m["process"].startswith("stub ")]
    shown = [m for m in memory if not m["process"].startswith("stub ")]
    shown += sorted(stubs, key=lambda m: -m["growth_mb"])[:5]
    table = Table(title=f"RSS every {report['interval_s']:g} s, from the end of warm-up ({report['warmup_s']:g} s) "
                        f"to the end; {len(stubs)} stubs, the 5 that grew most shown ({out}/memory.csv)")
    for column in ("process", "pid", "samples", "after warm-up MB", "end MB", "peak MB", "growth MB", "growth %"):
        table.add_column(column, justify="left" if column == "process" else "right")
    rows = [(m["process"], str(m["pid"]), str(m["samples"]), m["rss_start_mb"], m["rss_end_mb"], m["rss_peak_mb"],
             m["growth_mb"], m["growth_pct"]) for m in shown]
    if stubs:
        start, end = sum(m["rss_start_mb"] for m in stubs), sum(m["rss_end_mb"] for m in stubs)
        rows.append((f"all {len(stubs)} stubs, summed", "-", "-", start, end, sum(m["rss_peak_mb"] for m in stubs),
                     end - start, 100 * (end - start) / start if start else 0.0))
    for process, pid, count, start, end, peak, growth, pct in rows:
        table.add_row(process, pid, count, f"{start:.0f}", f"{end:.0f}", f"{peak:.0f}", f"{growth:+.1f}",
                      f"{pct:+.1f}")
    console.print(table)


# --------------------------------------------------------------------------- the run


def default_window(duration_s: float) -> float:
    """About ten windows, each a multiple of 10 s (locust's percentile window)."""
    return max(10.0, round(duration_s / 10 / 10) * 10)


def run_soak(patterns: list[str], triton, redis, users: int = 1, duration: str = "10m", protocol: str = "both",
             interval: float = 5.0, warmup: float | None = None, window: float | None = None,
             limits: Limits = Limits(), out: Path = OUT_DIR) -> dict:
    """Locust over `patterns` against running `triton` (a TritonServer: urls, pid, stub_pids()) and
    `redis` (a RedisServer: pid) while sampling their memory; writes the report files under `out`
    and returns the report (soak.json's content; "problems" empty when the soak passed)."""
    duration_s = locust_run.seconds(duration)
    warmup_s = min(60.0, 0.2 * duration_s) if warmup is None else warmup
    window_s = default_window(duration_s) if window is None else window
    out.mkdir(parents=True, exist_ok=True)
    with MemorySampler(lambda: server_processes(triton, redis), interval) as sampler:
        locust_run.run_locust(patterns, triton.http_url, triton.grpc_url, users, duration, protocol, out,
                              extra=["--csv-full-history"])
    with (out / "memory.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(Sample.__dataclass_fields__)
        writer.writerows((s.t_s, s.process, s.pid, s.rss_mb) for s in sampler.samples)
    latency = latency_report(out, sampler.started, window_s)
    memory = memory_report(sampler.samples, warmup_s)
    plot(out, read_history(out / "locust_stats_history.csv"), sampler.started, sampler.samples, memory, warmup_s)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(sampler.started)), "out": str(out),
        "duration_s": duration_s, "users_per_pattern": users, "protocol": protocol, "interval_s": interval,
        "warmup_s": warmup_s, "window_s": window_s, "limits": asdict(limits),
        "patterns": latency, "processes": memory,
        "problems": problems(latency, memory, patterns, protocol, limits, sampler.rounds[-1]),
    }
    (out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10m", help="locust --run-time: 10m, 3m, 30s, ...")
    parser.add_argument("--users", type=int, default=1, help="users per pattern")
    parser.add_argument("--pattern", default="all", help=f"comma list or 'all' ({', '.join(PATTERNS)})")
    parser.add_argument("--protocol", default="both", choices=("http", "grpc", "both"))
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--warmup", type=float, help="seconds before the growth baseline (default: 20%%, <= 60)")
    parser.add_argument("--window", type=float, help="seconds per latency window in soak.json (default: ~1/10)")
    parser.add_argument("--max-error-rate", type=float, default=Limits.max_error_rate, help="fraction, e.g. 0.001")
    parser.add_argument("--max-growth-pct", type=float, default=Limits.max_growth_pct)
    parser.add_argument("--max-growth-mb", type=float, default=Limits.max_growth_mb)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    patterns = list(PATTERNS) if args.pattern == "all" else [p.strip() for p in args.pattern.split(",")]
    locust_run.seconds(args.duration)  # a bad run time fails here, before anything starts
    limits = Limits(args.max_error_rate, args.max_growth_pct, args.max_growth_mb)

    from pattern_runtime.stack import running_stack

    with running_stack() as (triton, redis):
        report = run_soak(patterns, triton, redis, args.users, args.duration, args.protocol, args.interval,
                          args.warmup, args.window, limits, args.out)
    print_summary(report)
    for problem in report["problems"]:
        print(f"FAILED {problem}")
    print("soak passed: error rates and memory growth within limits" if not report["problems"]
          else f"soak failed: {len(report['problems'])} problem(s)")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    run_script(main)
