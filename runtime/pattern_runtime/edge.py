"""Edge AI pattern: predict on the device with a quantised model, ask the server when unsure.

    from pattern_runtime.edge import EdgeClient
    with EdgeClient("digits", url="127.0.0.1:8000", min_confidence=0.9) as edge:
        p = edge.predict(png_bytes)
        print(p.label, p.source)        # "edge", or "server" when the local answer was unsure

It is part of the runtime, not of the SDK: it runs the kernel's preprocessing on the device and
finds the bundles in the checkout's `build/edge/`; it asks the server through the SDK.

A bundle (`build/edge/<name>/1/`, written by `python -m export`, see export/edge.py) holds the
INT8 ONNX model, its manifest (labels, preprocessing parameters read from the server's model
config at export time) and, for text, the FP32 classifier head and the tokenizer. The
preprocessing is the server's own code, imported, not copied: `pattern_kernel.images.decode_image`
(what `backends/image_preprocess` runs) and `pattern_kernel.text.tokenize` (what
`backends/text_tokenizer` runs). The server is asked when the bundle is missing or unreadable,
or when the local top score is below `min_confidence`; if that call fails, the local answer is
returned with the error in `outputs["FALLBACK_ERROR"]`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pattern_kernel.images import decode_image
from pattern_kernel.text import decode_texts, load_tokenizer, tokenize
from pattern_runtime import paths
from triton_patterns.client import PatternError, Prediction

LOG = logging.getLogger(__name__)

EDGE_DIR = paths.BUILD / "edge"
BUNDLES = {"digits": "digits_int8", "text": "text_int8"}  # task -> bundle folder under EDGE_DIR
SERVER = {"digits": ("prep_pred", 32), "text": ("serial", 16)}  # task -> server pattern, rows per request


class EdgeUnavailable(RuntimeError):
    """Neither the local model nor the server could answer."""


def _string(name: str) -> np.ndarray:
    return np.array([name.encode()], dtype=np.object_)


def latest_bundle(folder: Path) -> Path:
    """The highest numbered version folder of a bundle (`<folder>/1` when there is none)."""
    versions = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    return folder / str(versions[-1] if versions else 1)


class EdgeModel:
    """A bundle run locally with onnxruntime: the server's preprocessing, then the INT8 model."""

    def __init__(self, folder: Path | str, threads: int = 1):
        import onnxruntime as ort

        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} does not exist (run `make models`)")
        self.manifest = json.loads(manifest_path.read_text())
        edge = self.manifest["edge"]
        needed = ["model.onnx", *edge.get("files", {})]
        missing = [n for n in needed if not (self.folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder}: missing {', '.join(missing)} (run `make models`)")
        self.task, self.prep = edge["task"], edge["preprocess"]
        self.name, self.version = self.manifest["model"], str(self.manifest["version"])
        self.labels = list(self.manifest["labels"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1

        def session(name: str):
            return ort.InferenceSession(str(self.folder / name), options, providers=["CPUExecutionProvider"])

        self.session = session("model.onnx")
        if self.task == "text":
            self.head = session(edge["head"]["file"])
            self.tokenizer = load_tokenizer(str(self.folder / "tokenizer.json"), self.prep["max_length"],
                                            self.prep["pad_to_multiple_of"])
        elif self.task != "digits":
            raise ValueError(f"{manifest_path}: unknown edge task {self.task!r}")

    def preprocess(self, values: Sequence[Any]) -> dict[str, np.ndarray]:
        """The model's input tensors for a batch of raw values (image bytes, or texts)."""
        if self.task == "digits":
            p = self.prep
            return {"PIXELS": np.stack([
                decode_image("IMAGE" if len(values) == 1 else f"IMAGE[{i}]", bytes(v), p["width"], p["height"],
                             p["scale_max"], p["invert"])
                for i, v in enumerate(values)])}
        raw = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in values], dtype=np.object_)
        return tokenize(self.tokenizer, decode_texts("TEXT", raw))

    def predict(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(class ids [n], probabilities [n, classes]). Text goes one item at a time: dynamic
        quantisation scales activations per tensor, so in a batch a text's answer would depend
        on the texts beside it (and on their padding); the static digits model takes the batch."""
        if self.task == "text" and len(values) > 1:
            parts = [self.predict([v]) for v in values]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        inputs = self.preprocess(values)
        if self.task == "text":
            (embedding,) = self.session.run(["EMBEDDING"], inputs)
            labels, scores = self.head.run(["LABEL", "PROBABILITIES"], {"EMBEDDING": embedding})
        else:
            labels, scores = self.session.run(["LABEL", "PROBABILITIES"], inputs)
        return np.asarray(labels).reshape(-1).astype(np.int64), np.asarray(scores, dtype=np.float32)


class EdgeClient:
    """Local first, server when needed. `task` "digits" (PNG/JPEG bytes) or "text" (str).

    `server`: a PatternClient (or anything with its `predict(pattern, values)`); else `url` and
    `protocol` make one on first need; neither: no fallback. `counts` tallies where answers came
    from ("edge", "server") and failed fallbacks ("fallback_errors")."""

    def __init__(
        self,
        task: str,
        *,
        bundle: Path | str | None = None,
        edge_dir: Path | str = EDGE_DIR,
        server: Any = None,
        url: str | None = None,
        protocol: str = "http",
        min_confidence: float = 0.9,
        threads: int = 1,
    ):
        if task not in BUNDLES:
            raise ValueError(f"task must be one of {', '.join(BUNDLES)}, not {task!r}")
        self.task, self.min_confidence = task, min_confidence
        self.pattern, self.server_batch = SERVER[task]
        self._server, self._url, self._protocol, self._own_server = server, url, protocol, False
        self.counts: Counter = Counter()
        self.local: EdgeModel | None = None
        self.local_error: str | None = None
        try:
            self.local = EdgeModel(Path(bundle) if bundle else latest_bundle(Path(edge_dir) / BUNDLES[task]), threads)
        except Exception as exc:  # noqa: BLE001 - missing or unreadable bundle: every answer comes from the server
            self.local_error = f"{type(exc).__name__}: {exc}"
            LOG.warning("edge model for %s unavailable, using the server: %s", task, self.local_error)

    # -- server side

    @property
    def server(self):
        if self._server is None and self._url:
            from triton_patterns.client import PatternClient

            self._server, self._own_server = PatternClient(self._url, protocol=self._protocol), True
        return self._server

    def close(self) -> None:
        if self._own_server and self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask_server(self, values: list[Any]) -> list[Prediction]:
        out = []
        for start in range(0, len(values), self.server_batch):
            for p in self.server.predict(self.pattern, values[start:start + self.server_batch]):
                p.outputs["SOURCE"] = _string("server")
                out.append(p)
        self.counts["server"] += len(out)
        return out

    # -- predictions

    def predict(self, value: Any) -> Prediction:
        return self.predict_batch([value])[0]

    def predict_batch(self, values: Sequence[Any]) -> list[Prediction]:
        """One Prediction per value; `.source` is "edge" or "server"."""
        values = list(values)
        if self.local is None:
            if self.server is None:
                raise EdgeUnavailable(f"no local {self.task} model ({self.local_error}) and no server to ask")
            try:
                return self._ask_server(values)
            except (PatternError, OSError) as exc:
                raise EdgeUnavailable(f"no local {self.task} model ({self.local_error}); server: {exc}") from exc
        start = time.perf_counter()
        ids, scores = self.local.predict(values)
        latency = (time.perf_counter() - start) * 1000 / len(values)
        predictions = [
            Prediction(self.local.name, self.local.version, self.local.labels[i] if i < len(self.local.labels)
                       else str(i), int(i), s, latency, {"SOURCE": _string("edge")})
            for i, s in zip(ids, scores, strict=True)
        ]
        unsure = [k for k, p in enumerate(predictions) if float(p.scores.max()) < self.min_confidence]
        if unsure and self.server is not None:
            try:
                for k, answer in zip(unsure, self._ask_server([values[k] for k in unsure]), strict=True):
                    predictions[k] = answer
            except (PatternError, OSError) as exc:
                self.counts["fallback_errors"] += len(unsure)
                for k in unsure:
                    predictions[k].outputs["FALLBACK_ERROR"] = _string(str(exc))
        self.counts["edge"] += sum(p.source == "edge" for p in predictions)
        return predictions
