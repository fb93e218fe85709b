"""Iris tabular classifier, two versions for versioning/rollout patterns, plus the
single-model copy served by the web demo (`iris_web_single` = iris v2).

v1: StandardScaler + LogisticRegression; v2: GradientBoostingClassifier. ONNX I/O:
FEATURES float32 [N,4] -> LABEL int64 [N], PROBABILITIES float32 [N,3].
"""
from __future__ import annotations

import sys
from functools import cache

import numpy as np

from pattern_jobs import feature_stats
from pattern_runtime.datasets import iris as iris_data
from pattern_runtime.datasets.iris import LABELS, SEED, TEST_SIZE, load_split

from . import manifest as mf

LIBRARIES = ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime")
SOURCE = "scikit-learn load_iris (150 rows); stratified split, 30% test, random_state=0"
MODELS = {
    1: {"estimator": "Pipeline(StandardScaler, LogisticRegression(max_iter=1000))"},
    2: {"estimator": "GradientBoostingClassifier(random_state=0)"},
}


@cache
def train(version: int):
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, _, y_train, _, _ = load_split()
    if version == 1:
        model = Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
    else:
        model = GradientBoostingClassifier(random_state=SEED)
    return model.fit(X_train, y_train)


def _evaluate(label: str, version: int, model_bytes: bytes, log: mf.Log):
    _, X_test, _, y_test, _ = load_split()
    parity, pred = mf.classifier_parity(label, model_bytes, "FEATURES", X_test, train(version),
                                        reference=f"sklearn {MODELS[version]['estimator']}.predict_proba "
                                                  "on the test split")
    log.step(mf.parity_note(parity))
    acc = float(np.mean(pred == y_test))
    heldout = {"accuracy": acc, "n": int(len(y_test)), "split": "test 30% stratified, random_state=0"}
    return parity, {"test_accuracy": acc}, heldout


def _training_stats() -> dict:
    """Per-feature mean, std and quantile-bin histogram of the training split, for drift
    monitoring (`triton-patterns drift`); 5 bins: the split has 105 rows."""
    X_train, names = load_split()[0], load_split()[4]
    return feature_stats.training_stats(X_train, names, bins=5, source="training split (70%, random_state=0)")


def _build_version(version: int):
    def build(log: mf.Log) -> mf.Result:
        label = f"iris v{version}"
        log.step("training")
        model = train(version)
        log.step("converting")
        data = mf.sklearn_to_onnx(model, f"iris_v{version}", "FEATURES", 4, 3,
                                  f"iris v{version}: {MODELS[version]['estimator']}")
        parity, metrics, heldout = _evaluate(label, version, data, log)
        return mf.Result(data, SOURCE, metrics, parity, {"heldout": heldout, "labels": list(LABELS),
                                                         "feature_stats": _training_stats()})
    return build


def _build_web_single(repo):
    def build(log: mf.Log) -> mf.Result:
        log.step("copying iris v2")
        src = mf.artifact_path(repo, "iris", 2)
        data = src.read_bytes()
        parity, metrics, heldout = _evaluate("iris_web_single v1", 2, data, log)
        X_train, names = load_split()[0], load_split()[4]
        ranges = [{"name": n, "min": float(X_train[:, i].min()), "max": float(X_train[:, i].max())}
                  for i, n in enumerate(names)]
        extra = {"same_as": {"model": "iris", "version": 2, "sha256": mf.sha256_bytes(data)},
                 "heldout": heldout, "labels": list(LABELS), "feature_ranges": ranges,
                 "feature_stats": _training_stats()}
        return mf.Result(data, SOURCE + "; copy of iris v2", metrics, parity, extra)
    return build


def specs(repo) -> list[mf.Spec]:
    mod = sys.modules[__name__]
    common = dict(family="iris", modules=(mod, iris_data, feature_stats), libraries=LIBRARIES, labels=LABELS)
    params = {"seed": SEED, "test_size": TEST_SIZE, "opsets": mf.MAX_OPSETS}
    out = [mf.Spec("iris", v, build=_build_version(v), params={**params, **MODELS[v]}, **common) for v in MODELS]
    out.append(mf.Spec("iris_web_single", 1, build=_build_web_single(repo),
                       params={**params, **MODELS[2], "copy_of": "iris/2"}, deps=(("iris", 2),), **common))
    return out
