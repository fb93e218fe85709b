"""Image preprocessing as its own model (the "prep" of prep-pred).

Decodes encoded image bytes (PNG, JPEG), converts to grayscale, resizes with a box filter and
scales to [0, scale_max], producing the tensor the classifier was trained on.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
Input: one BYTES tensor [n, 1] of encoded images; output: one FP32 tensor [n, width*height].
A corrupt or empty image gives an INVALID_ARG error naming the input.
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.images import decode_image
from pattern_kernel.pattern_model import PatternModel


class TritonPythonModel(PatternModel):

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name, p = self.config.inputs[0].name, self.params
        images = inputs[name].reshape(-1)
        pixels = [
            decode_image(name if len(images) == 1 else f"{name}[{i}]", bytes(data),
                         p["width"], p["height"], p["scale_max"], p["invert"])
            for i, data in enumerate(images)
        ]
        return {self.config.outputs[0].name: np.stack(pixels)}
