"""The batch job's rows/s through Triton against in-process onnxruntime on the same rows.

`measure(grpc_url, rows)` seeds a temporary SQLite store with `rows` iris records (the held-out
rows repeated), then times two runs of the same job code (`batch_job.run_job`: select, chunks
with bounded concurrency, prediction + status written per chunk in one transaction):
  triton        predictions from the server at `grpc_url` (the model's latest ready version)
  onnxruntime   predictions from an in-process onnxruntime session on the same version's
                model.onnx (1 intra-op thread, as the served model), same chunks
and, for scale, in-process onnxruntime over the same rows with no store at all. Each rate
counts the job's own time (from the selected rows to the last commit).

    python -m loadtest.batch_bench --url 127.0.0.1:8001 [--rows 4500]
    python -m loadtest.batch_bench                      # starts tritonserver + Redis itself
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from sqlalchemy import select

from loadtest.script import run_script
from pattern_jobs import batch_store as store
from pattern_jobs.batch_job import Target, grpc_server, run, run_job
from pattern_runtime.datasets.iris import LABELS
from pattern_runtime.paths import MODEL_REPOSITORY
from triton_patterns.client import Prediction


@dataclass(frozen=True)
class BatchBench:
    rows: int
    version: str
    chunk_size: int
    concurrency: int
    triton_rows_per_s: float
    onnxruntime_rows_per_s: float  # the same job with in-process predictions
    inference_only_rows_per_s: float  # in-process onnxruntime alone, no store
    agree: bool = True  # every record got the same class from Triton as from in-process onnxruntime

    @property
    def ratio(self) -> float:
        """Triton's rate over in-process onnxruntime's, for the same job."""
        return self.triton_rows_per_s / self.onnxruntime_rows_per_s


def iris_session(version: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    path = MODEL_REPOSITORY / "iris" / version / "model.onnx"
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def in_process(session: ort.InferenceSession, version: str):
    """A `batch_job.Predict` over an in-process session: the same Predictions the SDK returns."""

    async def predict(payloads: list[Any]) -> list[Prediction]:
        class_ids, probabilities = session.run(["LABEL", "PROBABILITIES"],
                                               {"FEATURES": np.asarray(payloads, dtype=np.float32)})
        return [Prediction("iris", version, LABELS[int(c)], int(c), p, 0.0)
                for c, p in zip(class_ids, probabilities, strict=True)]

    return predict


def measure(grpc_url: str, rows: int = 4500, chunk_size: int = 64, concurrency: int = 4) -> BatchBench:
    """Time the batch job over `rows` records through Triton and in process (see the module doc)."""
    options = {"chunk_size": chunk_size, "concurrency": concurrency, "limit": rows, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'batch_bench.sqlite'}"
        engine = store.connect(url)
        store.seed(engine, "iris", repeat=math.ceil(rows / 45))
        through_triton = asyncio.run(run(grpc_url, url, "iris", **options))
        session = iris_session(through_triton.version)
        local = asyncio.run(run_job(engine, in_process(session, through_triton.version),
                                    Target("iris (in-process)", through_triton.version, "iris"), **options))
        with engine.connect() as conn:
            payloads = conn.scalars(select(store.records.c.payload).order_by(store.records.c.id).limit(rows)).all()
            p = store.predictions.c
            by_model: dict[str, dict[int, int]] = {}
            for model, record_id, class_id in conn.execute(select(p.model, p.record_id, p.class_id)):
                by_model.setdefault(model, {})[record_id] = class_id
        engine.dispose()
    features = np.asarray(payloads, dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, len(features), chunk_size):
        session.run(["LABEL", "PROBABILITIES"], {"FEATURES": features[i:i + chunk_size]})
    inference_only = len(features) / (time.perf_counter() - start)
    assert through_triton.predicted == local.predicted == rows, (through_triton, local)
    return BatchBench(rows, through_triton.version, chunk_size, concurrency,
                      through_triton.rows_per_s, local.rows_per_s, inference_only,
                      by_model.get("iris") == by_model.get("iris (in-process)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="gRPC address; default: start tritonserver and Redis")
    parser.add_argument("--rows", type=int, default=4500)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    with grpc_server(args.url) as url:
        result = measure(url, args.rows, args.chunk_size, args.concurrency)
    print(f"batch job over {result.rows} iris rows (v{result.version}), chunks of {result.chunk_size}, "
          f"{result.concurrency} in flight, SQLite store")
    print(f"{'setup':<44} {'rows/s':>10}")
    for name, rate in (("batch job through Triton (gRPC)", result.triton_rows_per_s),
                       ("batch job, in-process onnxruntime", result.onnxruntime_rows_per_s),
                       ("in-process onnxruntime alone (no store)", result.inference_only_rows_per_s)):
        print(f"{name:<44} {rate:>10.0f}")
    print(f"Triton / in-process, same job: {result.ratio:.2f}")
    return 0


if __name__ == "__main__":
    run_script(main)
