"""Handwritten digits classifier (sklearn's bundled 8x8 images), served from encoded PNG bytes.

ONNX I/O: PIXELS float32 [N,64] (raw 0..16 values; the scaler is inside the graph) ->
LABEL int64 [N], PROBABILITIES float32 [N,10]. Also the PNG encoder used by demos/tests and
the held-out split (the server decodes, grayscales, BOX-resizes to 8x8 and scales to 0..16).
"""
from __future__ import annotations

import io
import sys
from functools import lru_cache

import numpy as np

from . import manifest as mf

SEED = 0
TEST_SIZE = 0.25
HIDDEN = (64,)
MAX_ITER = 1000
LABELS = tuple(str(i) for i in range(10))
LIBRARIES = ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime")
SOURCE = "scikit-learn load_digits (1797 8x8 images, values 0..16); stratified split, 25% test, random_state=0"


@lru_cache(maxsize=None)
def _split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=SEED)


def load_test_split() -> tuple[np.ndarray, np.ndarray]:
    """(X_test [N,64] float64 in 0..16, y_test [N]) — the held-out part of the training split."""
    _, X_test, _, y_test = _split()
    return X_test.copy(), y_test.copy()


def encode_digit_png(pixels_8x8: np.ndarray, scale: int = 4) -> bytes:
    """Encode a 0..16 8x8 digit as a grayscale 8-bit PNG, upscaled `scale`x by nearest neighbour
    (each value v becomes round(v*255/16))."""
    from PIL import Image

    px = np.asarray(pixels_8x8, dtype=np.float64).reshape(8, 8)
    if px.min() < 0 or px.max() > 16:
        raise ValueError("digit pixel values must lie in 0..16")
    img = np.rint(px * 255.0 / 16.0).astype(np.uint8)
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def build(log: mf.Log) -> mf.Result:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = _split()
    log.step("training")
    model = Pipeline([("scaler", StandardScaler()),
                      ("mlp", MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=MAX_ITER, random_state=SEED))])
    model.fit(X_train, y_train)
    log.step("converting")
    data = mf.sklearn_to_onnx(model, "digits_classifier", "PIXELS", 64, 10,
                              "digits: StandardScaler + MLPClassifier on raw 0..16 8x8 pixels")
    parity, pred = mf.classifier_parity("digits_classifier v1", data, "PIXELS", X_test, model,
                                        reference="sklearn Pipeline(StandardScaler, MLPClassifier).predict_proba on the test split")
    log.step(mf.parity_note(parity))
    acc = float(np.mean(pred == y_test))
    metrics = {"test_accuracy": acc, "n_test": int(len(y_test)), "iterations": int(model[-1].n_iter_)}
    return mf.Result(data, SOURCE, metrics, parity, {"heldout": {"accuracy": acc, "n": int(len(y_test))},
                                                     "labels": list(LABELS)})


def specs(repo) -> list[mf.Spec]:
    params = {"seed": SEED, "test_size": TEST_SIZE, "estimator": "Pipeline(StandardScaler, MLPClassifier)",
              "hidden_layer_sizes": list(HIDDEN), "max_iter": MAX_ITER, "input_scale": "raw 0..16",
              "opsets": mf.MAX_OPSETS}
    return [mf.Spec("digits_classifier", 1, "digits", build, params, (sys.modules[__name__],), LIBRARIES,
                    labels=LABELS)]
