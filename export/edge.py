"""Edge AI: INT8 ONNX models for on-device inference with the server's own preprocessing.

* `digits_int8`: static INT8 (QDQ, MinMax calibration) of `digits_classifier` v1. The
  calibration set is 500 training images (never the held-out ones) encoded as PNG and decoded
  by the server's preprocessing (`pattern_kernel.images.decode_image`).
* `text_int8`: dynamic INT8 (weights quantised ahead, activations at run time) of
  `text_encoder` v1, bundled with the FP32 `text_classifier` head (gradient-boosted trees: no
  matrix products to quantise) and the tokenizer; tokenised by `pattern_kernel.text`.
  Evaluated one text at a time, as the edge client runs it: the run-time activation scale is
  per tensor, so in a batch a text's answer would depend on its neighbours.

Each is written like a model repository entry, outside the served repository
(`build/edge/<name>/1/model.onnx` + `manifest.json`, bundle files beside it): the export
machinery's manifests, fingerprints and skip-if-up-to-date apply. Both are compared with the FP32
model on the same held-out data (size, latency at batch 1 on one thread, accuracy, label
agreement); a quantised model that loses more than MAX_ACCURACY_DROP held-out accuracy fails
the export, like a parity failure. `build/edge/REPORT.md` holds the table.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pattern_runtime.datasets import digits as digits_data
from pattern_runtime.datasets import text as text_data

from . import digits, text
from . import manifest as mf
from .report import human_size, markdown_table

FAMILY = "edge"
VERSION = 1
MAX_ACCURACY_DROP = 0.02  # held-out accuracy points an INT8 model may lose against FP32
CALIBRATION_IMAGES = 500
LATENCY_RUNS = {"digits_int8": 300, "text_int8": 60}
LIBRARIES = ("numpy", "onnx", "onnxruntime", "pillow", "tokenizers", "scikit-learn")


def edge_repository(repo: Path) -> Path:
    """Where edge bundles go for a model repository: `<repo>/../build/edge`."""
    return Path(repo).resolve().parent / "build" / "edge"


def serving_parameters(repo: Path, model: str) -> dict:
    """A model's parameters as its backend reads them: its config.pbtxt's, typed by the backend's spec."""
    from pattern_kernel.specs import load_specs
    from pattern_runtime import paths
    from pattern_tools.repo_check import load_config

    path = Path(repo) / model / "config.pbtxt"
    if not path.is_file():  # an export into another folder: the configs are the project's
        path = mf.DEFAULT_REPOSITORY / model / "config.pbtxt"
    config = load_config(path)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    return load_specs(paths.BACKENDS)[config.backend].read(config.name, parameters)


def image_preprocess_parameters(repo: Path) -> dict:
    """digits_preprocess's preprocessing parameters (backends/image_preprocess reads the same)."""
    p = serving_parameters(repo, "digits_preprocess")
    return {key: p[key] for key in ("width", "height", "scale_max", "invert")}


def tokenizer_parameters(repo: Path) -> dict:
    """text_tokenizer's truncation and padding (backends/text_tokenizer reads the same)."""
    p = serving_parameters(repo, "text_tokenizer")
    return {key: p[key] for key in ("max_length", "pad_to_multiple_of")}


# ---------------------------------------------------------------- shared measurements


def paired_ms(runs: dict, items, n: int) -> dict[str, float]:
    """Median wall time (ms) of each `runs[name](item)` over `n` rounds cycling through `items`;
    the runs alternate within each round, so a busy machine slows them alike (5 warm-up rounds)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(n + 5):
        item = items[i % len(items)]
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(item)
            if i >= 5:
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t) * 1000) for name, t in times.items()}


@contextlib.contextmanager
def quiet_quantizer(workdir: str):
    """onnxruntime.quantization logs "consider pre-processing" on the root logger; its symbolic
    shape inference fails on the exported encoder graph and brings nothing for these models. It
    also leaves temporary files (sym_shape_infer_temp.onnx, <uuid>.data) in the current folder:
    run it in `workdir`."""
    root, cwd = logging.getLogger(), os.getcwd()
    level = root.level
    root.setLevel(logging.ERROR)
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(cwd)
        root.setLevel(level)


def compare(label: str, fp32: dict, int8: dict, y: np.ndarray) -> tuple[dict, dict]:
    """(metrics, parity record) of an INT8 model against its FP32 source on the same held-out rows;
    ParityError when the INT8 model loses more than MAX_ACCURACY_DROP accuracy."""
    acc32, acc8 = float(np.mean(fp32["labels"] == y)), float(np.mean(int8["labels"] == y))
    agreement = float(np.mean(fp32["labels"] == int8["labels"]))
    max_diff = float(np.abs(fp32["probabilities"] - int8["probabilities"]).max())
    drop = acc32 - acc8
    metrics = {"heldout_accuracy": acc8, "fp32_heldout_accuracy": acc32, "accuracy_drop": round(drop, 6),
               "label_agreement": agreement, "n_heldout": int(len(y)),
               "size_bytes": int8["size"], "fp32_size_bytes": fp32["size"],
               "size_ratio": round(int8["size"] / fp32["size"], 4),
               "ms_per_item": round(int8["ms"], 3), "fp32_ms_per_item": round(fp32["ms"], 3),
               "speedup": round(fp32["ms"] / int8["ms"], 2) if int8["ms"] else None,
               "latency": "median, batch 1, onnxruntime CPU, 1 intra-op thread"}
    parity = {"reference": "the FP32 source model on the same held-out rows and preprocessing",
              "max_abs_diff": max_diff, "label_agreement": agreement, "accuracy_drop": drop,
              "tolerance": {"accuracy_drop": MAX_ACCURACY_DROP}, "ok": drop <= MAX_ACCURACY_DROP}
    if drop > MAX_ACCURACY_DROP:
        raise mf.ParityError(f"{label}: held-out accuracy {acc8:.4f} is {drop:.4f} below FP32's {acc32:.4f} "
                             f"(allowed {MAX_ACCURACY_DROP})")
    return metrics, parity


def finalize(path: Path, doc: str) -> bytes:
    import onnx

    return mf.finalize_onnx(onnx.load(str(path)), doc)


# ---------------------------------------------------------------- digits: static INT8


def digits_images(X: np.ndarray) -> list[bytes]:
    return [digits_data.encode_digit_png(px) for px in X]


def digits_pixels(images: list[bytes], prep: dict) -> np.ndarray:
    """The server's preprocessing of PNG bytes: [n, width*height] float32."""
    from pattern_kernel.images import decode_image

    return np.stack([decode_image("IMAGE", data, prep["width"], prep["height"], prep["scale_max"], prep["invert"])
                     for data in images])


class _Calibration:
    """onnxruntime CalibrationDataReader over preprocessed training images, one per call."""

    def __init__(self, pixels: np.ndarray, input_name: str):
        self.rows = iter([{input_name: row[None, :]} for row in pixels])

    def get_next(self):
        return next(self.rows, None)


def build_digits(repo: Path):
    def build(log: mf.Log) -> mf.Result:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        prep = image_preprocess_parameters(repo)
        source = mf.artifact_path(repo, "digits_classifier", 1)
        X_train, X_test, _, y_test = digits_data.split()
        log.step("calibrating")
        calibration = digits_pixels(digits_images(X_train[:CALIBRATION_IMAGES]), prep)
        with tempfile.TemporaryDirectory() as tmp, quiet_quantizer(tmp):
            out = Path(tmp) / "int8.onnx"
            quantize_static(str(source), str(out), _Calibration(calibration, "PIXELS"), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            data = finalize(out, "digits_classifier v1, static INT8 (QDQ, MinMax calibration) for edge devices")
        log.step("comparing with FP32")
        pixels = digits_pixels(digits_images(X_test), prep)
        models = {"fp32": source.read_bytes(), "int8": data}
        sessions = {name: mf.ort_session(model, threads=1) for name, model in models.items()}
        ms = paired_ms({name: (lambda row, s=sess: s.run(None, {"PIXELS": row[None, :]}))
                        for name, sess in sessions.items()}, pixels, LATENCY_RUNS["digits_int8"])
        runs = {}
        for name, sess in sessions.items():
            labels, probabilities = sess.run(["LABEL", "PROBABILITIES"], {"PIXELS": pixels})
            runs[name] = {"labels": labels.reshape(-1), "probabilities": probabilities, "size": len(models[name]),
                          "ms": ms[name]}
        metrics, parity = compare("digits_int8 v1", runs["fp32"], runs["int8"], y_test)
        log.step(f"accuracy {metrics['heldout_accuracy']:.3f} (FP32 {metrics['fp32_heldout_accuracy']:.3f})")
        extra = {"labels": list(digits.LABELS), "edge": {
            "task": "digits", "source": {"model": "digits_classifier", "version": 1},
            "quantization": "static INT8, QDQ, activations QUInt8, weights QInt8, MinMax over "
                            f"{CALIBRATION_IMAGES} training images",
            "preprocess": {"function": "pattern_kernel.images.decode_image", "model": "digits_preprocess",
                           **prep},
            "input": "PIXELS", "files": {}}}
        return mf.Result(data, digits.SOURCE, metrics, parity, extra)
    return build


# ---------------------------------------------------------------- text: dynamic INT8


def text_heldout() -> tuple[list[str], np.ndarray]:
    """The text classifier's held-out split: the same partition as export/text.py's (train_test_split
    depends on the row count, the labels and the seed only)."""
    from sklearn.model_selection import train_test_split

    rows = text_data.generate_text_dataset(text.SEED)
    texts = [t for t, _ in rows]
    y = np.array([text_data.TOPICS.index(label) for _, label in rows])
    _, test_texts, _, y_test = train_test_split(texts, y, test_size=text.TEST_SIZE, stratify=y, random_state=text.SEED)
    return list(test_texts), y_test


class TextPipeline:
    """tokenizer (the server's code and parameters) -> encoder -> classifier head, in onnxruntime."""

    def __init__(self, tokenizer: Path, encoder: bytes | str, classifier: bytes | str, prep: dict, threads: int = 1):
        from pattern_kernel.text import load_tokenizer

        self.tokenizer = load_tokenizer(str(tokenizer), prep["max_length"], prep["pad_to_multiple_of"])
        self.encoder = mf.ort_session(encoder, threads)
        self.classifier = mf.ort_session(classifier, threads)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from pattern_kernel.text import tokenize

        (embedding,) = self.encoder.run(["EMBEDDING"], tokenize(self.tokenizer, texts))
        labels, probabilities = self.classifier.run(["LABEL", "PROBABILITIES"], {"EMBEDDING": embedding})
        return labels.reshape(-1), probabilities


def build_text(repo: Path, out_repo: Path):
    def build(log: mf.Log) -> mf.Result:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        prep = tokenizer_parameters(repo)
        encoder = mf.artifact_path(repo, "text_encoder", 1)
        classifier = mf.artifact_path(repo, "text_classifier", 1)
        tokenizer = mf.artifact_path(repo, "text_tokenizer", 1, "tokenizer.json")
        log.step("quantising")
        with tempfile.TemporaryDirectory() as tmp, quiet_quantizer(tmp):
            out = Path(tmp) / "int8.onnx"
            quantize_dynamic(str(encoder), str(out), weight_type=QuantType.QInt8)
            data = finalize(out, "all-MiniLM-L6-v2 encoder (text_encoder v1), dynamic INT8, for edge devices")
        log.step("comparing with FP32")
        texts, y = text_heldout()
        models = {"fp32": encoder.read_bytes(), "int8": data}
        pipes = {name: TextPipeline(tokenizer, model, classifier.read_bytes(), prep) for name, model in models.items()}
        ms = paired_ms({name: (lambda t, p=pipe: p([t])) for name, pipe in pipes.items()}, texts,
                       LATENCY_RUNS["text_int8"])
        runs = {}
        for name, pipe in pipes.items():  # one text at a time, as the edge client runs them
            parts = [pipe([t]) for t in texts]
            runs[name] = {"labels": np.concatenate([p[0] for p in parts]),
                          "probabilities": np.concatenate([p[1] for p in parts]), "size": len(models[name]),
                          "ms": ms[name]}
        metrics, parity = compare("text_int8 v1", runs["fp32"], runs["int8"], y)
        metrics["note"] = ("size: the encoder's (the head and tokenizer are the same files in both); latency and "
                           "accuracy: the whole pipeline (tokenizer, encoder, head)")
        log.step(f"accuracy {metrics['heldout_accuracy']:.3f} (FP32 {metrics['fp32_heldout_accuracy']:.3f})")
        bundle = out_repo / "text_int8" / str(VERSION)
        files = {}
        for src, name in ((classifier, "classifier.onnx"), (tokenizer, "tokenizer.json")):
            mf.write_atomic(bundle / name, src.read_bytes())
            files[name] = mf.sha256_file(bundle / name)
        extra = {"labels": list(text_data.TOPICS), "edge": {
            "task": "text", "source": {"model": "text_encoder", "version": 1},
            "quantization": "dynamic INT8: weights QInt8 (MatMul, Gather), activations quantised at run time",
            "preprocess": {"function": "pattern_kernel.text.tokenize", "model": "text_tokenizer", **prep},
            "head": {"file": "classifier.onnx", "source": {"model": "text_classifier", "version": 1},
                     "precision": "FP32"},
            "files": files}}
        return mf.Result(data, "text_encoder v1 + text_classifier v1 + text_tokenizer v1 (export/text.py)",
                         metrics, parity, extra)
    return build


# ---------------------------------------------------------------- specs, running, report


def specs(repo: Path) -> list[mf.Spec]:
    mod = sys.modules[__name__]
    common = {"max_accuracy_drop": MAX_ACCURACY_DROP, "opsets": mf.MAX_OPSETS}
    return [
        mf.Spec("digits_int8", VERSION, FAMILY, build_digits(repo),
                {**common, "quantization": "static", "calibration_images": CALIBRATION_IMAGES,
                 "preprocess": image_preprocess_parameters(repo)},
                (mod, digits), LIBRARIES, deps=(("digits_classifier", 1),), labels=digits.LABELS),
        mf.Spec("text_int8", VERSION, FAMILY, build_text(repo, edge_repository(repo)),
                {**common, "quantization": "dynamic", "preprocess": tokenizer_parameters(repo)},
                (mod, text, text_data), LIBRARIES,
                deps=(("text_tokenizer", 1), ("text_encoder", 1), ("text_classifier", 1)), labels=text_data.TOPICS),
    ]


def bundle_complete(folder: Path) -> bool:
    """The bundle files a manifest lists are there with the recorded hashes."""
    m = mf.read_manifest(folder) or {}
    files = m.get("edge", {}).get("files", {})
    return all((folder / n).is_file() and mf.sha256_file(folder / n) == h for n, h in files.items())


def run_spec(spec: mf.Spec, repo: Path, force: bool = False, stream=None) -> str:
    """Export an edge spec into `edge_repository(repo)`. Its sources live in `repo`: their hashes
    become a parameter (and so part of the fingerprint) instead of dependencies of the output."""
    out = edge_repository(repo)
    inputs = mf.dep_hashes(spec, repo)
    local = dataclasses.replace(spec, deps=(), params={**spec.params, "inputs": inputs})
    force = force or not bundle_complete(out / spec.name / str(spec.version))
    return mf.run_spec(local, out, force=force, stream=stream)


REPORT_HEADER = ["model", "quantisation", "precision", "size", "ms/item", "held-out accuracy", "vs FP32",
                 "same label as FP32"]


def report_rows(out_repo: Path) -> list[list[str]]:
    rows = []
    for folder in sorted(p for p in out_repo.iterdir() if (p / str(VERSION) / mf.MANIFEST).is_file()):
        m = mf.read_manifest(folder / str(VERSION))
        if not m or "edge" not in m:
            continue
        x, source = m["metrics"], m["edge"]["source"]
        kind = m["parameters"].get("quantization", "")
        rows.append([f"{source['model']} v{source['version']}", "-", "FP32", human_size(x["fp32_size_bytes"]),
                     f"{x['fp32_ms_per_item']:.3f}", f"{x['fp32_heldout_accuracy']:.4f}", "", ""])
        rows.append([m["model"], kind, "INT8", f"{human_size(x['size_bytes'])} ({x['size_ratio']:.0%})",
                     f"{x['ms_per_item']:.3f} ({x['speedup']}x)", f"{x['heldout_accuracy']:.4f}",
                     f"{round(-x['accuracy_drop'], 4) + 0.0:+.4f}", f"{x['label_agreement']:.1%}"])
    return rows


def write_report(repo: Path) -> Path | None:
    """`build/edge/REPORT.md`: the comparison table of every edge bundle (None if there is none)."""
    out = edge_repository(repo)
    rows = report_rows(out) if out.is_dir() else []
    if not rows:
        return None
    text_ = ("# Edge models: INT8 against FP32 on the same held-out data\n\n"
             "Latency: median per item at batch 1, onnxruntime CPU, one intra-op thread, FP32 and INT8 calls "
             "alternating; for text the size is the encoder's, latency and accuracy the whole pipeline's "
             "(tokenizer, encoder, head). Written by `python -m export`.\n\n"
             + markdown_table(REPORT_HEADER, rows) + "\n")
    path = out / "REPORT.md"
    mf.write_text_if_changed(path, text_)
    return path
