"""Triton Model Analyzer on one model of the repository: `make tune MODEL=name`, `triton-patterns tune`.

Why not against `make serve`: model-analyzer loads its variants of a model through the repository
API, and the ensembles and BLS models of the full repository that contain the model pin it (an
ensemble refuses a member whose max_batch_size is below its own, so every variant fails). So the
model is tuned on its own server:

1. a temporary repository `<out>/repository` holds only the model and the models it calls
   (ensemble steps, BLS parameters: `repo_check`'s reference graph), as symlinks to the real folders;
2. tritonserver 2.51 (the project's launcher) serves it on free ports of 127.0.0.1, in explicit
   model-control mode with no model loaded and the admin APIs open (loopback only), since
   model-analyzer sends no custom headers;
3. model-analyzer 1.58 runs in remote mode from a virtualenv of its own (`build/model-analyzer-venv`,
   created on first use: it needs tritonclient 2.73, the project pins 2.51), with perf_analyzer
   2.51 from the project's virtualenv, the models it calls as CPU-only composing models (BLS models
   name them as `bls_composing_models`), and sample input data from `pattern_tools.perf`;
4. `<out>` then holds model-analyzer's results (`results/*.csv`), its reports
   (`reports/summaries/<model>/result_summary.html`, `reports/detailed/`), its config
   (`model-analyzer.yaml`) and log, the server's log, `best_config/<model>/config.pbtxt` (with the
   composing models' configs for an ensemble or BLS model) and `summary.json` (the measurements,
   best first).

What is searched: `analyzer_config`. docs/tuning.md has a run of each model kind.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pattern_runtime import paths

# the launcher, repo_check and perf are imported where used: `triton-patterns --help` stays quick

MODEL_ANALYZER_VERSION = "1.58.0"
# model-analyzer and everything it pulls, pinned (it needs tritonclient 2.73, the project pins 2.51)
MODEL_ANALYZER_REQUIREMENTS = paths.PROJECT_ROOT / "requirements-model-analyzer.txt"
MODEL_ANALYZER_VENV = paths.BUILD / "model-analyzer-venv"
OUT_DIR = paths.REPORTS / "tune"


class TuneError(RuntimeError):
    """What is wrong, said so a user can act on it."""


def model_analyzer(venv: Path = MODEL_ANALYZER_VENV, requirements: Path = MODEL_ANALYZER_REQUIREMENTS) -> Path:
    """`venv/bin/model-analyzer`, installing `requirements` there first if they changed since."""
    exe = venv / "bin" / "model-analyzer"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    stamp = venv / f".installed-{digest}"
    if exe.is_file() and stamp.is_file():
        return exe
    print(f"installing triton-model-analyzer=={MODEL_ANALYZER_VERSION} ({requirements.name}) into {venv} (its own "
          "virtualenv: it needs a newer tritonclient than the project's) ...", flush=True)
    if not (venv / "bin" / "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
                          text=True, capture_output=True)
    if done.returncode != 0 or not exe.is_file():
        raise TuneError(f"could not install {requirements.name} into {venv}:\n{done.stderr[-2000:]}")
    for old in venv.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return exe


def model_kind(model, calls: list[str]) -> str:
    """"ensemble", "bls" (a Python-based model that calls others: `calls`) or "plain"."""
    if model.config.platform == "ensemble":
        return "ensemble"
    return "bls" if calls else "plain"


def tune_repository(source: Path, model: str, target: Path) -> tuple[object, list[str]]:
    """Make `target` a repository of `model` and every model it calls (symlinks into `source`);
    returns the model (`repo_check.Model`) and the names of those it calls. TuneError if `model`
    is not in `source` or calls a model it does not have."""
    from pattern_tools.repo_check import check_repository

    report = check_repository(source, backends=None, files=False)
    if model not in report.models:
        raise TuneError(f"model {model!r} is not in {source} (models: {', '.join(sorted(report.models))})")
    needed = report.dependencies(model)
    missing = [name for name in needed if name not in report.models]
    if missing:
        raise TuneError(f"{model} calls {', '.join(missing)}, which {source} does not have")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in [model, *needed]:
        (target / name).symlink_to(report.models[name].folder)
    return report.models[model], needed


def analyzer_config(model: str, kind: str, composing: list[str], server, out: Path, input_file: Path,
                    concurrency: list[int], measurement_ms: int, search: bool = False, max_instances: int = 2,
                    max_batch_size: int = 16, latency_budget_ms: int | None = None) -> dict:
    """model-analyzer's profile config (YAML is a superset of JSON) for a remote-mode run.

    A plain model: its served config at each of `concurrency`, or with `search` model-analyzer's
    brute search over instance counts up to `max_instances`, max_batch_size up to `max_batch_size`
    and dynamic batching. An ensemble or a BLS model: model-analyzer always runs its quick search
    over the model and its composing models then; it is bounded by the same limits and by the
    smallest and largest of `concurrency`, and the concurrency sweep of its top configs is off."""
    config = {
        "model_repository": str(server.model_repository),
        # the embedded runtime serves the project's ONNX and pattern backends on CPU: no KIND_GPU variant
        # (on a CPU-only host its load fails, and 2.51 never frees the failed model: launcher.stop())
        "profile_models": {model: {"cpu_only": True}},
        "triton_launch_mode": "remote",
        "triton_http_endpoint": server.http_url,
        "triton_grpc_endpoint": server.grpc_url,
        "triton_metrics_url": server.metrics_url,
        "client_protocol": "grpc",
        "perf_analyzer_path": str(Path(sys.executable).parent / "perf_analyzer"),  # tritonclient 2.51's
        "perf_analyzer_flags": {"input-data": str(input_file), "measurement-interval": measurement_ms},
        "perf_output": True,
        "perf_output_path": str(out / "perf_analyzer.log"),
        "batch_sizes": [1],
        "export_path": str(out),
        "output_model_repository_path": str(out / "output_model_repository"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(out / "checkpoints"),
        "gpus": [],
        "dcgm_disable": True,
        "collect_cpu_metrics": True,
        "run_config_search_max_instance_count": max_instances,
        "run_config_search_max_model_batch_size": max_batch_size,
    }
    if kind == "plain" and not search:
        config.update(run_config_search_disable=True, concurrency=concurrency)
    elif kind == "plain":
        config.update(concurrency=concurrency)
    else:
        config.update(run_config_search_min_concurrency=min(concurrency),
                      run_config_search_max_concurrency=max(concurrency), concurrency_sweep_disable=True,
                      cpu_only_composing_models=composing)
    if kind == "bls":
        config["bls_composing_models"] = composing
    if latency_budget_ms:
        config["latency_budget"] = latency_budget_ms  # p99, ms: configs above it do not satisfy the constraints
    return config


def read_measurements(out: Path) -> list[dict]:
    """model-analyzer's `results/metrics-model-inference.csv` rows, those within the constraints
    (`--latency-budget-ms`) first, then by throughput, highest first."""
    path = out / "results" / "metrics-model-inference.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        rows = [{k.strip(): v.strip() for k, v in row.items() if k} for row in csv.DictReader(f)]

    def throughput(row: dict) -> float:
        key = next((k for k in row if k.startswith("Throughput")), None)
        try:
            return float(row[key]) if key else 0.0
        except ValueError:
            return 0.0

    return sorted(rows, key=lambda row: (row.get("Satisfies Constraints", "Yes") == "Yes", throughput(row)),
                  reverse=True)


def best_config(out: Path, measurements: list[dict]) -> Path | None:
    """The configs of the best measurement (the model's, and for an ensemble or BLS model its
    composing models') as `<out>/best_config/<model>/config.pbtxt`: a repository overlay to diff
    against, or copy over, model_repository/. Returns that folder (None without a measurement)."""
    if not measurements:
        return None
    cell = measurements[0].get("Model Config Path", "")  # "digits_config_2: digits_preprocess_config_0, ..."
    variants = [v.strip() for v in cell.replace(":", ",").split(",") if v.strip()]
    target = out / "best_config"
    for variant in variants:
        source = out / "output_model_repository" / variant / "config.pbtxt"
        if not source.is_file():
            raise TuneError(f"model-analyzer names config {variant!r}, but {source} does not exist")
        name = re.search(r'^name: "([^"]+)"', source.read_text(), re.M)
        folder = target / (name.group(1) if name else variant)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / "config.pbtxt")
    return target if variants else None


def tune(model: str, out: Path | None = None, repository: Path = paths.MODEL_REPOSITORY,
         concurrency: list[int] = (1, 4), measurement_ms: int = 1000, search: bool = False, max_instances: int = 2,
         max_batch_size: int = 16, latency_budget_ms: int | None = None, samples: int = 8,
         timeout_s: float = 3600.0) -> dict:
    """Run model-analyzer on `model` (module docstring, `analyzer_config`); returns the summary
    written to summary.json."""
    from pattern_runtime.launcher import TritonServer
    from pattern_runtime.processes import ManagedProcess
    from pattern_runtime.server_settings import ServerSettings
    from pattern_tools import perf

    out = (out or OUT_DIR / model).resolve()
    if out.exists():  # model-analyzer would mix runs (checkpoints, output repository): start afresh
        if any(out.iterdir()) and not (out / "model-analyzer.yaml").is_file():
            raise TuneError(f"{out} holds other files than an earlier tune run's: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    exe = model_analyzer()
    spec, needed = tune_repository(Path(repository).resolve(), model, out / "repository")
    kind = model_kind(spec, needed)
    print(f"{model}: {kind} model, calls {', '.join(needed) or 'no other model'}", flush=True)
    input_file = out / "input_data.json"  # real rows: random bytes are no PNG and no text
    input_file.write_text(json.dumps(perf.input_data(model, samples, perf.model_config(model, out / "repository"))))

    started = time.monotonic()
    log_file = out / "model-analyzer.log"
    with TritonServer(ServerSettings(model_repository=out / "repository", load_models=[], restrict_admin_apis=False,
                      log_dir=out / "logs")) as server:
        config = analyzer_config(model, kind, needed, server, out, input_file, list(concurrency), measurement_ms,
                                 search, max_instances, max_batch_size, latency_budget_ms)
        config_file = out / "model-analyzer.yaml"
        config_file.write_text(json.dumps(config, indent=2))
        print(f"model-analyzer profile against tritonserver {server.grpc_url} (progress: {log_file}) ...", flush=True)
        analyzer = ManagedProcess([exe, "profile", "-f", config_file], log_file, env=perf.perf_analyzer_env(), cwd=out)
        try:
            returncode = _follow(analyzer, log_file, timeout_s)
        finally:
            analyzer.terminate(10)  # a no-op once it has exited; else (timeout, Ctrl-C) its group goes too
    measurements = read_measurements(out)
    if returncode != 0 or not measurements:
        tail = "\n".join(log_file.read_text().splitlines()[-30:])
        ended = "timed out" if returncode is None else f"exit {returncode}"
        raise TuneError(f"model-analyzer profile on {model} failed ({ended}, "
                        f"{len(measurements)} measurements); last lines of {log_file}:\n{tail}")
    best = best_config(out, measurements)
    summary = {"model": model, "kind": kind, "composing_models": needed,
               "seconds": round(time.monotonic() - started, 1),
               "best_config": str(best) if best else None, "measurements": measurements,
               "reports": sorted(str(p.relative_to(out)) for p in (out / "reports").rglob("*") if p.is_file())}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _follow(proc, log_file: Path, timeout_s: float) -> int | None:
    """Wait for model-analyzer, printing its progress lines ("Profiling ...", "Creating model config")."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    while True:
        returncode = proc.wait(2.0)
        lines = log_file.read_text(errors="replace").splitlines()
        for line in lines[seen:]:
            if any(key in line for key in ("Profiling ", "Creating ", "Profile complete")):
                print("  " + line.replace("[Model Analyzer] ", ""), flush=True)
        seen = len(lines)
        if returncode is not None or time.monotonic() > deadline:
            return returncode


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model of the repository, e.g. iris, digits, text_classify, iris_cascade")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: {OUT_DIR}/<model>)")
    p.add_argument("--repository", type=Path, default=paths.MODEL_REPOSITORY, help="default: %(default)s")
    p.add_argument("--concurrency", default="1,4",
                   help="client concurrencies (ensembles, BLS: the search's bounds; default %(default)s)")
    p.add_argument("--measurement-ms", type=int, default=1000, help="perf_analyzer window (default %(default)s)")
    p.add_argument("--search", action="store_true",
                   help="a plain model: search instance counts, batch sizes, dynamic batching (ensembles and BLS "
                        "models are always searched)")
    p.add_argument("--max-instances", type=int, default=2, help="search bound (default %(default)s)")
    p.add_argument("--max-batch-size", type=int, default=16, help="search bound (default %(default)s)")
    p.add_argument("--latency-budget-ms", type=int, default=None,
                   help="p99 latency budget: the best config is the fastest within it")


def main(args: argparse.Namespace) -> int:
    try:
        concurrency = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise SystemExit(f"--concurrency: expected comma-separated integers, got {args.concurrency!r}") from None
    try:
        summary = tune(args.model, args.out, args.repository, concurrency, args.measurement_ms, args.search,
                       args.max_instances, args.max_batch_size, args.latency_budget_ms)
    except TuneError as err:
        print(f"tune: {err}", file=sys.stderr)
        return 1
    for row in summary["measurements"]:
        print("  " + ", ".join(f"{k}: {v}" for k, v in row.items()))
    out = Path(summary["best_config"]).parent
    print(f"best config: {summary['best_config']} (diff -r it against {args.repository}); "
          f"report: {out / 'reports' / 'summaries' / args.model / 'result_summary.html'}; all: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pattern_tools.tune", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
