"""Reading a Triton model configuration (the JSON the backend receives) into plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Triton data types as they appear in the JSON config ("TYPE_FP32") to numpy.
_NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model config: name, numpy dtype, per-item dims, reshape."""

    name: str
    dtype: type
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    optional: bool = False
    label_filename: str = ""  # Triton's labels file of this output, relative to the model's folder


@dataclass(frozen=True)
class ModelConfig:
    """The config's plain values; the parameters' typed values come from the backend's spec
    (`spec.BackendSpec.read`)."""

    name: str
    backend: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


def numpy_dtype(triton_type: str) -> type:
    try:
        return _NUMPY_TYPES[triton_type]
    except KeyError:
        raise ValueError(f"unsupported data type {triton_type!r}") from None


def _tensor_spec(entry: dict[str, Any]) -> TensorSpec:
    reshape = entry.get("reshape")
    return TensorSpec(
        name=entry["name"],
        dtype=numpy_dtype(entry["data_type"]),
        dims=tuple(int(d) for d in entry.get("dims", [])),
        reshape=tuple(int(d) for d in reshape.get("shape", [])) if reshape is not None else None,
        optional=bool(entry.get("optional", False)),
        label_filename=entry.get("label_filename", ""),
    )


def parse_model_config(model_config: str | dict[str, Any]) -> ModelConfig:
    """Parse `args["model_config"]` (a JSON string) as handed to `initialize`."""
    raw = json.loads(model_config) if isinstance(model_config, str) else model_config
    parameters = {
        key: value.get("string_value", "") for key, value in raw.get("parameters", {}).items()
    }
    return ModelConfig(
        name=raw.get("name", ""),
        backend=raw.get("backend", ""),
        max_batch_size=int(raw.get("max_batch_size", 0)),
        inputs=tuple(_tensor_spec(e) for e in raw.get("input", [])),
        outputs=tuple(_tensor_spec(e) for e in raw.get("output", [])),
        parameters=parameters,
        raw=raw,
    )


def class_names(config: ModelConfig, model_dir: str | Path, output: str = "PROBABILITIES") -> list[str]:
    """The lines of `output`'s `label_filename` (the labels file Triton loads for it, in the
    model's folder `model_dir`): the name of each class index."""
    spec = next((o for o in config.outputs if o.name == output), None)
    if spec is None or not spec.label_filename:
        raise ValueError(f"model '{config.name}': output {output} names no label_filename (a file of class names)")
    path = Path(model_dir) / spec.label_filename
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"model '{config.name}': output {output}: label_filename {path}: {exc.strerror}") from None
