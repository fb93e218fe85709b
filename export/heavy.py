"""A compute-heavier MLP for benchmarks (dynamic batching, instance counts), built directly with
onnx.helper from seeded random weights — it predicts nothing meaningful.

ONNX I/O: INPUT float32 [N,512] -> OUTPUT float32 [N,16] (softmax scores).
"""
from __future__ import annotations

import itertools
import sys
import time

import numpy as np

from . import manifest as mf

SEED = 0
IN_DIM, WIDTH, LAYERS, OUT_DIM = 512, 2048, 8, 16
LIBRARIES = ("numpy", "onnx", "onnxruntime")


def weights(seed: int = SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-initialised (W [in,out], b [out]) float32 per layer; the last layer is the output layer."""
    rng = np.random.default_rng(seed)
    dims = [IN_DIM] + [WIDTH] * LAYERS + [OUT_DIM]
    out = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
        gain = 2.0 if i < LAYERS else 1.0
        W = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(gain / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        out.append((W, b))
    return out


def forward_numpy(x: np.ndarray, layers) -> np.ndarray:
    """Reference forward pass in float64."""
    h = x.astype(np.float64)
    for i, (W, b) in enumerate(layers):
        h = h @ W.astype(np.float64) + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    h = np.exp(h - h.max(axis=1, keepdims=True))
    return h / h.sum(axis=1, keepdims=True)


def to_onnx(layers) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "INPUT"
    for i, (W, b) in enumerate(layers):
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(layers) - 1
        out = "logits" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"gemm{i}" if not last else out]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"gemm{i}"], [out]))
        prev = out
    nodes.append(helper.make_node("Softmax", ["logits"], ["OUTPUT"], axis=1))
    graph = helper.make_graph(nodes, "heavy_mlp",
                              [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["N", IN_DIM])],
                              [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["N", OUT_DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="export.heavy")
    return mf.finalize_onnx(model, f"random (seeded) {LAYERS}x{WIDTH} Gemm+Relu MLP, for benchmarking only")


def ms_per_row(sess, batch: int, repeats: int) -> float:
    x = np.random.default_rng(1).standard_normal((batch, IN_DIM)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"INPUT": x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"INPUT": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000 / batch)


def build(log: mf.Log) -> mf.Result:
    log.step("building")
    layers = weights()
    data = to_onnx(layers)
    sess = mf.ort_session(data, threads=1)
    x = np.random.default_rng(SEED + 1).standard_normal((64, IN_DIM)).astype(np.float32)
    parity = mf.check_parity("heavy_mlp v1", {"OUTPUT": (sess.run(["OUTPUT"], {"INPUT": x})[0],
                                                         forward_numpy(x, layers), 1e-7, 1e-3)},
                             reference="numpy float64 forward pass on 64 seeded random rows")
    log.step(mf.parity_note(parity))
    log.step("timing")
    metrics = {"ms_per_row_batch1": round(ms_per_row(sess, 1, 50), 3),
               "ms_per_row_batch32": round(ms_per_row(sess, 32, 10), 3),
               "timing": "onnxruntime CPU, 1 intra-op thread, median", "flops_per_row":
               2 * sum(W.size for W, _ in layers)}
    log.step(f"{metrics['ms_per_row_batch1']:.2f} ms/row at batch 1, {metrics['ms_per_row_batch32']:.2f} at batch 32")
    return mf.Result(data, "no data", metrics, parity, {"weights": "random (seeded), for benchmarking only"})


def _build_guarded(repo):
    """heavy_mlp_guarded v1: the same file as heavy_mlp v1 (its config adds load shedding)."""
    def build(log: mf.Log) -> mf.Result:
        log.step("copying heavy_mlp v1")
        data = mf.artifact_path(repo, "heavy_mlp", 1).read_bytes()
        source = mf.read_manifest(repo / "heavy_mlp" / "1")
        if mf.sha256_bytes(data) != source["sha256"]:
            raise mf.ExportError("heavy_mlp_guarded v1: heavy_mlp v1 does not match its manifest; re-export it")
        return mf.Result(data, "copy of heavy_mlp v1", source["metrics"], source["parity"],
                         {"same_as": {"model": "heavy_mlp", "version": 1, "sha256": source["sha256"]},
                          "weights": "random (seeded), for benchmarking only"})
    return build


def specs(repo) -> list[mf.Spec]:
    params = {"seed": SEED, "input_dim": IN_DIM, "width": WIDTH, "hidden_layers": LAYERS, "output_dim": OUT_DIM,
              "init": "He normal, bias N(0, 0.01)", "output": "softmax", "opset": 17}
    mod = sys.modules[__name__]
    return [mf.Spec("heavy_mlp", 1, "heavy", build, params, (mod,), LIBRARIES),
            mf.Spec("heavy_mlp_guarded", 1, "heavy", _build_guarded(repo), {**params, "copy_of": "heavy_mlp/1"},
                    (mod,), LIBRARIES, deps=(("heavy_mlp", 1),))]
