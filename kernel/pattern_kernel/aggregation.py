"""Combining the answers of several classifiers (parallel microservice pattern)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POLICIES = ("majority", "mean", "max_confidence")


def aggregate(policy: str, scores: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (class ids [n], scores [n, k]) from each target's scores [n, k].

    majority: the most voted class (ties go to the higher summed score), scores averaged;
    mean: argmax of the averaged scores; max_confidence: per row, the single answer
    whose top score is highest."""
    if not scores:
        raise ValueError("nothing to aggregate")
    stacked = np.stack([np.asarray(s, dtype=np.float32) for s in scores])  # [targets, n, k]
    mean = stacked.mean(axis=0)
    if policy == "mean":
        return mean.argmax(axis=1), mean
    if policy == "max_confidence":
        best = stacked.max(axis=2).argmax(axis=0)  # which target, per row
        chosen = stacked[best, np.arange(stacked.shape[1])]
        return chosen.argmax(axis=1), chosen
    if policy == "majority":
        votes = np.zeros_like(mean)
        rows = np.arange(stacked.shape[1])
        for target in stacked:
            votes[rows, target.argmax(axis=1)] += 1
        # ties broken by the summed scores (scaled well below one vote)
        return (votes + mean * 1e-3).argmax(axis=1), mean
    raise ValueError(f"aggregation must be one of {', '.join(POLICIES)}, got {policy!r}")
