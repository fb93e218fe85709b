"""perf_analyzer made runnable: valid input data for every model, its runtime libraries, one command.

    triton-patterns perf iris                                # gRPC, concurrency 1
    triton-patterns perf digits --concurrency-range 1:4:3    # any further perf_analyzer arguments
    triton-patterns perf --quick digits                      # what it measured, stable or not

perf_analyzer is the binary that the `tritonclient==2.51.0` manylinux wheel installs into the
virtualenv. It needs Debian's `libb64-0d` and `libcudart.so.12`, which the
`nvidia-cuda-runtime-cu12` wheel carries: `perf_analyzer_env()` puts that wheel's `lib` on
LD_LIBRARY_PATH. Image and text models need `--input-data` (random bytes are no PNG and no
text): `sample_requests(model)` builds valid requests for every model of the repository from its
config (held-out iris rows and digits, the demo's texts), and `input_data()` writes them in
perf_analyzer's JSON format (`{"b64": ...}` for BYTES, each element with its 4-byte little-endian
length prefix). The load tests (`loadtest/perf.py`) and the KServe SDK test use the same samples.

perf_analyzer reports a concurrency level only once its last 3 measurement windows agree (within
`--stability-percentage`, 10 % by default) and fails after `--max-trials` (10) windows that do
not, which on a busy machine they may never do. `--quick` (`QUICK`) reports what 3 windows of at
least 20 requests each measured, whatever their spread: for smoke runs, not for figures.
"""

from __future__ import annotations

import argparse
import base64
import ctypes.util
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pattern_runtime import paths
from triton_patterns.endpoints import server_url

NUMPY = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_STRING": np.object_}
WIRE = {"TYPE_FP32": "FP32", "TYPE_INT64": "INT64", "TYPE_INT32": "INT32", "TYPE_STRING": "BYTES"}
# "[CLS] heavy rain expected tonight [SEP]" in all-MiniLM-L6-v2's vocabulary: text_encoder's own input
TOKEN_IDS = [101, 3082, 4542, 3517, 3892, 102]
# the composing models of BLS models, so that perf_analyzer reports their share of the time
BLS_COMPOSING = {"digits_bls": "digits_preprocess,digits_classifier"}
# perf_analyzer options that report 3 windows of >= 20 requests each, whatever their spread: any
# ratio passes a ±1000 % stability check, and a window never ends empty on a slow machine
QUICK = ["--measurement-mode", "count_windows", "--measurement-request-count", "20",
         "--stability-percentage", "1000", "--max-trials", "3"]


def model_config(model: str, repository: Path | None = None) -> dict:
    """A model's config.pbtxt as the dict Triton's config endpoint returns (proto field names)."""
    from google.protobuf.json_format import MessageToDict

    from pattern_tools.repo_check import load_config

    repositories = [repository] if repository else paths.MODEL_REPOSITORIES
    path = paths.model_folder(model, repositories) / "config.pbtxt"
    if not path.is_file():
        raise ValueError(f"no model {model!r} in {', '.join(map(str, repositories))} (expected {path})")
    return MessageToDict(load_config(path), preserving_proto_field_name=True)


def _values(name: str, count: int, model: str) -> list:
    """`count` valid values of input `name`, one per request (a row, an encoded image, a text...)."""
    from pattern_runtime.datasets import digits as digits_export
    from pattern_runtime.datasets import iris as iris_export
    from pattern_tools.demo import TEXT_SAMPLES

    if name == "FEATURES":
        return list(iris_export.load_split()[1][:count].astype(np.float32))
    if name in ("IMAGE", "PIXELS"):
        pixels = digits_export.load_test_split()[0][:count]
        if name == "PIXELS":
            return list(pixels.astype(np.float32))
        return [digits_export.encode_digit_png(p) for p in pixels]
    if name == "TEXT":
        return [TEXT_SAMPLES[i % len(TEXT_SAMPLES)][0].encode() for i in range(count)]
    if name == "ID":  # records that `serve` seeds into the data store
        return [f"digit-{i}".encode() for i in range(count)]
    if name == "INPUT":
        return list(np.random.default_rng(0).standard_normal((count, 512)).astype(np.float32))
    if name.startswith("SCORES_"):
        return [np.array([0.1, 0.2, 0.7], np.float32)] * count
    if name == "EMBEDDING":
        unit = np.random.default_rng(0).standard_normal((count, 384)).astype(np.float32)
        return list(unit / np.linalg.norm(unit, axis=1, keepdims=True))
    if name == "input_ids":
        return [np.array(TOKEN_IDS, np.int64)] * count
    if name == "attention_mask":
        return [np.ones(len(TOKEN_IDS), np.int64)] * count
    raise ValueError(f"{model}: no sample data for input {name!r} (a job id, or an input this module does not "
                     f"know: pass your own --input-data)")


def sample_requests(model: str, count: int = 8, config: dict | None = None) -> list[dict[str, np.ndarray]]:
    """`count` valid requests for `model`: {input name: array in the model's full shape, batch 1}."""
    config = config or model_config(model)
    batching = int(config.get("max_batch_size", 0)) > 0
    requests: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
    for spec in config.get("input", []):
        if spec.get("optional"):
            continue
        dtype = NUMPY[spec["data_type"]]
        for request, value in zip(requests, _values(spec["name"], count, model), strict=True):
            array = np.array([value], dtype=dtype) if dtype is np.object_ else np.asarray(value, dtype)
            dims = [int(d) for d in spec.get("dims", [])]
            shape = [d if d != -1 else (1 if i < len(dims) - 1 else array.size) for i, d in enumerate(dims)]
            request[spec["name"]] = array.reshape(([1] if batching else []) + shape)
    return requests


def datatype(model: str, name: str, config: dict | None = None) -> str:
    """The KServe datatype of input `name` ("FP32", "BYTES", ...)."""
    config = config or model_config(model)
    return next(WIRE[s["data_type"]] for s in config["input"] if s["name"] == name)


def _bytes_tensor(items) -> dict:
    return {"b64": base64.b64encode(b"".join(struct.pack("<I", len(i)) + bytes(i) for i in items)).decode()}


def input_data(model: str, count: int = 8, config: dict | None = None) -> dict:
    """perf_analyzer's `--input-data` JSON for `model`: rows without the batch dimension, with their
    shape where the config leaves a dimension variable."""
    config = config or model_config(model)
    batching = int(config.get("max_batch_size", 0)) > 0
    variable = {s["name"] for s in config.get("input", []) if -1 in [int(d) for d in s.get("dims", [])]}
    rows = []
    for request in sample_requests(model, count, config):
        row = {}
        for name, array in request.items():
            array = array[0] if batching else array
            content = _bytes_tensor(array.reshape(-1)) if array.dtype == object else array.reshape(-1).tolist()
            row[name] = {"content": content, "shape": list(array.shape)} if name in variable else content
        rows.append(row)
    return {"data": rows}


def perf_analyzer_binary() -> Path:
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.is_file():
        raise SystemExit(f"perf_analyzer not found at {binary}: it comes with the tritonclient==2.51.0 wheel "
                         f"(pip install -r requirements.txt)")
    return binary


def perf_analyzer_env() -> dict[str, str]:
    """This environment with the CUDA runtime wheel's lib first on LD_LIBRARY_PATH (libcudart.so.12);
    exits naming the missing piece when that wheel or Debian's libb64 is absent."""
    try:
        import nvidia.cuda_runtime
    except ImportError:
        raise SystemExit("perf_analyzer needs libcudart.so.12: pip install nvidia-cuda-runtime-cu12") from None
    if ctypes.util.find_library("b64") is None:
        raise SystemExit("perf_analyzer needs libb64.so.0d: apt-get install libb64-0d")
    lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    return {**os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))}


def command(model: str, url: str, input_file: Path, protocol: str = "grpc", extra: list[str] = (),
            config: dict | None = None) -> list[str]:
    """The perf_analyzer command line for `model` (decoupled models are measured over a gRPC stream)."""
    config = config or model_config(model)
    args = [str(perf_analyzer_binary()), "-m", model, "-u", url, "-i", protocol, "--input-data", str(input_file)]
    if config.get("model_transaction_policy", {}).get("decoupled"):
        args.append("--streaming")
    if model in BLS_COMPOSING and "--bls-composing-models" not in extra:
        args += ["--bls-composing-models", BLS_COMPOSING[model]]
    return args + list(extra)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model of the repository, e.g. iris, digits, text_classify")
    p.add_argument("--url", default=None,
                   help="server address (default $TRITON_PATTERNS_GRPC_URL or 127.0.0.1:8001; "
                        "with --protocol http: $TRITON_PATTERNS_URL or 127.0.0.1:8000)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--samples", type=int, default=8, help="distinct requests in the input data")
    p.add_argument("--quick", action="store_true",
                   help="(before MODEL) report what 3 windows of 20 requests measured, without waiting for stable ones "
                        "(a smoke run; perf_analyzer's own --stability-percentage check otherwise)")
    p.add_argument("perf_args", nargs=argparse.REMAINDER,
                   help="further perf_analyzer arguments, e.g. --concurrency-range 1:4:3 -f out.csv")


def main(args) -> int:
    config = model_config(args.model)
    try:
        data = input_data(args.model, args.samples, config)
    except ValueError as exc:
        raise SystemExit(f"perf: {exc}") from None
    env = perf_analyzer_env()
    url = args.url or server_url(args.protocol)
    with tempfile.TemporaryDirectory(prefix="triton-patterns-perf-") as tmp:
        input_file = Path(tmp) / f"{args.model}.json"
        input_file.write_text(json.dumps(data))
        extra = (QUICK if args.quick else []) + list(args.perf_args)
        argv = command(args.model, url, input_file, args.protocol, extra, config)
        print("$ " + " ".join(argv), flush=True)
        return subprocess.run(argv, env=env).returncode
