"""Web single pattern: validation, preprocessing, inference and postprocessing in one model.

The seeds' simplest serving form: one process holds the model and does everything. Here it
is one Triton model whose config names the features and their valid ranges:

parameters:
  feature_names  comma list, one per column of FEATURES (used in error messages)
  feature_min    comma list of lower bounds;  feature_max  comma list of upper bounds
  labels         comma list of class names, indexed by the classifier's LABEL
  intra_op_thread_count ...  onnxruntime options, as for the onnxruntime backend

Input FEATURES [n, k] raw values; outputs LABEL (class name), CLASS_ID, PROBABILITIES.
Non-finite or out-of-range values give an INVALID_ARG error naming the feature.
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.model_config import parse_model_config
from pattern_kernel.onnx_session import load_session
from pattern_kernel.triton_glue import count_failures, execute_requests
from pattern_kernel.validation import check_finite, check_ranges, parse_list


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.input_name = self.config.inputs[0].name
        self.feature_names = parse_list(self.config.required_parameter("feature_names"))
        self.lows = parse_list(self.config.required_parameter("feature_min"), float)
        self.highs = parse_list(self.config.required_parameter("feature_max"), float)
        self.labels = np.array(
            [s.encode() for s in parse_list(self.config.required_parameter("labels"))], dtype=object
        )
        if not len(self.feature_names) == len(self.lows) == len(self.highs):
            raise ValueError(
                f"model '{self.config.name}': feature_names, feature_min and feature_max "
                "must have the same length"
            )
        self.session = load_session(self.config, args["model_repository"], args["model_version"])
        self.session_input = self.session.get_inputs()[0].name

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        features = inputs[self.input_name]
        check_finite(self.input_name, features)
        check_ranges(self.input_name, features, self.lows, self.highs, self.feature_names)
        class_id, probabilities = self.session.run(
            ["LABEL", "PROBABILITIES"], {self.session_input: features.astype(np.float32)}
        )
        class_id = np.asarray(class_id).reshape(-1, 1).astype(np.int64)
        return {
            "LABEL": self.labels[class_id],
            "CLASS_ID": class_id,
            "PROBABILITIES": np.asarray(probabilities, dtype=np.float32),
        }

    def execute(self, requests):
        return execute_requests(requests, self.config.inputs, self.run, self.config.batching)
