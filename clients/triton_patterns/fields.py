"""A `Prediction` attribute read from one of the extra outputs a backend declares (`.arm`,
`.cache_hit`, `.report`, ...): `ResultField` names it, `read_field` reads it from a row's outputs.
The fields themselves are `contract.RESULT_FIELDS`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ResultField:
    """A `Prediction` attribute read from an extra output (the first of `outputs` the answer has)."""

    name: str
    outputs: tuple[str, ...]
    kind: str  # "flag" (bool), "text" (str) or "json" (the decoded document)
    doc: str


def read_field(result_field: ResultField, outputs: dict[str, np.ndarray]) -> Any:
    """A result field's value from one row's outputs, or None when the model has no such output."""
    name = next((n for n in result_field.outputs if n in outputs), None)
    if name is None:
        return None
    value = np.asarray(outputs[name]).reshape(-1)[0]
    if result_field.kind == "flag":
        return bool(value)
    text = value.decode() if isinstance(value, bytes) else str(value)
    return json.loads(text) if result_field.kind == "json" else text
