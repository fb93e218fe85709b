"""Feature statistics for drift monitoring (numpy only).

`training_stats` records, per feature of the training data, mean, std, range and a histogram
over quantile bins; the export writes it into the model manifest (`feature_stats`).
`compare` computes, per feature of recent inputs, the population stability index (PSI) over
those bins and the z-score of the recent mean (standard errors from the training mean), and
flags drift when PSI >= psi_threshold or |z| >= z_threshold.

PSI = sum((a - e) * ln(a / e)) over bins, e and a the training and recent fractions (floored at
1e-4). Rules of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift. With few
training rows or few recent rows PSI is noisy (about (bins - 1) * (1/n_train + 1/n_recent) when
nothing changed), hence few bins for small data sets and a minimum number of recent rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-4
DEFAULT_PSI_THRESHOLD = 0.25
DEFAULT_Z_THRESHOLD = 5.0


def _fractions(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    # bin i holds edges[i-1] < v <= edges[i]; the first and last bins are open-ended
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left"),
                         minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def training_stats(X: np.ndarray, names: Sequence[str], bins: int = 5, source: str = "") -> dict:
    """Per-feature statistics of training data X [rows, features], for the manifest."""
    X = np.asarray(X, dtype=np.float64)
    features = []
    for i, name in enumerate(names):
        col = X[:, i]
        edges = sorted(set(np.quantile(col, np.linspace(0, 1, bins + 1)[1:-1]).round(6).tolist()))
        features.append({
            "name": name, "mean": round(float(col.mean()), 6), "std": round(float(col.std(ddof=1)), 6),
            "min": round(float(col.min()), 6), "max": round(float(col.max()), 6),
            "edges": edges, "fractions": [round(float(f), 6) for f in _fractions(col, edges)],
        })
    return {"source": source, "rows": int(X.shape[0]), "bins": bins, "features": features}


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def compare(
    stats: dict,
    X: np.ndarray,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    z_threshold: float = DEFAULT_Z_THRESHOLD,
) -> dict:
    """Drift report of recent inputs X [rows, features] against training `stats`."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    features = stats["features"]
    if X.shape[1] != len(features):
        raise ValueError(f"recent inputs have {X.shape[1]} features, the training statistics {len(features)}")
    rows = []
    for i, f in enumerate(features):
        col = X[:, i]
        mean = float(col.mean()) if len(col) else float("nan")
        se = f["std"] / np.sqrt(max(len(col), 1))
        z = (mean - f["mean"]) / se if se > 0 else 0.0
        value = psi(f["fractions"], _fractions(col, f["edges"]))
        rows.append({
            "feature": f["name"], "train_mean": f["mean"], "recent_mean": round(mean, 4),
            "train_std": f["std"], "recent_std": round(float(col.std(ddof=1)) if len(col) > 1 else 0.0, 4),
            "z": round(float(z), 2), "psi": round(value, 4),
            "drift": bool(value >= psi_threshold or abs(z) >= z_threshold),
        })
    return {
        "rows": len(X), "psi_threshold": psi_threshold, "z_threshold": z_threshold,
        "drift": any(r["drift"] for r in rows), "features": rows,
    }
