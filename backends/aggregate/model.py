"""The aggregating step of a parallel ensemble: every input is one model's scores [n, k];
outputs LABEL (class id) and PROBABILITIES, combined by `parameters.aggregation`
(see pattern_kernel.aggregation). Parameters: `spec.py` beside this file."""

from __future__ import annotations

import numpy as np

from pattern_kernel.aggregation import aggregate
from pattern_kernel.pattern_model import PatternModel


class TritonPythonModel(PatternModel):

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels, scores = aggregate(self.params["aggregation"], [inputs[s.name] for s in self.config.inputs])
        return {"LABEL": labels.astype(np.int64).reshape(-1, 1), "PROBABILITIES": scores}
