"""Digits (scikit-learn load_digits, 1797 8x8 images, values 0..16): the stratified split the
digits classifier uses, and the PNG encoding of a digit that demos, tests and the data store send."""

from __future__ import annotations

import io
from functools import cache

import numpy as np

SEED = 0
TEST_SIZE = 0.25
LABELS = tuple(str(i) for i in range(10))


@cache
def split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=SEED)


def load_test_split() -> tuple[np.ndarray, np.ndarray]:
    """(X_test [N,64] float64 in 0..16, y_test [N]) — the held-out part of the training split."""
    _, X_test, _, y_test = split()
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
