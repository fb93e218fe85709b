"""What a pattern call returns: `Prediction`, one row's answer, and `ModelInfo`, one model of the
server's repository index."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from triton_patterns.contract import RESULT_FIELDS, ExtraOutputs
from triton_patterns.fields import ResultField, read_field


@dataclass
class Prediction(ExtraOutputs):
    """One row's answer. Beyond the fields below, one attribute per extra output the backends
    declare (contract.RESULT_FIELDS: `report`, `cache_hit`, `source`, `job_id`, `arm`, `target`,
    `fallback`, `fallback_reason`, `stage`), None when the model has no such output."""

    model: str
    version: str
    label: str
    class_id: int
    scores: np.ndarray
    latency_ms: float
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    trace_id: str | None = None  # the W3C trace id the request was sent with (trace=True)

    def _text(self, name: str) -> str | None:
        """A one-string output as str, or None when the model has no such output."""
        return read_field(ResultField(name, (name,), "text", ""), self.outputs)

    def as_dict(self) -> dict[str, Any]:
        extras = {f.name: read_field(f, self.outputs) for f in RESULT_FIELDS}
        return {
            "model": self.model,
            "version": self.version,
            "label": self.label,
            "class_id": self.class_id,
            "scores": [round(float(s), 4) for s in self.scores],
            "latency_ms": round(self.latency_ms, 2),
            **{name: value for name, value in extras.items() if value is not None},
            **({"trace_id": self.trace_id} if self.trace_id else {}),
        }


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    state: str
    reason: str = ""
