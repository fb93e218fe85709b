"""Restart-to-ready of a supervised tritonserver: SIGKILL it and time until it answers again.

    .venv/bin/python -m loadtest.restart_bench [--rounds 2] [--config all ...] [--busy-cpus 2]

Each configuration starts Redis and a supervised tritonserver (`restart_on_death`, the supervisor
`triton-patterns serve` runs, its default backoff) on free ports, then per round SIGKILLs the
server and measures, from the kill: the respawn (the supervisor's backoff) and the first moment
the server answers as a load balancer's probe asks (`pattern_kernel.probe`: /v2/health/ready 200
and a right answer from iris; tritonserver opens its endpoints only once every model it loads
at start is loaded). The rounds run quiet, then with `stress-ng --cpu N` beside them. Prints a
table and writes `reports/restart/restart.json` and `restart.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from loadtest.script import run_script
from pattern_kernel import probe
from pattern_kernel.server_command import MODEL_LOAD_THREADS
from pattern_runtime import paths
from pattern_runtime.processes import ManagedProcess, wait_for
from pattern_runtime.serve_models import EXTRA_MODELS, default_serve_models
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.stack import Stack


def _threads(n: int) -> ServerSettings:
    return ServerSettings(extra_args=[f"--model-load-thread-count={n}"])  # after the launcher's flags: it wins


CONFIGS = {  # name: (what, how tritonserver runs)
    "all": (f"every model, the launcher's flags ({MODEL_LOAD_THREADS} load threads)", ServerSettings()),
    "all-2-threads": ("every model, --model-load-thread-count=2", _threads(2)),
    "all-4-threads": ("every model, --model-load-thread-count=4 (Triton's default)", _threads(4)),
    "all-8-threads": ("every model, --model-load-thread-count=8", _threads(8)),
    "serve-default": (f"serve's default: every model but {', '.join(EXTRA_MODELS)}",
                      ServerSettings(load_models=default_serve_models())),
}
ROW = [float(v) for v in probe.SETOSA.split(",")]


def answers(server) -> bool:
    return probe.probe(server.http_url, ["iris"], "FEATURES", ROW, {"LABEL": "0"}, timeout=5) == []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def restart_once(server, timeout: float = 600.0) -> dict:
    """SIGKILL the server; seconds until the supervisor respawned it and until it answers, and
    the CPU seconds the new server and its stubs used to get there (what the machine's load
    does not change: on an idle 2-core machine the wait is about half of it)."""
    old = server.pid
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    respawned = wait_for(lambda: server.pid not in (None, old), timeout, interval=0.05)
    spawn_s = time.monotonic() - killed
    ok = respawned and wait_for(lambda: answers(server), timeout, interval=0.1)
    answers_s = round(time.monotonic() - killed, 2) if ok else None
    stubs = [pid for pids in server.stub_pids().values() for pid in pids]
    return {"respawn_s": round(spawn_s, 2), "answers_s": answers_s,
            "load_s": round(answers_s - spawn_s, 2) if ok else None,
            "cpu_s": round(cpu_seconds(server.pid) + sum(map(cpu_seconds, stubs)), 1), "stubs": len(stubs),
            "load_1m": round(os.getloadavg()[0], 1)}


def busy(cpus: int, log_dir: Path) -> ManagedProcess | None:
    if cpus <= 0:
        return None
    if shutil.which("stress-ng") is None:
        sys.exit("restart_bench: stress-ng not found (Debian: apt-get install stress-ng), or --busy-cpus 0")
    return ManagedProcess(["stress-ng", "--cpu", str(cpus)], log_dir / "stress-ng.log")


def run(configs: list[str], rounds: int, busy_cpus: int, out: Path) -> list[dict]:
    logging.getLogger("pattern_runtime.launcher").setLevel(logging.CRITICAL)  # each kill is a logged death
    rows = []
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in configs:
        what, settings = CONFIGS[name]
        started = time.monotonic()
        settings = dataclasses.replace(settings, restart_on_death=True, max_restarts=4 * rounds, log_dir=log_dir)
        with Stack(server=settings) as stack:
            server = stack.triton
            start_s = round(time.monotonic() - started, 1)
            models = len(server.start_models())
            for machine, cpus in (("quiet", 0), *([(f"stress-ng --cpu {busy_cpus}", busy_cpus)] if busy_cpus else [])):
                stress = busy(cpus, log_dir)
                try:
                    for round_no in range(1, rounds + 1):
                        row = {"config": name, "what": what, "models": models, "first_start_s": start_s,
                               "machine": machine, "round": round_no, **restart_once(server)}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                finally:
                    if stress is not None:
                        stress.terminate(timeout=10)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| config | models | stubs | machine | round | respawn s | answers after s | of which loading s | CPU s "
             "| load (1 min) |", "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {r['config']} | {r['models']} | {r['stubs']} | {r['machine']} | {r['round']} | {r['respawn_s']} | "
              f"{r['answers_s'] if r['answers_s'] is not None else 'never'} | {r['load_s']} | {r['cpu_s']} | "
              f"{r['load_1m']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.restart_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", choices=sorted(CONFIGS),
                   help="configuration to measure (repeatable, also twice to interleave; default: all, "
                        "all-4-threads, serve-default)")
    p.add_argument("--rounds", type=int, default=2, help="restarts per configuration and machine state")
    p.add_argument("--busy-cpus", type=int, default=2, help="stress-ng --cpu N for the busy rounds (0: none)")
    p.add_argument("--out", type=Path, default=paths.PROJECT_ROOT / "reports" / "restart")
    args = p.parse_args(argv)
    rows = run(args.config or ["all", "all-4-threads", "serve-default"], args.rounds, args.busy_cpus, args.out)
    text = table(rows)
    print(text)
    (args.out / "restart.json").write_text(json.dumps(rows, indent=1))
    (args.out / "restart.md").write_text(text + "\n")
    print(f"wrote {args.out / 'restart.json'} and restart.md")
    return 0 if all(r["answers_s"] is not None for r in rows) else 1


if __name__ == "__main__":
    run_script(main)
