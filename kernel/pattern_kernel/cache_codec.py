"""Cache keys and values for the prediction cache: what makes two requests the same, and how
a response's tensors are stored (no pickle: a JSON header plus raw bytes)."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping

import numpy as np


def cache_key(
    namespace: str,
    model: str,
    version: int,
    inputs: Mapping[str, np.ndarray],
    parameters: Mapping | None = None,
) -> str:
    """sha256 over model, version, each input's name, dtype, shape and bytes, and the request
    parameters (Triton's own response cache key leaves out dtype, shape and parameters)."""
    digest = hashlib.sha256()
    header = {"model": model, "version": version, "parameters": dict(sorted((parameters or {}).items()))}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        digest.update(f"|{name}|{array.dtype.str}|{list(array.shape)}|".encode())
        digest.update(_tensor_bytes(array))
    return f"{namespace}:{model}:{version}:{digest.hexdigest()}"


def _tensor_bytes(array: np.ndarray) -> bytes:
    if array.dtype != np.object_:
        return array.tobytes()
    parts = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def _bytes_tensor(raw: bytes, shape: list[int]) -> np.ndarray:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return np.array(items, dtype=np.object_).reshape(shape)


def encode_outputs(outputs: Mapping[str, np.ndarray]) -> bytes:
    header, blobs = [], []
    for name, array in outputs.items():
        array = np.ascontiguousarray(array)
        blob = _tensor_bytes(array)
        header.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "length": len(blob)})
        blobs.append(blob)
    return json.dumps(header).encode() + b"\n" + b"".join(blobs)


def decode_outputs(value: bytes) -> dict[str, np.ndarray]:
    head, _, body = value.partition(b"\n")
    outputs, offset = {}, 0
    for entry in json.loads(head):
        raw = body[offset : offset + entry["length"]]
        offset += entry["length"]
        if entry["dtype"] == "|O":
            outputs[entry["name"]] = _bytes_tensor(raw, entry["shape"])
        else:
            outputs[entry["name"]] = np.frombuffer(raw, dtype=entry["dtype"]).reshape(entry["shape"]).copy()
    return outputs
