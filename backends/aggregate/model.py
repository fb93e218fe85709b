"""The aggregating step of a parallel ensemble: every input is one model's scores [n, k];
outputs LABEL (class id) and PROBABILITIES, combined by `parameters.aggregation`
(majority | mean | max_confidence, see pattern_kernel.aggregation)."""

from __future__ import annotations

import numpy as np

from pattern_kernel.aggregation import POLICIES, aggregate
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.triton_glue import count_failures, execute_requests


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.policy = self.config.parameter("aggregation", "mean")
        if self.policy not in POLICIES:
            raise ValueError(f"model '{self.config.name}': aggregation must be one of {POLICIES}")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels, scores = aggregate(self.policy, [inputs[s.name] for s in self.config.inputs])
        return {"LABEL": labels.astype(np.int64).reshape(-1, 1), "PROBABILITIES": scores}

    def execute(self, requests):
        return execute_requests(requests, self.config.inputs, self.run, self.config.batching)
