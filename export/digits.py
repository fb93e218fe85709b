"""Handwritten digits classifier (sklearn's bundled 8x8 images), served from encoded PNG bytes.

ONNX I/O: PIXELS float32 [N,64] (raw 0..16 values; the scaler is inside the graph) ->
LABEL int64 [N], PROBABILITIES float32 [N,10]. Also the PNG encoder used by demos/tests and
the held-out split (the server decodes, grayscales, BOX-resizes to 8x8 and scales to 0..16).
"""
from __future__ import annotations

import sys

import numpy as np

from pattern_runtime.datasets import digits as digits_data
from pattern_runtime.datasets.digits import LABELS, SEED, TEST_SIZE, split

from . import manifest as mf

HIDDEN = (64,)
MAX_ITER = 1000
LIBRARIES = ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime")
SOURCE = "scikit-learn load_digits (1797 8x8 images, values 0..16); stratified split, 25% test, random_state=0"


def build(log: mf.Log) -> mf.Result:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = split()
    log.step("training")
    model = Pipeline([("scaler", StandardScaler()),
                      ("mlp", MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=MAX_ITER, random_state=SEED))])
    model.fit(X_train, y_train)
    log.step("converting")
    data = mf.sklearn_to_onnx(model, "digits_classifier", "PIXELS", 64, 10,
                              "digits: StandardScaler + MLPClassifier on raw 0..16 8x8 pixels")
    parity, pred = mf.classifier_parity("digits_classifier v1", data, "PIXELS", X_test, model,
                                        reference="sklearn Pipeline(StandardScaler, MLPClassifier).predict_proba "
                                                  "on the test split")
    log.step(mf.parity_note(parity))
    acc = float(np.mean(pred == y_test))
    metrics = {"test_accuracy": acc, "n_test": int(len(y_test)), "iterations": int(model[-1].n_iter_)}
    return mf.Result(data, SOURCE, metrics, parity, {"heldout": {"accuracy": acc, "n": int(len(y_test))},
                                                     "labels": list(LABELS)})


def specs(repo) -> list[mf.Spec]:
    params = {"seed": SEED, "test_size": TEST_SIZE, "estimator": "Pipeline(StandardScaler, MLPClassifier)",
              "hidden_layer_sizes": list(HIDDEN), "max_iter": MAX_ITER, "input_scale": "raw 0..16",
              "opsets": mf.MAX_OPSETS}
    return [mf.Spec("digits_classifier", 1, "digits", build, params, (sys.modules[__name__], digits_data), LIBRARIES,
                    labels=LABELS)]
