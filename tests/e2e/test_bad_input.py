"""Bad input gets a clear error naming the input, and the server answers the next good request."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from triton_patterns.client import PatternError

pytestmark = pytest.mark.e2e

GOOD_ROW = [5.1, 3.5, 1.4, 0.2]


def _raw_infer(client, model, name, array, datatype):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return client.client.infer(model, [tensor])


def _assert_still_serving(client):
    assert client.web_single(GOOD_ROW).label == "setosa"
    assert client.synchronous(GOOD_ROW).label == "setosa"


@pytest.mark.parametrize("model", ["iris", "iris_web_single"])
def test_wrong_dtype_names_the_input(client, model):
    with pytest.raises(InferenceServerException) as err:
        _raw_infer(client, model, "FEATURES", np.array([GOOD_ROW], dtype=np.float64), "FP64")
    assert "FEATURES" in err.value.message() and "FP32" in err.value.message()
    _assert_still_serving(client)


@pytest.mark.parametrize("model", ["iris", "iris_web_single"])
def test_wrong_shape_names_the_input(client, model):
    with pytest.raises(InferenceServerException) as err:
        _raw_infer(client, model, "FEATURES", np.array([[1.0, 2.0, 3.0]], dtype=np.float32), "FP32")
    assert "FEATURES" in err.value.message() and "[-1,4]" in err.value.message().replace(" ", "")
    _assert_still_serving(client)


@pytest.mark.parametrize("model", ["iris", "digits", "digits_bls", "text_classify"])
def test_missing_input_names_the_expected_input(client, model):
    with pytest.raises(InferenceServerException) as err:
        _raw_infer(client, model, "WRONG_NAME", np.zeros((1, 4), dtype=np.float32), "FP32")
    message = err.value.message()
    assert "WRONG_NAME" in message or "expected" in message
    _assert_still_serving(client)


@pytest.mark.parametrize(
    "row, feature",
    [
        ([float("nan"), 3.5, 1.4, 0.2], "finite"),
        ([5.1, float("inf"), 1.4, 0.2], "finite"),
        ([5.1, 3.5, 45.0, 0.2], "petal_length"),
        ([5.1, -1.0, 1.4, 0.2], "sepal_width"),
    ],
)
def test_web_single_rejects_non_finite_and_out_of_range_values(client, row, feature):
    with pytest.raises(PatternError) as err:
        client.web_single(row)
    assert err.value.status == "400"
    assert "input 'FEATURES'" in str(err.value) and feature in str(err.value)
    _assert_still_serving(client)


def test_one_bad_row_in_a_batch_fails_only_its_request(client, async_client_factory):
    """Bad and good requests arriving together (so the dynamic batcher merges them): the bad
    one errors, the others are answered."""
    rows = [GOOD_ROW] * 6 + [[5.1, 3.5, 99.0, 0.2]] + [GOOD_ROW] * 6

    async def outcome(aclient, row):
        try:
            return (await aclient.web_single(row)).label
        except PatternError as exc:
            return f"error: {exc}"

    async def run():
        async with async_client_factory("grpc") as aclient:
            return await asyncio.gather(*(outcome(aclient, row) for row in rows))

    outcomes = asyncio.run(run())
    assert outcomes[6].startswith("error") and "petal_length" in outcomes[6]
    assert outcomes[:6] + outcomes[7:] == ["setosa"] * 12


@pytest.mark.parametrize("form, step", [("ensemble", None), ("bls", "preprocess")])
@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n truncated", b"plain text, not an image", b""])
def test_corrupt_image_bytes_name_the_input(client, form, step, data):
    with pytest.raises(PatternError) as err:
        client.prep_pred(data, form=form)
    message = str(err.value)
    assert "input 'IMAGE'" in message and err.value.status == "400"
    if step:
        assert f"step '{step}'" in message and "digits_preprocess" in message
    _assert_still_serving(client)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_names_the_input(client, text):
    with pytest.raises(PatternError) as err:
        client.serial(text)
    assert "input 'TEXT'" in str(err.value) and "empty" in str(err.value)
    assert client.serial("The match ended in a draw after extra time.").label == "sports"


def test_unknown_model_version_is_a_clear_error(client):
    with pytest.raises(PatternError) as err:
        client.synchronous(GOOD_ROW, version=7)
    assert "iris" in str(err.value) and "7" in str(err.value)
    _assert_still_serving(client)
