"""Merging the requests of one dynamic batch into one tensor per input, and splitting back."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pattern_kernel.errors import InputError


def request_batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows in one request: the first dimension shared by all its inputs."""
    sizes = {name: arr.shape[0] if arr.ndim else 1 for name, arr in inputs.items()}
    distinct = set(sizes.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{n}: {s}" for n, s in sizes.items())
        raise InputError(next(iter(sizes)), f"the inputs disagree on the batch dimension ({detail})")
    return distinct.pop() if distinct else 0


def concat_requests(
    requests: Sequence[Mapping[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate each input along axis 0 over all requests; return the merged inputs and
    each request's row count (for `split_rows`). Raises ValueError when shapes beyond the
    batch axis differ (the dynamic batcher never merges those, but a caller may)."""
    sizes = [request_batch_size(r) for r in requests]
    names = list(requests[0].keys()) if requests else []
    merged: dict[str, np.ndarray] = {}
    for name in names:
        parts = [r[name] for r in requests]
        tails = {p.shape[1:] for p in parts}
        if len(tails) > 1:
            raise ValueError(f"input '{name}' has different shapes across requests: {sorted(tails)}")
        merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return merged, sizes


def split_rows(
    outputs: Mapping[str, np.ndarray], sizes: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """Split each output along axis 0 into per-request pieces of the given sizes."""
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.shape[0] != total:
            raise ValueError(
                f"output '{name}' has {arr.shape[0]} rows, expected {total} (one per input row)"
            )
    bounds = np.cumsum([0, *sizes])
    return [
        {name: arr[bounds[i] : bounds[i + 1]] for name, arr in outputs.items()}
        for i in range(len(sizes))
    ]


Outcome = dict[str, np.ndarray] | BaseException
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_requests(inputs: Sequence[Outcome], run: Runner, batching: bool) -> list[Outcome]:
    """Run every request's inputs through `run`: merged into one call when `batching`, one by
    one otherwise or when the merged call fails (so one bad request fails alone).

    Entries of `inputs` that are already exceptions (unreadable requests) pass through."""
    results: list[Outcome] = list(inputs)
    good = [(i, x) for i, x in enumerate(inputs) if not isinstance(x, BaseException)]
    if batching and len(good) > 1:
        try:
            merged, sizes = concat_requests([x for _, x in good])
            for (i, _), outputs in zip(good, split_rows(run(merged), sizes), strict=True):
                results[i] = outputs
            return results
        except Exception:  # noqa: BLE001 - fall back to per-request runs below
            pass
    for i, x in good:
        try:
            results[i] = run(x)
        except Exception as exc:  # noqa: BLE001 - becomes this request's error
            results[i] = exc
    return results


def to_config_rank(array: np.ndarray, dims: Sequence[int], batching: bool) -> np.ndarray:
    """`array` (a callee's output, e.g. iris's LABEL as [rows]) in the rank a config declares:
    [rows, *dims] when batching, else dims; one wildcard takes what is left, and with several
    the array stays as it is. ValueError when the sizes do not fit (this model's error)."""
    shape = (array.shape[0] if array.ndim else 1,) * batching + tuple(dims)
    if shape.count(-1) > 1 or array.shape == shape:
        return array
    return array.reshape(shape)
