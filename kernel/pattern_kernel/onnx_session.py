"""Creating an onnxruntime session from a Triton model config, as the native backend would."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import onnxruntime as ort

from pattern_kernel.model_config import ModelConfig

_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def session_options(config: ModelConfig, params: Mapping[str, Any]) -> ort.SessionOptions:
    """Options from the parameters `spec.ONNX_OPTIONS` (`params`: their values read by the spec:
    `intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`) and the config's
    `optimization { graph { level } }`, with the native backend's names and meanings (-1 basic,
    1 extended, otherwise all)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = params["intra_op_thread_count"]
    options.inter_op_num_threads = params["inter_op_thread_count"]
    if params["execution_mode"] == 1:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    level = int(config.raw.get("optimization", {}).get("graph", {}).get("level", 0))
    options.graph_optimization_level = _GRAPH_LEVELS.get(
        level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    return options


def load_session(config: ModelConfig, params: Mapping[str, Any], model_dir: str, version: str) -> ort.InferenceSession:
    """Open `<model_dir>/<version>/<default_model_filename>` with the config's options."""
    filename = config.raw.get("default_model_filename") or "model.onnx"
    path = os.path.join(model_dir, str(version), filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model '{config.name}': {path} does not exist (run `make models`)")
    return ort.InferenceSession(
        path, sess_options=session_options(config, params), providers=["CPUExecutionProvider"]
    )
