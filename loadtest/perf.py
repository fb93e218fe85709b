"""perf_analyzer for every benchmarked pattern model: `--input-data` JSON files and `make perf`.

`write_inputs(folder)` writes `<model>.json` in perf_analyzer's format (`{"data": [{INPUT: [...]}]}`,
`{"b64": ...}` for BYTES tensors) from `pattern_tools.perf`, which also runs one model by hand
(`triton-patterns perf MODEL`, with the environment below set up).
`python -m loadtest.perf` starts tritonserver on free ports, runs tritonclient 2.51.0's
`bin/perf_analyzer` over gRPC at a concurrency range for each model (`--bls-composing-models` for
BLS models) and writes one CSV per model under `reports/perf/`. perf_analyzer needs Debian's
`libb64-0d` and `libcudart.so.12` from the `nvidia-cuda-runtime-cu12` wheel (docs/tuning.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import tempfile
import time
from pathlib import Path

from loadtest.script import run_script
from pattern_runtime import paths
from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_settings import ServerSettings
from pattern_tools.perf import QUICK, command, input_data, perf_analyzer_env

from .loadgen import CORES, Point, children_cpu_s

OUT_DIR = paths.REPORTS / "perf"
MODELS = ("iris", "heavy_mlp", "digits", "digits_bls", "digits_preprocess", "digits_classifier")


def inputs(samples: int = 8, models=MODELS) -> dict[str, dict]:
    """perf_analyzer input data per model (rows without the batch dimension)."""
    return {model: input_data(model, samples) for model in models}


def write_inputs(folder: Path, models=MODELS) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for model, data in inputs(models=models).items():
        written[model] = folder / f"{model}.json"
        written[model].write_text(json.dumps(data))
    return written


def perf_analyzer_command(model: str, url: str, input_file: Path, csv: Path, concurrency: str,
                          interval_ms: int, quick: bool = False) -> list[str]:
    """`quick`: what 3 windows measured, stable or not (pattern_tools.perf.QUICK), for smoke runs."""
    settle = QUICK if quick else ["--measurement-interval", str(interval_ms),
                                  "--stability-percentage", "100",
                                  "--max-trials", "6"]  # a shared machine: max/min <= 2x
    return command(model, url, input_file, extra=["--concurrency-range", concurrency, "-f", str(csv), *settle])


def perf_analyzer_point(setup: str, model: str, url: str, input_file: Path, concurrency: int,
                        seconds: float, quick: bool = False) -> Point:
    """One perf_analyzer measurement at `concurrency` (its own warm-up and stability trials; `quick`:
    none) as a Point, for the benchmark's cross-check: infer/s and its p50/p90/p99 (client-side, usec in CSV)."""
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        csv_path = Path(tmp) / "out.csv"
        before, started = children_cpu_s(), time.perf_counter()
        done = subprocess.run(perf_analyzer_command(model, url, input_file, csv_path, f"{concurrency}:{concurrency}",
                                                    max(500, int(seconds * 1000)), quick),
                              env=perf_analyzer_env(), text=True, capture_output=True, timeout=120 + 10 * seconds)
        wall, cpu = time.perf_counter() - started, children_cpu_s() - before
        if done.returncode != 0 or not csv_path.exists():
            raise RuntimeError(f"perf_analyzer failed on {model}: {(done.stdout + done.stderr)[-800:]}")
        row = next(csv.DictReader(csv_path.open()))
    rate = float(row["Inferences/Second"])
    return Point(setup, concurrency, 1, int(rate * seconds), 0, seconds, rate,
                 *(float(row[f"p{q} latency"]) / 1e3 for q in (50, 90, 99)), cpu / (wall * CORES))


def run(models=MODELS, concurrency: str = "1:8:7", interval_ms: int = 2000, out: Path = OUT_DIR) -> dict[str, Path]:
    """perf_analyzer over each model against a fresh tritonserver; returns the CSV per model."""
    files = write_inputs(out / "inputs", models)
    csvs = {}
    with TritonServer(ServerSettings(log_dir=out / "logs")) as server:
        for model in models:
            csv = out / f"{model}.csv"
            done = subprocess.run(perf_analyzer_command(model, server.grpc_url, files[model], csv, concurrency,
                                                        interval_ms), env=perf_analyzer_env(), text=True,
                                  capture_output=True, timeout=600)
            (out / f"{model}.log").write_text(done.stdout + done.stderr)
            if done.returncode != 0:
                raise RuntimeError(f"perf_analyzer failed on {model}:\n{(done.stdout + done.stderr)[-2000:]}")
            csvs[model] = csv
            print(f"{model}: {csv}")
    return csvs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--concurrency-range", default="1:8:7")
    parser.add_argument("--measurement-interval", type=int, default=2000, help="ms")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    run(args.models.split(","), args.concurrency_range, args.measurement_interval, args.out)
    return 0


if __name__ == "__main__":
    run_script(main)
