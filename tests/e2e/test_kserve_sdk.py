"""Every model of the repository through two KServe v2 clients, over REST and gRPC:
the project's SDK (`PatternClient` and its tritonclient) and the KServe Python SDK 0.21
(`InferenceRESTClient`, `InferenceGRPCClient`), the latter in its own virtualenv (`make
kserve-venv`: it needs numpy 2 and protobuf 6, the project pins numpy<2 and tritonclient 2.51),
driven by `kserve_calls.py` as a subprocess. Each reads every model's metadata and sends it a
valid request (`pattern_tools.perf.sample_requests`, the data `triton-patterns perf` uses).

Models without a valid request that succeeds, by design: `iris_failing` and `iris_cascade_strict`
(always fail: they show what each client makes of a Triton error) and `iris_time_difference_stream`
(decoupled: a unary call is refused; its metadata is read). `async_result` gets the id of a job submitted first.
"""

from __future__ import annotations

import base64
import json
import subprocess

import numpy as np
import pytest

from pattern_runtime import paths
from pattern_runtime.gateway import Gateway
from pattern_runtime.serve_models import repository_models
from pattern_tools.perf import datatype, sample_requests
from triton_patterns.client import PatternClient

pytestmark = pytest.mark.e2e

KSERVE_PYTHON = paths.PROJECT_ROOT / ".venv-kserve" / "bin" / "python"
FAILING = "iris_failing"
STRICT = "iris_cascade_strict"  # its audit step is iris_failing
DECOUPLED = "iris_time_difference_stream"
UNANSWERED = (FAILING, STRICT, DECOUPLED)


@pytest.fixture(scope="module")
def requests_by_model(triton) -> dict[str, dict[str, np.ndarray]]:
    names = sorted({m["name"] for m in triton.model_index() if m.get("state") == "READY"})
    assert len(names) == len(repository_models())  # both of the project's repositories
    with PatternClient(triton.http_url) as client:
        job = client.submit([6.7, 3.0, 5.2, 2.3])
    return {name: ({"JOB_ID": np.array([job.encode()], dtype=object)} if name == "async_result"
                   else sample_requests(name, 1)[0]) for name in names}


def _datatype(model: str, name: str) -> str:
    return "BYTES" if name == "JOB_ID" else datatype(model, name)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_project_sdk_reads_metadata_and_answers_every_model(triton, requests_by_model, protocol):
    url = triton.http_url if protocol == "http" else triton.grpc_url
    answered, errors = [], {}
    with PatternClient(url, protocol=protocol) as sdk:
        for model, request in requests_by_model.items():
            metadata = sdk.client.get_model_metadata(model, **({"as_json": True} if protocol == "grpc" else {}))
            assert sorted(i["name"] for i in metadata["inputs"]) == sorted(request), model
            inputs = []
            for name, array in request.items():
                tensor = sdk._mod.InferInput(name, list(array.shape), _datatype(model, name))
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            try:
                result = sdk.client.infer(model, inputs)
            except Exception as exc:  # noqa: BLE001 - the message is what is checked
                errors[model] = str(exc)
                continue
            assert result.as_numpy(metadata["outputs"][0]["name"]) is not None, model
            answered.append(model)
    assert set(errors) == set(UNANSWERED), errors
    assert "injected failure" in errors[FAILING] and "step 'audit'" in errors[STRICT], errors
    assert "decoupled" in errors[DECOUPLED], errors
    assert len(answered) == len(requests_by_model) - len(UNANSWERED)


def _wire(model: str, request: dict[str, np.ndarray]) -> list[dict]:
    return [{"name": name, "datatype": _datatype(model, name), "shape": list(array.shape),
             "data": [base64.b64encode(v).decode() for v in array.reshape(-1)] if array.dtype == object
             else array.reshape(-1).tolist()} for name, array in request.items()]


def _kserve_calls(http: str, grpc: str, requests_by_model: dict) -> list[dict]:
    """kserve_calls.py's results (one per model and protocol) for these requests."""
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON} is missing: run `make kserve-venv` (make test does)")
    spec = {"http": http, "grpc": grpc,
            "requests": [{"model": m, "inputs": _wire(m, r)} for m, r in requests_by_model.items()]}
    done = subprocess.run([str(KSERVE_PYTHON), str(paths.PROJECT_ROOT / "tests" / "e2e" / "kserve_calls.py")],
                          input=json.dumps(spec), text=True, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 2 * len(requests_by_model)
    return results


@pytest.mark.timeout(1200)  # its subprocess has a 900-s deadline of its own
def test_kserve_sdk_reads_metadata_and_answers_every_model(triton, requests_by_model):
    results = _kserve_calls(triton.http_url, triton.grpc_url, requests_by_model)
    for r in results:
        assert "metadata_error" not in r, r
        assert sorted(r["metadata"]) == sorted(requests_by_model[r["model"]]), r
        if r["model"] not in UNANSWERED:
            assert "error" not in r and r["outputs"], r
    errors = {(r["model"], r["protocol"]): r.get("error", "") for r in results if r["model"] in UNANSWERED}
    # gRPC carries Triton's message; REST: Triton 2.51 sends the error JSON as text/plain and the
    # KServe REST client reads a body only when it is application/json, so the text before the
    # status is empty (README, "Other KServe v2 clients"); the gateway fixes that (below)
    assert "injected failure" in errors[FAILING, "grpc"] and "decoupled" in errors[DECOUPLED, "grpc"], errors
    for model in UNANSWERED:
        assert errors[model, "rest"].startswith(", '4") or errors[model, "rest"].startswith(", '5"), errors


@pytest.mark.timeout(1200)  # its subprocess has a 900-s deadline of its own
def test_through_the_gateway_the_kserve_rest_client_shows_tritons_message(triton, requests_by_model):
    """The gateway answers errors as application/json, so the REST client reads Triton's message."""
    unanswered = {m: requests_by_model[m] for m in UNANSWERED}
    with Gateway(triton.http_url, triton.grpc_url) as gateway:
        results = _kserve_calls(gateway.http_address, gateway.grpc_address, unanswered)
    errors = {(r["model"], r["protocol"]): r.get("error", "") for r in results}
    assert "injected failure" in errors[FAILING, "rest"] and "step 'audit'" in errors[STRICT, "rest"], errors
    assert "decoupled" in errors[DECOUPLED, "rest"], errors
    assert "injected failure" in errors[FAILING, "grpc"], errors  # gRPC through it as before
