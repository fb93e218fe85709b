"""The pipelines' sampled capture of intermediate tensors, on a real tritonserver and Redis:
copies of the serial and parallel models with capture switched on (repository API) write one
entry per request to their prediction-log stream, holding every step's real tensors, linked to
the request by its id and final answer, never larger than capture_max_bytes; the shipped
configs (capture off) write nothing."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from pattern_kernel import prediction_log
from pattern_kernel.capture import read_captures, size
from pattern_tools import cli

TEXT = "the striker scored twice in the second half and the home crowd cheered the late winner"
IRIS_ROW = [6.3, 3.3, 6.0, 2.5]


@pytest.fixture()
def http(triton):
    with httpclient.InferenceServerClient(triton.http_url) as c:
        yield c


def infer(http, model: str, inputs: dict[str, np.ndarray], outputs: list[str], request_id: str = "") -> dict:
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = http.infer(model, tensors, request_id=request_id,
                        outputs=[httpclient.InferRequestedOutput(n) for n in outputs])
    return {n: result.as_numpy(n) for n in outputs}


def raw_entries(redis_server, model: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis_server.client().xrange(prediction_log.stream_name(model))]


def classify(http, model: str, request_id: str) -> dict:
    return infer(http, model, {"TEXT": np.array([[TEXT.encode()]], dtype=object)}, ["LABEL", "PROBABILITIES"],
                 request_id)


def test_serial_capture_holds_every_step_and_respects_its_cap(http, own_model, redis_server, capsys):
    model = own_model("text_classify_bls", parameters={"capture_rate": "1", "capture_max_bytes": "4096"})
    answer = classify(http, model, "cap-1")
    entries = raw_entries(redis_server, model)
    assert len(entries) == 1 and size(entries[0]) <= 4096
    [capture] = read_captures(redis_server.client(), prediction_log.stream_name(model), 10, "cap-1")
    assert capture["truncated"] and capture["capture_max_bytes"] == "4096"
    tokenize, encode, classify_step = capture["steps"]
    assert [(s["step"], s["model"], s["version"], s["status"]) for s in capture["steps"]] == [
        ("tokenize", "text_tokenizer", 1, "ran"), ("encode", "text_encoder", 1, "ran"),
        ("classify", "text_classifier", 1, "ran")]
    assert tokenize["inputs"]["TEXT"] == {"same_as": "inputs.TEXT"} and capture["inputs"]["TEXT"]["values"] == [TEXT]
    assert encode["inputs"]["input_ids"] == {"same_as": "steps[0].outputs.input_ids"}
    assert classify_step["inputs"]["EMBEDDING"] == {"same_as": "steps[1].outputs.EMBEDDING"}
    embedding = encode["outputs"]["EMBEDDING"]  # 384 floats: more than the cap leaves room for
    assert embedding["shape"] == [1, 384] and 0 < len(embedding["values"]) < 384
    assert embedding["truncated"].startswith(f"first {len(embedding['values'])} of 384 values")
    # linked to the answer the caller got, step by step
    assert classify_step["outputs"]["LABEL"]["values"] == answer["LABEL"].reshape(-1).tolist()
    assert capture["outputs"]["LABEL"]["values"] == answer["LABEL"].reshape(-1).tolist()
    np.testing.assert_allclose(capture["outputs"]["PROBABILITIES"]["values"], answer["PROBABILITIES"].reshape(-1),
                               rtol=1e-6)

    assert cli.main(["captures", model, "--redis", redis_server.url, "--request-id", "cap-1"]) == 0
    text = capsys.readouterr().out
    assert "request_id=cap-1" in text and "step encode -> text_encoder v1: ran" in text
    assert "out EMBEDDING: float32[1, 384] [" in text and "first " in text


def test_serial_capture_under_a_roomy_cap_holds_the_real_intermediate_tensors(http, own_model, redis_server):
    model = own_model("text_classify_bls", parameters={"capture_rate": "1"})  # the default cap, 64 KiB
    classify(http, model, "cap-2")
    [capture] = read_captures(redis_server.client(), prediction_log.stream_name(model), 10, "cap-2")
    assert not capture["truncated"]
    tokens = capture["steps"][0]["outputs"]
    embedding = capture["steps"][1]["outputs"]["EMBEDDING"]
    assert len(embedding["values"]) == 384
    # the captured tokens, sent to the encoder again, give the captured embedding
    again = infer(http, "text_encoder", {n: np.array(t["values"], dtype=np.int64).reshape(t["shape"])
                                         for n, t in tokens.items()}, ["EMBEDDING"])
    np.testing.assert_allclose(again["EMBEDDING"].reshape(-1), embedding["values"], rtol=1e-5, atol=1e-6)


def test_parallel_capture_holds_each_targets_answer_and_failure(http, own_model, redis_server):
    model = own_model("iris_parallel", parameters={"capture_rate": "1"})
    answer = infer(http, model, {"FEATURES": np.array([IRIS_ROW], dtype=np.float32)}, ["LABEL"], "cap-3")
    [capture] = read_captures(redis_server.client(), prediction_log.stream_name(model), 10, "cap-3")
    targets = {s["model"] + (f":{s['version']}" if s["version"] != -1 else ""): s for s in capture["steps"]}
    assert [s["step"] for s in capture["steps"]] == ["target 0", "target 1", "target 2", "target 3"]
    for name in ("iris:1", "iris:2"):
        assert targets[name]["status"] == "answered"
        assert targets[name]["inputs"]["FEATURES"] == {"same_as": "inputs.FEATURES"}
        scores = targets[name]["outputs"]["PROBABILITIES"]
        assert scores["shape"] == [1, 3] and int(np.argmax(scores["values"])) == answer["LABEL"][0][0]
    assert targets["iris_slow"]["status"] == "timed_out" and targets["iris_slow"]["outputs"] == {}
    assert targets["iris_failing"]["status"] == "failed" and "iris_failing" in targets["iris_failing"]["error"]
    assert capture["outputs"]["LABEL"]["values"] == answer["LABEL"].reshape(-1).tolist()


def test_capture_is_off_by_default(http, own_model, redis_server):
    model = own_model("text_classify_bls")  # the shipped config: capture_rate not set
    classify(http, model, "cap-4")
    assert redis_server.client().exists(prediction_log.stream_name(model)) == 0


def test_a_failed_request_is_captured_up_to_the_step_that_failed(http, own_model, redis_server):
    model = own_model("iris_cascade_strict", parameters={"capture_rate": "1"})
    with pytest.raises(Exception, match="iris_failing"):
        infer(http, model, {"FEATURES": np.array([IRIS_ROW], dtype=np.float32)}, ["LABEL"], "cap-5")
    [capture] = read_captures(redis_server.client(), prediction_log.stream_name(model), 10, "cap-5")
    fast, audit = capture["steps"]
    assert (fast["status"], audit["status"], capture["reason"], capture["outputs"]) == ("ran", "failed", "error", {})
    assert fast["outputs"]["PROBABILITIES"]["shape"] == [1, 3]  # what the step before the failure gave
    assert audit["inputs"]["FEATURES"] == {"same_as": "inputs.FEATURES"} and "iris_failing" in audit["error"]
