"""`make loadtest`: a headless locust run over chosen patterns, with CSV + HTML under reports/locust/.

Starts what the demo starts (Redis and tritonserver on free ports, a seeded temporary data store;
`pattern_runtime.stack.running_stack`), or targets a running server with `--url`, runs locust on
`loadtest/locustfile.py` as a subprocess, stops what it started, prints one row per pattern and
protocol, and exits 1 when a pattern got no request or had a failure.

    python -m loadtest.locust_run --pattern synchronous,serial --users 4 --duration 30s
    python -m loadtest.locust_run --pattern all --protocol grpc --url 127.0.0.1:8000 --grpc-url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.script import run_script
from pattern_runtime import paths
from pattern_runtime.processes import ManagedProcess
from triton_patterns.patterns import PATTERNS

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
OUT_DIR = paths.REPORTS / "locust"


@dataclass(frozen=True)
class Row:
    """One line of locust's `<prefix>_stats.csv` (a pattern over a protocol)."""

    pattern: str
    protocol: str
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    rps: float


def seconds(timespan: str) -> int:
    """locust's `--run-time` format ("30s", "2m", "1h30m", "45") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", timespan.strip())
    if not timespan.strip() or not parts:
        raise ValueError(f"not a locust run time: {timespan!r} (e.g. 30s, 2m, 1h30m)")
    hours, minutes, secs = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def _ms(value: str) -> float:
    return float("nan") if value in ("", "N/A") else float(value)


def read_stats(path: Path) -> list[Row]:
    """The per-pattern rows of a stats CSV (the "Aggregated" row left out)."""
    with path.open() as f:
        return [
            Row(r["Name"], r["Type"], int(r["Request Count"]), int(r["Failure Count"]),
                _ms(r["50%"]), _ms(r["99%"]), float(r["Requests/s"]))
            for r in csv.DictReader(f) if r["Name"] != "Aggregated"
        ]


def run_locust(patterns: list[str], http_url: str, grpc_url: str, users: int = 2, duration: str = "30s",
               protocol: str = "both", out: Path = OUT_DIR, extra: Sequence[str] = ()) -> list[Row]:
    """Headless locust with `users` users per pattern; returns the rows of its stats CSV.

    Writes `<out>/locust_stats.csv` (and `_failures`, `_exceptions`, `_stats_history`),
    `<out>/locust.html` and `<out>/locust.log`; `extra`: more locust options (`--csv-full-history`)."""
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown:
        raise ValueError(f"unknown pattern(s) {', '.join(unknown)}; known: {', '.join(PATTERNS)}")
    out.mkdir(parents=True, exist_ok=True)
    prefix, log = out / "locust", out / "locust.log"
    total = users * len(patterns)  # equal weights: locust gives each pattern's class `users` users
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--users", str(total), "--spawn-rate", str(total), "--run-time", duration, "--stop-timeout", "5",
        "--csv", str(prefix), "--html", str(out / "locust.html"),
        "--triton-http", http_url, "--triton-grpc", grpc_url, "--protocol", protocol, *extra, *patterns,
    ]
    log.unlink(missing_ok=True)
    locust = ManagedProcess(command, log, cwd=paths.PROJECT_ROOT)
    returncode = locust.wait(seconds(duration) + 120)
    if returncode is None:  # hung: stop what this run started, by its pid
        returncode = locust.terminate(timeout=15)
    stats = Path(f"{prefix}_stats.csv")
    rows = read_stats(stats) if stats.exists() else []
    if returncode not in (0, 1) or not rows:  # 1: the run had failures, reported by the caller
        raise RuntimeError(f"locust exited with {returncode} and {len(rows)} stats rows; {log}:\n"
                           f"{locust.log_tail(40)}")
    return rows


def problems(rows: list[Row], patterns: list[str], protocol: str) -> list[str]:
    """What makes a run bad: a (pattern, protocol) without requests, or with failures."""
    protocols = ("http", "grpc") if protocol == "both" else (protocol,)
    seen = {(r.pattern, r.protocol): r for r in rows}
    found = []
    for pattern in patterns:
        for proto in protocols:
            row = seen.get((pattern, proto))
            if row is None or row.requests == 0:
                found.append(f"{pattern} over {proto}: no request")
            elif row.failures:
                found.append(f"{pattern} over {proto}: {row.failures} failures of {row.requests}")
    return found


def print_summary(rows: list[Row], out: Path) -> None:
    from rich.table import Table

    from pattern_tools.demo import console

    table = Table(title=f"locust: {out}/locust_stats.csv, {out}/locust.html")
    for column in ("pattern", "protocol", "requests", "failures", "p50 ms", "p99 ms", "req/s"):
        table.add_column(column, justify="left" if column in ("pattern", "protocol") else "right")
    for r in sorted(rows, key=lambda r: (r.pattern, r.protocol)):
        table.add_row(r.pattern, r.protocol, str(r.requests), str(r.failures),
                      f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}", f"{r.rps:.1f}")
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pattern", default="all", help=f"comma list or 'all' ({', '.join(PATTERNS)})")
    parser.add_argument("--users", type=int, default=2, help="users per pattern")
    parser.add_argument("--duration", default="30s", help="locust --run-time: 30s, 2m, ...")
    parser.add_argument("--protocol", default="both", choices=("http", "grpc", "both"))
    parser.add_argument("--url", help="HTTP host:port of a running tritonserver (default: start one)")
    parser.add_argument("--grpc-url", help="its gRPC host:port (with --url and a gRPC protocol)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    patterns = list(PATTERNS) if args.pattern == "all" else [p.strip() for p in args.pattern.split(",")]
    seconds(args.duration)  # a bad run time fails here, before anything starts
    if args.url and args.protocol != "http" and not args.grpc_url:
        parser.error("--url with a gRPC protocol needs --grpc-url")
    start = time.perf_counter()
    if args.url:
        rows = run_locust(patterns, args.url, args.grpc_url or "", args.users, args.duration, args.protocol,
                          args.out)
    else:
        from pattern_runtime.stack import running_stack

        with running_stack() as (triton, _redis):
            rows = run_locust(patterns, triton.http_url, triton.grpc_url, args.users, args.duration,
                              args.protocol, args.out)
    print_summary(rows, args.out)
    found = problems(rows, patterns, args.protocol)
    for problem in found:
        print(f"FAILED {problem}")
    print(f"locust run finished in {time.perf_counter() - start:.0f} s: "
          + ("every pattern answered correctly" if not found else f"{len(found)} problem(s)"))
    return 1 if found else 0


if __name__ == "__main__":
    run_script(main)
