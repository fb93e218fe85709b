"""The onnxruntime backend: a Python-based stand-in for Triton's native onnxruntime backend."""

from pattern_kernel.spec import ONNX_OPTIONS, BackendSpec

SPEC = BackendSpec(
    "onnxruntime",
    "Runs `default_model_filename` (model.onnx) with onnxruntime, as Triton's native backend would; "
    "the same configs load unchanged on an image with the native backend.",
    parameters=ONNX_OPTIONS,
)
