"""Unit tests of the logic inside the backends: config parsing, batching, validation, images."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from pattern_kernel import errors
from pattern_kernel.batching import concat_requests, run_requests, split_rows
from pattern_kernel.errors import InputError, StepError, StepTimeout
from pattern_kernel.images import decode_image
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.specs import load_specs
from pattern_kernel.validation import check_finite, check_ranges, parse_list
from pattern_runtime import paths

CONFIG = {
    "name": "iris",
    "backend": "onnxruntime",
    "max_batch_size": 64,
    "input": [{"name": "FEATURES", "data_type": "TYPE_FP32", "dims": ["4"]}],
    "output": [
        {"name": "LABEL", "data_type": "TYPE_INT64", "dims": ["1"], "reshape": {"shape": []}},
        {"name": "PROBABILITIES", "data_type": "TYPE_FP32", "dims": ["3"]},
    ],
    "parameters": {
        "intra_op_thread_count": {"string_value": "1"},
        "labels": {"string_value": "a,b,c"},
        "bad_int": {"string_value": "one"},
    },
}


def test_model_config_parses_tensors_reshape_and_parameters():
    config = parse_model_config(json.dumps(CONFIG))
    assert config.batching and config.max_batch_size == 64
    assert [s.name for s in config.inputs] == ["FEATURES"]
    assert config.inputs[0].dtype is np.float32 and config.inputs[0].dims == (4,)
    assert config.outputs[0].reshape == () and config.outputs[1].reshape is None
    assert config.backend == "onnxruntime" and config.parameters["bad_int"] == "one"
    spec = load_specs(paths.BACKENDS)[config.backend]
    params = spec.read(config.name, config.parameters)  # typed by the spec, its defaults when absent
    assert params["intra_op_thread_count"] == 1 and params["inter_op_thread_count"] == 0
    with pytest.raises(ValueError, match="model 'iris': parameter 'intra_op_thread_count' must be an integer"):
        spec.read(config.name, {**config.parameters, "intra_op_thread_count": "one"})


def test_concat_and_split_round_trip_keeps_request_order():
    a = {"X": np.arange(8, dtype=np.float32).reshape(2, 4)}
    b = {"X": np.arange(100, 104, dtype=np.float32).reshape(1, 4)}
    merged, sizes = concat_requests([a, b])
    assert sizes == [2, 1] and merged["X"].shape == (3, 4)
    pieces = split_rows({"Y": merged["X"].sum(axis=1)}, sizes)
    assert pieces[0]["Y"].tolist() == [6.0, 22.0]
    assert pieces[1]["Y"].tolist() == [406.0]


def test_concat_rejects_different_inner_shapes_and_split_checks_rows():
    with pytest.raises(ValueError, match="different shapes"):
        concat_requests([{"X": np.zeros((1, 3))}, {"X": np.zeros((1, 4))}])
    with pytest.raises(ValueError, match="expected 3"):
        split_rows({"Y": np.zeros(2)}, [2, 1])


def test_run_requests_merges_once_when_all_good():
    calls = []

    def run(inputs):
        calls.append(inputs["X"].shape[0])
        return {"Y": inputs["X"] * 2}

    results = run_requests([{"X": np.ones((2, 1))}, {"X": np.full((1, 1), 3.0)}], run, batching=True)
    assert calls == [3]
    assert results[0]["Y"].ravel().tolist() == [2, 2] and results[1]["Y"].ravel().tolist() == [6]


def test_run_requests_isolates_a_bad_request():
    def run(inputs):
        if np.isnan(inputs["X"]).any():
            raise InputError("X", "must be finite")
        return {"Y": inputs["X"] + 1}

    unreadable = InputError("X", "is required but was not sent")
    results = run_requests(
        [{"X": np.ones((1, 1))}, {"X": np.full((1, 1), np.nan)}, unreadable], run, batching=True
    )
    assert results[0]["Y"].item() == 2.0
    assert isinstance(results[1], InputError) and "input 'X'" in str(results[1])
    assert results[2] is unreadable


def test_check_finite_and_ranges_name_the_feature():
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    good = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    check_finite("FEATURES", good)
    check_ranges("FEATURES", good, [0] * 4, [15, 10, 15, 5], names)
    with pytest.raises(InputError, match=r"input 'FEATURES'.*finite.*\[0, 2\]"):
        check_finite("FEATURES", np.array([[1, 2, np.inf, 4]], dtype=np.float32))
    with pytest.raises(InputError, match=r"petal_length\) = 45 is outside the valid range \[0, 15\]"):
        check_ranges("FEATURES", np.array([[5, 3, 45, 1]], dtype=np.float32), [0] * 4, [15, 10, 15, 5], names)
    with pytest.raises(InputError, match="expected 4 features per row, got 3"):
        check_ranges("FEATURES", np.zeros((1, 3), dtype=np.float32), [0] * 4, [1] * 4, names)


def test_parse_list_strips_and_casts():
    assert parse_list(" 1, 2.5 ,", float) == [1.0, 2.5]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_image_resizes_grayscale_and_scales():
    image = np.zeros((32, 32), dtype=np.uint8)
    image[:16, :] = 255  # top half white
    tensor = decode_image("IMAGE", _png(image), 8, 8, 16.0)
    assert tensor.shape == (64,) and tensor.dtype == np.float32
    assert tensor.reshape(8, 8)[:4].min() == 16.0 and tensor.reshape(8, 8)[4:].max() == 0.0
    inverted = decode_image("IMAGE", _png(image), 8, 8, 16.0, invert=True)
    assert inverted.reshape(8, 8)[4:].min() == 16.0


def test_decode_image_rejects_corrupt_and_empty_bytes():
    with pytest.raises(InputError, match="input 'IMAGE'.*not a decodable image"):
        decode_image("IMAGE", b"\x89PNG not really", 8, 8, 16.0)
    with pytest.raises(InputError, match="input 'IMAGE'.*is empty"):
        decode_image("IMAGE", b"", 8, 8, 16.0)


def test_step_error_names_step_model_and_version():
    error = StepError("preprocess", "digits_preprocess", 1, "boom", code=3)
    assert str(error) == "step 'preprocess' (model 'digits_preprocess' version 1) failed: boom"
    assert error.code == 3
    assert "version" not in str(StepError("predict", "iris", -1, "x"))


def test_tokenize_pads_to_a_multiple_and_rejects_empty_text():
    from export.text import model_dir
    from pattern_kernel.text import decode_texts, load_tokenizer, tokenize

    tokenizer = load_tokenizer(model_dir() / "tokenizer.json", max_length=256, pad_to_multiple_of=16)
    texts = decode_texts("TEXT", np.array([b"short", b"a much longer sentence about rain"], dtype=object))
    tokens = tokenize(tokenizer, texts)
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape
    assert tokens["input_ids"].shape[1] % 16 == 0 and tokens["input_ids"].dtype == np.int64
    assert tokens["attention_mask"][0].sum() < tokens["attention_mask"][1].sum()
    assert tokens["input_ids"][0, 0] == 101  # [CLS]
    with pytest.raises(InputError, match=r"input 'TEXT': row 1 is empty"):
        decode_texts("TEXT", np.array([b"ok", b"  "], dtype=object))
    with pytest.raises(InputError, match=r"row 0 is not valid UTF-8"):
        decode_texts("TEXT", np.array([b"\xff\xfe"], dtype=object))


def test_failure_reason_of_each_kind_of_error():
    INVALID_ARG, INTERNAL = 3, 13
    assert errors.failure_reason(InputError("IMAGE", "not an image"), INVALID_ARG) == errors.CLIENT_ERROR
    parameter = InputError("target", "no", kind="request parameter")
    assert str(parameter) == "request parameter 'target': no"
    assert errors.failure_reason(parameter, INVALID_ARG) == errors.CLIENT_ERROR
    # only InputError is the client's: a reshape or config error is this model's own failure
    assert errors.failure_reason(ValueError("cannot reshape array of size 3"), INVALID_ARG) == errors.MODEL_ERROR
    bad_input_downstream = StepError("preprocess", "digits_preprocess", 1, "input 'IMAGE': bad", INVALID_ARG)
    assert errors.failure_reason(bad_input_downstream, INVALID_ARG) == errors.CLIENT_ERROR
    callee_failed = StepError("audit", "iris_failing", 1, "boom", INTERNAL)
    assert errors.failure_reason(callee_failed, INVALID_ARG) == errors.CALLEE_ERROR
    assert errors.failure_reason(StepError("lookup", "redis", None, "down"), INVALID_ARG) == errors.CALLEE_ERROR
    assert errors.failure_reason(StepTimeout("fast", "iris", 1, "no answer within 5 ms"), INVALID_ARG) == errors.TIMEOUT
    shed = StepError("target", "heavy_mlp", 1, "Exceeds maximum queue size", INTERNAL)
    assert errors.failure_reason(shed, INVALID_ARG) == errors.OVERLOAD
    assert errors.failure_reason(RuntimeError("injected failure"), INVALID_ARG) == errors.MODEL_ERROR
    assert set(errors.FAILURE_REASONS) == {*errors.ERROR_REASONS, errors.FALLBACK}
