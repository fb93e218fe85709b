"""Input checks for backends that validate before inference (web single and friends)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pattern_kernel.errors import InputError


def check_finite(name: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(name, f"must be finite numbers; element {list(where)} is {values[where]}")


def check_ranges(
    name: str,
    values: np.ndarray,
    lows: Sequence[float],
    highs: Sequence[float],
    feature_names: Sequence[str],
) -> None:
    """`values` has shape [rows, features]; each column must lie in [low, high]."""
    if values.shape[-1] != len(feature_names):
        raise InputError(name, f"expected {len(feature_names)} features per row, got {values.shape[-1]}")
    lows_a, highs_a = np.asarray(lows, dtype=values.dtype), np.asarray(highs, dtype=values.dtype)
    bad = (values < lows_a) | (values > highs_a)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            name,
            f"row {row} feature {col} ({feature_names[col]}) = {values[row, col]:g} is outside "
            f"the valid range [{lows[col]:g}, {highs[col]:g}]",
        )


def parse_list(text: str, cast=str) -> list:
    return [cast(item.strip()) for item in text.split(",") if item.strip()]


def parse_targets(text: str) -> list[tuple[str, int]]:
    """A comma list of model[:version] ("iris:1,iris_slow"); no version is -1 (the latest)."""
    targets = []
    for item in parse_list(text):
        model, _, version = item.partition(":")
        targets.append((model, int(version) if version else -1))
    return targets


def utf8_values(name: str, array: np.ndarray) -> list[str]:
    """The elements of a BYTES input as text; bytes that are not UTF-8 are the client's error."""
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    except UnicodeDecodeError as exc:
        raise InputError(name, f"is not valid UTF-8 text (byte {exc.start})") from None
