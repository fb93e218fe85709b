"""Image preprocessing as its own model (the "prep" of prep-pred).

Decodes encoded image bytes (PNG, JPEG), converts to grayscale, resizes with a box filter and
scales to [0, scale_max], producing the tensor the classifier was trained on.

parameters: width, height (pixels after resize), scale_max (value of a white pixel),
            invert ("true" for dark-on-light images).
Input: one BYTES tensor [n, 1] of encoded images; output: one FP32 tensor [n, width*height].
A corrupt or empty image gives an INVALID_ARG error naming the input.
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.images import decode_image
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.triton_glue import count_failures, execute_requests


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.input_name = self.config.inputs[0].name
        self.output_name = self.config.outputs[0].name
        self.width = self.config.int_parameter("width", 8)
        self.height = self.config.int_parameter("height", 8)
        self.scale_max = self.config.float_parameter("scale_max", 1.0)
        self.invert = self.config.parameter("invert", "false").lower() == "true"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = inputs[self.input_name].reshape(-1)
        pixels = [
            decode_image(
                self.input_name if len(images) == 1 else f"{self.input_name}[{i}]",
                bytes(data),
                self.width,
                self.height,
                self.scale_max,
                self.invert,
            )
            for i, data in enumerate(images)
        ]
        return {self.output_name: np.stack(pixels)}

    def execute(self, requests):
        return execute_requests(requests, self.config.inputs, self.run, self.config.batching)
