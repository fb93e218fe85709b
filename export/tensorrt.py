"""TensorRT engines from the exported ONNX models, for GPU hosts (`python -m export.tensorrt`).

For each ONNX model of the repository (platform onnxruntime_onnx) and each precision (FP16;
INT8 where a calibration set exists), this builds a TensorRT engine with the `tensorrt` Python
package, with one optimisation profile derived from the model's config: the batch dimension from
1 to `max_batch_size` (optimal: the largest preferred batch size, else `max_batch_size`), every
variable dimension from 1 to its bound (the text encoder's sequence: the tokenizer's max_length),
and writes a GPU variant of the model, `<model>_trt_<precision>/config.pbtxt` (platform
`tensorrt_plan`, KIND_GPU, the same inputs and outputs) + `1/model.plan` + `1/manifest.json`
+ the source's labels file, into a separate repository (default `build/tensorrt/model_repository`, to serve with an NGC
image on a GPU host; the embedded runtime has no TensorRT backend). Each engine is checked
against the ONNX model (onnxruntime, CPU) on the same inputs.

Models whose graphs use operators TensorRT does not implement (scikit-learn's ONNX-ML
operators: Scaler, LinearClassifier, TreeEnsembleClassifier...) are listed and skipped. Without
the `tensorrt` package or a CUDA GPU the script prints its plan, says why nothing was built, and
exits 0. The plan (configs, profiles, skips) is pure Python and unit-tested here.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import manifest as mf
from .report import format_table

PRECISIONS = ("fp16", "int8")
DEFAULT_OUTPUT = mf.REPO_ROOT / "build" / "tensorrt" / "model_repository"
# Bounds of a variable (-1) dimension other than the batch: (min, opt, max)
DEFAULT_VARIABLE_DIM = (1, 64, 256)
SEQUENCE_BOUND = {"text_encoder": ("text_tokenizer", "max_length")}  # model -> (config, parameter) bounding -1 dims
# Parity tolerances against the FP32 ONNX model (absolute, on every output element)
TOLERANCE = {"fp16": 2e-2, "int8": 1e-1}
ONNXRUNTIME_PARAMETERS = {"intra_op_thread_count", "inter_op_thread_count", "execution_mode"}
SUPPORTED_DOMAINS = {"", "ai.onnx"}
WORKSPACE_BYTES = 1 << 30


@dataclass
class Build:
    """One engine to build: source model, precision, profile, GPU config; or why not."""

    model: str
    precision: str
    onnx: Path
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    config: object = None  # model_config_pb2.ModelConfig of the GPU variant
    skip: str | None = None

    @property
    def name(self) -> str:
        return variant_name(self.model, self.precision)


def variant_name(model: str, precision: str) -> str:
    return f"{model}_trt_{precision}"


# ---------------------------------------------------------------- pure planning (tested here)


def optimal_batch(cfg) -> int:
    preferred = list(cfg.dynamic_batching.preferred_batch_size) if cfg.HasField("dynamic_batching") else []
    return max(preferred) if preferred else cfg.max_batch_size


def profile_shapes(cfg, variable_dim: tuple[int, int, int] = DEFAULT_VARIABLE_DIM) -> dict:
    """{input: (min shape, opt shape, max shape)} for one optimisation profile: with batching the
    leading batch dimension runs 1..max_batch_size (opt: `optimal_batch`); each -1 dimension runs
    over `variable_dim`; fixed dimensions stay. Inputs with a reshape use the reshaped dims (what
    the model receives)."""
    lo, opt, hi = variable_dim
    if not lo <= opt <= hi:
        raise ValueError(f"variable dimension bounds {variable_dim}: need min <= opt <= max")
    shapes = {}
    for t in cfg.input:
        dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
        mins, opts, maxs = [], [], []
        if cfg.max_batch_size > 0:
            mins.append(1)
            opts.append(optimal_batch(cfg))
            maxs.append(cfg.max_batch_size)
        for d in dims:
            mins.append(lo if d == -1 else d)
            opts.append(opt if d == -1 else d)
            maxs.append(hi if d == -1 else d)
        shapes[t.name] = (tuple(mins), tuple(opts), tuple(maxs))
    return shapes


def gpu_config(cfg, precision: str):
    """The GPU variant's config: platform tensorrt_plan, one KIND_GPU instance, the same inputs,
    outputs, batching and labels; the onnxruntime shim's parameters dropped."""
    from tritonclient.grpc import model_config_pb2 as mc

    out = mc.ModelConfig()
    out.CopyFrom(cfg)
    out.name = variant_name(cfg.name, precision)
    out.platform = "tensorrt_plan"
    out.ClearField("backend")
    out.ClearField("default_model_filename")
    out.ClearField("version_policy")  # one version: the engine
    del out.instance_group[:]
    out.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_GPU)
    for key in ONNXRUNTIME_PARAMETERS & set(out.parameters):
        del out.parameters[key]
    out.parameters["precision"].string_value = precision
    return out


def unsupported_ops(onnx_path: Path) -> list[str]:
    """Operators outside the standard ONNX domain (TensorRT's parser implements ai.onnx only)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return sorted({f"{n.op_type} ({n.domain})" for n in model.graph.node if n.domain not in SUPPORTED_DOMAINS})


def variable_bounds(repo: Path, model: str) -> tuple[int, int, int]:
    bound = SEQUENCE_BOUND.get(model)
    if bound is None:
        return DEFAULT_VARIABLE_DIM
    from pattern_tools.repo_check import load_config

    cfg = load_config(repo / bound[0] / "config.pbtxt")
    hi = int(cfg.parameters[bound[1]].string_value)
    return (1, min(DEFAULT_VARIABLE_DIM[1], hi), hi)


def calibration_available(model: str) -> bool:
    return model in CALIBRATION


def plan(repo: Path, only: list[str] | None = None, precisions=PRECISIONS) -> list[Build]:
    """Every (ONNX model, precision) of the repository and the test models' beside it, with its
    profile and GPU config, or the reason it is skipped (not exported, unsupported operators, no
    calibration set for INT8)."""
    from pattern_tools.repo_check import check_repository

    report = check_repository([r for r in (repo, mf.test_repository(repo)) if r.is_dir()], backends=None, files=False)
    builds = []
    for name, model in sorted(report.models.items()):
        if model.config.platform != "onnxruntime_onnx" or (only and name not in only):
            continue
        version = max(model.served) if model.served else 1
        onnx_path = model.folder / str(version) / (model.config.default_model_filename or "model.onnx")
        ops = unsupported_ops(onnx_path) if onnx_path.is_file() else []
        for precision in precisions:
            b = Build(name, precision, onnx_path)
            if not onnx_path.is_file():
                b.skip = f"{onnx_path.relative_to(repo.parent)} not exported (run `make models`)"
            elif ops:
                b.skip = "TensorRT has no " + ", ".join(ops)
            elif precision == "int8" and not calibration_available(name):
                b.skip = "no calibration set for INT8"
            else:
                b.profile = profile_shapes(model.config, variable_bounds(repo, name))
                b.config = gpu_config(model.config, precision)
            builds.append(b)
    return builds


def plan_rows(builds: list[Build]) -> list[list[str]]:
    def shape(s):
        return "x".join(map(str, s))

    rows = []
    for b in builds:
        profile = "; ".join(f"{k} {shape(lo)}..{shape(opt)}..{shape(hi)}" for k, (lo, opt, hi) in b.profile.items())
        rows.append([b.name, b.precision, "skip: " + b.skip if b.skip else "build", profile or "-"])
    return rows


# ---------------------------------------------------------------- calibration and sample inputs


def _digits_calibration(n: int) -> list[dict[str, np.ndarray]]:
    from pattern_runtime.datasets import digits as digits_data

    X_train = digits_data.split()[0][:n].astype(np.float32)
    return [{"PIXELS": X_train[i:i + 32]} for i in range(0, n, 32)]


def _text_calibration(n: int) -> list[dict[str, np.ndarray]]:
    from pattern_kernel.text import load_tokenizer, tokenize
    from pattern_runtime.datasets import text as text_data

    from . import text

    texts = [t for t, _ in text_data.generate_text_dataset(text.SEED)][:n]
    tok = load_tokenizer(mf.artifact_path(mf.DEFAULT_REPOSITORY, "text_tokenizer", 1, "tokenizer.json"))
    return [tokenize(tok, texts[i:i + 16]) for i in range(0, n, 16)]


# model -> batches of real inputs (training data, never the held-out split)
CALIBRATION = {"digits_classifier": _digits_calibration, "text_encoder": _text_calibration}


def sample_batches(b: Build) -> list[dict[str, np.ndarray]]:
    """Parity inputs: calibration-like real data where there is some, else seeded random rows at
    the profile's opt shape."""
    if b.model in CALIBRATION:
        return CALIBRATION[b.model](64)[:2]
    rng = np.random.default_rng(0)
    return [{name: rng.standard_normal(opt).astype(np.float32) for name, (_, opt, _) in b.profile.items()}]


# ---------------------------------------------------------------- building (GPU hosts only)


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why not): the `tensorrt` package imports and a CUDA device is visible."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "the `tensorrt` Python package is not installed (pip install tensorrt on a CUDA host)"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, f"tensorrt {trt.__version__} is installed but no CUDA GPU is visible"
    except ImportError:
        return False, "torch (used for device buffers) is not installed"
    return True, f"tensorrt {trt.__version__}, {torch.cuda.get_device_name(0)}"


class _Calibrator:  # built lazily: the base class exists only where tensorrt imports
    @staticmethod
    def make(batches: list[dict[str, np.ndarray]], cache: Path):
        import tensorrt as trt
        import torch

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                trt.IInt8EntropyCalibrator2.__init__(self)
                self.batches, self.kept = iter(batches), []

            def get_batch_size(self):
                return next(iter(batches[0].values())).shape[0]

            def get_batch(self, names):
                batch = next(self.batches, None)
                if batch is None:
                    return None
                self.kept = [torch.from_numpy(np.ascontiguousarray(batch[n])).cuda() for n in names]
                return [int(t.data_ptr()) for t in self.kept]

            def read_calibration_cache(self):
                return cache.read_bytes() if cache.is_file() else None

            def write_calibration_cache(self, data):
                cache.write_bytes(bytes(data))

        return Calibrator()


def build_engine(b: Build, cache_dir: Path) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (the only mode in TensorRT 10)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(b.onnx.read_bytes()):
        raise mf.ExportError(f"{b.name}: ONNX parse failed: " +
                             "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in b.profile.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for layers left unquantised
    if b.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_calibration_profile(profile)
        config.int8_calibrator = _Calibrator.make(CALIBRATION[b.model](512), cache_dir / f"{b.name}.calib")
    plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise mf.ExportError(f"{b.name}: TensorRT could not build the engine (see the log above)")
    return bytes(plan_bytes)


def run_engine(plan_bytes: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorrt as trt
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_bytes)
    context = engine.create_execution_context()
    keep, outputs = [], {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[name])).cuda()
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            dtype = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
            tensor = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            context.set_tensor_address(name, tensor.data_ptr())
            outputs[name] = tensor
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise mf.ExportError("TensorRT execution failed")
    stream.synchronize()
    return {name: t.cpu().numpy() for name, t in outputs.items()}


def parity(b: Build, plan_bytes: bytes) -> dict:
    sess = mf.ort_session(b.onnx.read_bytes())
    names = [o.name for o in sess.get_outputs()]
    checks = {}
    for batch in sample_batches(b):
        ref = dict(zip(names, sess.run(names, batch), strict=True))
        got = run_engine(plan_bytes, batch)
        for name in names:
            if ref[name].dtype.kind in "iu":  # class ids: compared exactly, as agreement
                checks.setdefault(name, []).append((got[name].reshape(ref[name].shape), ref[name], 0.0))
            else:
                checks.setdefault(name, []).append((got[name], ref[name], TOLERANCE[b.precision]))
    return mf.check_parity(b.name, {n: (np.concatenate([g for g, _, _ in v]), np.concatenate([r for _, r, _ in v]),
                                        v[0][2], 0.0) for n, v in checks.items()},
                           reference=f"onnxruntime CPU on {b.onnx.name}")


def copy_label_files(cfg, source: Path, folder: Path) -> None:
    """The labels files the config's outputs name (`label_filename`), from the source model's folder."""
    for t in cfg.output:
        if t.label_filename:
            mf.write_atomic(folder / t.label_filename, (source / t.label_filename).read_bytes())


def write_variant(b: Build, plan_bytes: bytes, parity_record: dict, output: Path) -> Path:
    from pattern_tools.template import render_config

    folder = output / b.name
    mf.write_atomic(folder / "1" / "model.plan", plan_bytes)
    comment = (f"{b.name}: TensorRT {b.precision.upper()} engine of {b.model} (export/tensorrt.py), for a GPU host "
               "(NGC image); profile " + json.dumps({k: [list(s) for s in v] for k, v in b.profile.items()}))
    mf.write_atomic(folder / "config.pbtxt", render_config(b.config, comment).encode())
    copy_label_files(b.config, b.onnx.parent.parent, folder)
    manifest = {"model": b.name, "version": 1, "artifact": "model.plan", "source": str(b.onnx),
                "precision": b.precision, "profile": {k: [list(s) for s in v] for k, v in b.profile.items()},
                "parity": parity_record, "sha256": mf.sha256_bytes(plan_bytes), "size_bytes": len(plan_bytes),
                "libraries": mf.library_versions(("tensorrt", "onnx", "onnxruntime", "torch"))}
    mf.write_atomic(folder / "1" / mf.MANIFEST, (json.dumps(mf._jsonable(manifest), indent=2) + "\n").encode())
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.tensorrt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="MODEL", help="ONNX models of the repository to convert")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--repository", type=Path, default=mf.DEFAULT_REPOSITORY)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="GPU repository (default: %(default)s)")
    args = p.parse_args(argv)
    builds = plan(args.repository.resolve(), args.only, args.precision)
    print(format_table(["variant", "precision", "plan", "profile (min..opt..max)"], plan_rows(builds)))
    usable, why = tensorrt_status()
    if not usable:
        print(f"TensorRT unavailable here: {why}. Nothing built; run this on a GPU host (NGC image).")
        return 0
    print(f"building with {why}")
    args.output.mkdir(parents=True, exist_ok=True)
    failed = 0
    for b in (b for b in builds if not b.skip):
        try:
            plan_bytes = build_engine(b, args.output)
            record = parity(b, plan_bytes)
            folder = write_variant(b, plan_bytes, record, args.output)
            print(f"{b.name}: {mf.parity_note(record)}, wrote {folder}")
        except mf.ExportError as exc:
            failed += 1
            print(f"{b.name}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
