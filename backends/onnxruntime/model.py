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
- the parameters of `spec.py` beside this file (onnxruntime's thread counts and execution mode)
  and `optimization { graph { level } }` (see `pattern_kernel.onnx_session`).
"""

from __future__ import annotations

import numpy as np

from pattern_kernel.batching import to_config_rank
from pattern_kernel.onnx_session import load_session
from pattern_kernel.pattern_model import PatternModel


class TritonPythonModel(PatternModel):

    def setup(self, args):
        self.session = load_session(self.config, self.params, args["model_repository"], args["model_version"])
        have = {t.name for t in self.session.get_inputs()} | {t.name for t in self.session.get_outputs()}
        missing = [s.name for s in (*self.config.inputs, *self.config.outputs) if s.name not in have]
        if missing:
            raise ValueError(
                f"model '{self.config.name}': the config names tensors the ONNX file lacks: "
                f"{missing}; the file has {sorted(have)}"
            )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batching = self.config.batching
        feed = {
            s.name: inputs[s.name] if s.reshape is None else to_config_rank(inputs[s.name], s.reshape, batching)
            for s in self.config.inputs
            if s.name in inputs
        }
        results = self.session.run([s.name for s in self.config.outputs], feed)
        return {
            s.name: to_config_rank(np.asarray(arr), s.dims, batching).astype(s.dtype, copy=False)
            for s, arr in zip(self.config.outputs, results, strict=True)
        }
