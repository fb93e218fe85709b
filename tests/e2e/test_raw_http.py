"""Every pattern over plain KServe v2 HTTP (no SDK): what curl or any language would send."""

from __future__ import annotations

import json
import struct

import pytest
import requests

from pattern_runtime.datasets import digits as digits_export

pytestmark = pytest.mark.e2e


def _post(triton, path, **kwargs):
    return requests.post(f"http://{triton.http_url}{path}", timeout=30, **kwargs)


def _outputs(body):
    return {o["name"]: o for o in body["outputs"]}


def test_synchronous_v1_and_v2_over_json(triton):
    request = {"inputs": [{"name": "FEATURES", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}]}
    for version in ("1", "2"):
        answer = _post(triton, f"/v2/models/iris/versions/{version}/infer", json=request)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == version
        assert _outputs(body)["LABEL"]["data"] == [2]


def test_web_single_over_json_and_its_error(triton):
    request = {"inputs": [{"name": "FEATURES", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
    answer = _post(triton, "/v2/models/iris_web_single/infer", json=request)
    assert answer.status_code == 200, answer.text
    assert _outputs(answer.json())["LABEL"]["data"] == ["setosa"]
    request["inputs"][0]["data"] = [5.1, 3.5, 1.4, 9.0]
    answer = _post(triton, "/v2/models/iris_web_single/infer", json=request)
    assert answer.status_code == 400 and "petal_width" in answer.json()["error"]


@pytest.mark.parametrize("model", ["digits", "digits_bls"])
def test_prep_pred_with_binary_tensor_extension(triton, model):
    """Image bytes are not JSON text: Triton's binary tensor extension carries them after the
    JSON header (BYTES elements are 4-byte little-endian length + bytes)."""
    x_test, y_test = digits_export.load_test_split()
    png = digits_export.encode_digit_png(x_test[0])
    tensor = struct.pack("<I", len(png)) + png
    header = json.dumps({
        "inputs": [{"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)}}],
        "outputs": [{"name": "LABEL", "parameters": {"binary_data": False}}],
    }).encode()
    answer = _post(
        triton, f"/v2/models/{model}/infer", data=header + tensor,
        headers={"Inference-Header-Content-Length": str(len(header)),
                 "Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    assert _outputs(answer.json())["LABEL"]["data"] == [int(y_test[0])]


def test_serial_text_over_json(triton):
    request = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                           "data": ["Snow and freezing fog will cover the valley by morning."]}]}
    answer = _post(triton, "/v2/models/text_classify/infer", json=request)
    assert answer.status_code == 200, answer.text
    assert _outputs(answer.json())["LABEL"]["data"] == [3]  # weather


def test_model_metadata_lists_inputs(triton):
    answer = requests.get(f"http://{triton.http_url}/v2/models/iris_web_single", timeout=10)
    assert answer.status_code == 200
    assert [i["name"] for i in answer.json()["inputs"]] == ["FEATURES"]
