"""A Python-based implementation of Triton's `onnxruntime` backend, for the embedded runtime.

The tritonserver in the `nvidia-pytriton` wheel has no C++ onnxruntime backend. Triton maps
`platform: "onnxruntime_onnx"` to the backend named `onnxruntime` and accepts a Python-based
backend folder of that name, so the same model configs load here and, unchanged, on an NGC
image with the native backend (where this folder is not mounted).

What it honours from the model config, like the native backend:
- `default_model_filename` in the version folder (Triton fills in `model.onnx`);
- inputs/outputs by name, their data types and `reshape`;
- all requests of a dynamic batch run in one `session.run`, results split back per request;
  if the merged run fails, each request is run alone so one bad request fails alone;
- `parameters` `intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`, and
  `optimization { graph { level } }` (see `pattern_kernel.onnx_session`).
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.model_config import parse_model_config
from pattern_kernel.onnx_session import load_session
from pattern_kernel.triton_glue import count_failures, execute_requests


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.session = load_session(self.config, args["model_repository"], args["model_version"])
        have = {t.name for t in self.session.get_inputs()} | {t.name for t in self.session.get_outputs()}
        missing = [s.name for s in (*self.config.inputs, *self.config.outputs) if s.name not in have]
        if missing:
            raise ValueError(
                f"model '{self.config.name}': the config names tensors the ONNX file lacks: "
                f"{missing}; the file has {sorted(have)}"
            )
        self.lead = 1 if self.config.batching else 0

    def _reshaped(self, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if shape.count(-1) > 1:  # several variable dims: the graph's own shape stands
            return arr
        return arr.reshape(arr.shape[: self.lead] + shape)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {
            s.name: inputs[s.name] if s.reshape is None else self._reshaped(inputs[s.name], s.reshape)
            for s in self.config.inputs
            if s.name in inputs
        }
        names = [s.name for s in self.config.outputs]
        results = self.session.run(names, feed)
        return {
            s.name: self._reshaped(np.asarray(arr), s.dims).astype(s.dtype, copy=False)
            for s, arr in zip(self.config.outputs, results)
        }

    def execute(self, requests):
        return execute_requests(requests, self.config.inputs, self.run, self.config.batching)
