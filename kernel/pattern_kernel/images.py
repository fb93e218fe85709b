"""Decoding encoded images (PNG, JPEG, ...) into the normalised tensors a classifier takes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from pattern_kernel.errors import InputError

MAX_PIXELS = 4096 * 4096  # larger images are refused before decoding (a small PNG can decode huge)


def decode_image(
    name: str,
    data: bytes,
    width: int,
    height: int,
    scale_max: float,
    invert: bool = False,
) -> np.ndarray:
    """Decode, convert to grayscale, resize (box filter) and scale to [0, scale_max].

    Returns a float32 array of width*height values, row-major."""
    if not data:
        raise InputError(name, "is empty; expected encoded image bytes (PNG or JPEG)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InputError(name, f"is {image.width}x{image.height} pixels; at most {MAX_PIXELS:,} pixels "
                                       "are accepted")
            gray = image.convert("L").resize((width, height), Image.Resampling.BOX)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(name, "is not a decodable image: unknown format (PNG or JPEG expected)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # known format, broken data
        raise InputError(name, f"is not a decodable image (PNG or JPEG expected): {exc}") from None
    pixels = np.asarray(gray, dtype=np.float32)
    if invert:
        pixels = 255.0 - pixels
    return (pixels * (scale_max / 255.0)).reshape(-1)
