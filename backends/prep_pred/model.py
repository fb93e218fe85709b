"""Prep-pred pattern as a BLS model: a preprocessing model, then a prediction model.

The same flow as the ensemble form, with the two versions pinned together in one config and
an error that says which step failed (a stock ensemble's error does not).

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
The model's own inputs go to the preprocessor; its outputs are taken from the predictor.
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.triton_glue import call_model
from pattern_kernel.validation import parse_list


class TritonPythonModel(PatternModel):

    def setup(self, args):
        self.features = parse_list(self.params["features"])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        p = self.params
        features = call_model("preprocess", p["preprocess_model"], inputs, self.features, p["preprocess_version"])
        return call_model("predict", p["predict_model"], features, [s.name for s in self.config.outputs],
                          p["predict_version"])
