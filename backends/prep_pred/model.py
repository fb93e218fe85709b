"""Prep-pred pattern as a BLS model: a preprocessing model, then a prediction model.

The same flow as the ensemble form, with the two versions pinned together in one config and
an error that says which step failed (a stock ensemble's error does not).

parameters:
  preprocess_model, preprocess_version   the preprocessing model and its pinned version
  predict_model, predict_version         the predictor and its pinned version
  features                               comma list of preprocess outputs fed to the predictor
The model's own inputs go to the preprocessor; its outputs are taken from the predictor.
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.model_config import parse_model_config
from pattern_kernel.triton_glue import call_model, count_failures, execute_requests
from pattern_kernel.validation import parse_list


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.prep = self.config.required_parameter("preprocess_model")
        self.prep_version = self.config.int_parameter("preprocess_version", -1)
        self.pred = self.config.required_parameter("predict_model")
        self.pred_version = self.config.int_parameter("predict_version", -1)
        self.features = parse_list(self.config.required_parameter("features"))
        self.outputs = [s.name for s in self.config.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        features = call_model("preprocess", self.prep, inputs, self.features, self.prep_version)
        return call_model("predict", self.pred, features, self.outputs, self.pred_version)

    def execute(self, requests):
        return execute_requests(requests, self.config.inputs, self.run, self.config.batching)
