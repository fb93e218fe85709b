"""perf_analyzer for every benchmarked pattern model: `--input-data` JSON files and `make perf`.

`write_inputs(folder)` writes `<model>.json` in perf_analyzer's format (`{"data": [{INPUT: [...]}]}`,
`{"b64": ...}` for BYTES tensors, each element with its 4-byte little-endian length prefix).
`python -m loadtest.perf` starts tritonserver on free ports, runs tritonclient 2.51.0's
`bin/perf_analyzer` over gRPC at a concurrency range for each model (`--bls-composing-models` for
BLS models) and writes one CSV per model under `reports/perf/`. perf_analyzer needs Debian's
`libb64-0d` and `libcudart.so.12` from the `nvidia-cuda-runtime-cu12` wheel (DESIGN section 7).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from triton_patterns import paths
from triton_patterns.launcher import TritonServer

from .loadgen import CORES, Point, children_cpu_s

OUT_DIR = paths.REPORTS / "perf"
BLS_COMPOSING = {"digits_bls": "digits_preprocess,digits_classifier"}
MODELS = ("iris", "heavy_mlp", "digits", "digits_bls", "digits_preprocess", "digits_classifier")


def _bytes_tensor(items: list[bytes]) -> dict:
    return {"b64": base64.b64encode(b"".join(struct.pack("<I", len(i)) + i for i in items)).decode()}


def inputs(samples: int = 8) -> dict[str, dict]:
    """perf_analyzer input data per model (rows without the batch dimension)."""
    from export import digits as digits_export
    from export import iris as iris_export

    iris = iris_export.load_split()[1][:samples].astype(np.float32)
    heavy = np.random.default_rng(0).standard_normal((samples, 512)).astype(np.float32)
    pixels = digits_export.load_test_split()[0][:samples].astype(np.float32)
    pngs = [digits_export.encode_digit_png(x) for x in pixels]
    images = {"data": [{"IMAGE": _bytes_tensor([png])} for png in pngs]}
    return {
        "iris": {"data": [{"FEATURES": row.tolist()} for row in iris]},
        "heavy_mlp": {"data": [{"INPUT": row.tolist()} for row in heavy]},
        "digits": images, "digits_bls": images, "digits_preprocess": images,
        "digits_classifier": {"data": [{"PIXELS": row.tolist()} for row in pixels]},
    }


def write_inputs(folder: Path, models=MODELS) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for model, data in inputs().items():
        if model in models:
            written[model] = folder / f"{model}.json"
            written[model].write_text(json.dumps(data))
    return written


def perf_analyzer_env() -> dict[str, str]:
    import nvidia.cuda_runtime

    lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))}


def perf_analyzer_command(model: str, url: str, input_file: Path, csv: Path, concurrency: str,
                          interval_ms: int) -> list[str]:
    command = [str(Path(sys.executable).parent / "perf_analyzer"), "-m", model, "-u", url, "-i", "grpc",
               "--concurrency-range", concurrency, "--input-data", str(input_file), "-f", str(csv),
               "--measurement-interval", str(interval_ms), "--stability-percentage", "100", "--max-trials", "6"]  # a shared machine: max/min <= 2x
    if model in BLS_COMPOSING:
        command += ["--bls-composing-models", BLS_COMPOSING[model]]
    return command


def perf_analyzer_point(setup: str, model: str, url: str, input_file: Path, concurrency: int,
                        seconds: float) -> Point:
    """One perf_analyzer measurement at `concurrency` (its own warm-up and stability trials) as a
    Point, for the benchmark's cross-check: infer/s and its p50/p90/p99 (client-side, usec in CSV)."""
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        csv_path = Path(tmp) / "out.csv"
        before, started = children_cpu_s(), time.perf_counter()
        done = subprocess.run(perf_analyzer_command(model, url, input_file, csv_path, f"{concurrency}:{concurrency}",
                                                    max(500, int(seconds * 1000))),
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
    with TritonServer(log_dir=out / "logs") as server:
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
    sys.exit(main())
