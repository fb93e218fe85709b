"""Web single pattern: validation, preprocessing, inference and postprocessing in one model.

The seeds' simplest serving form: one process holds the model and does everything. Here it
is one Triton model whose config names the features and their valid ranges.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).

Input FEATURES [n, k] raw values; outputs LABEL (the class name, from the labels file that
PROBABILITIES' `label_filename` names), CLASS_ID, PROBABILITIES.
Non-finite or out-of-range values give an INVALID_ARG error naming the feature.
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.model_config import class_names
from pattern_kernel.onnx_session import load_session
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.validation import check_finite, check_ranges, parse_list


class TritonPythonModel(PatternModel):

    def setup(self, args):
        p = self.params
        self.feature_names = parse_list(p["feature_names"])
        self.lows = parse_list(p["feature_min"], float)
        self.highs = parse_list(p["feature_max"], float)
        names = class_names(self.config, args["model_repository"])
        self.labels = np.array([s.encode() for s in names], dtype=object)
        if not len(self.feature_names) == len(self.lows) == len(self.highs):
            raise ValueError(
                f"model '{self.config.name}': feature_names, feature_min and feature_max "
                "must have the same length"
            )
        self.session = load_session(self.config, self.params, args["model_repository"], args["model_version"])
        self.session_input = self.session.get_inputs()[0].name

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = self.config.inputs[0].name
        features = inputs[name]
        check_finite(name, features)
        check_ranges(name, features, self.lows, self.highs, self.feature_names)
        class_id, probabilities = self.session.run(
            ["LABEL", "PROBABILITIES"], {self.session_input: features.astype(np.float32)}
        )
        class_id = np.asarray(class_id).reshape(-1, 1).astype(np.int64)
        return {
            "LABEL": self.labels[class_id],
            "CLASS_ID": class_id,
            "PROBABILITIES": np.asarray(probabilities, dtype=np.float32),
        }
