"""Unit tests of the prediction cache's key and value encoding."""

from __future__ import annotations

import numpy as np

from pattern_kernel.cache_codec import cache_key, decode_outputs, encode_outputs

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_key_covers_model_version_dtype_shape_bytes_and_parameters():
    base = cache_key("p", "iris", 1, {"FEATURES": X})
    assert base == cache_key("p", "iris", 1, {"FEATURES": X.copy()})
    assert base != cache_key("p", "iris", 2, {"FEATURES": X})
    assert base != cache_key("p", "other", 1, {"FEATURES": X})
    assert base != cache_key("p", "iris", 1, {"FEATURES": X.reshape(1, 8)})  # same bytes, other shape
    assert base != cache_key("p", "iris", 1, {"FEATURES": X.view(np.int32)})  # same bytes, other dtype
    assert base != cache_key("p", "iris", 1, {"FEATURES": X}, {"temperature": 0.5})
    assert base != cache_key("p", "iris", 1, {"OTHER": X})
    assert base.startswith("p:iris:1:")


def test_outputs_round_trip_numeric_and_bytes():
    outputs = {
        "LABEL": np.array([[2], [0]], dtype=np.int64),
        "PROBABILITIES": np.random.default_rng(0).random((2, 3), dtype=np.float32),
        "NAMES": np.array([[b"setosa"], [b"vir\x00ginica"]], dtype=object),
    }
    decoded = decode_outputs(encode_outputs(outputs))
    assert set(decoded) == set(outputs)
    for name, array in outputs.items():
        assert decoded[name].shape == array.shape and decoded[name].dtype == array.dtype
        assert (decoded[name] == array).all()
