"""Access keys and gRPC TLS against real tritonservers (their own, on free ports, iris only):
without the key a restricted call is refused, with it it succeeds; the repository API is
refused without the admin key by default; the SDK, the launcher and the probe send the keys."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
import requests

from pattern_kernel import probe
from pattern_kernel.access import ADMIN_HEADER, API_HEADER, API_KEY_ENV, GrpcTls
from pattern_runtime import paths
from pattern_runtime.gateway import self_signed_certificate
from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_settings import ServerSettings
from triton_patterns.client import AsyncPatternClient, PatternClient, PatternError

pytestmark = pytest.mark.e2e

ADMIN = "e2e-admin-key-0123456789"
API = "e2e-api-key-0123456789"
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
INFER = {"inputs": [{"name": "FEATURES", "shape": [1, 4], "datatype": "FP32", "data": VIRGINICA}]}


@pytest.fixture(scope="module")
def iris_repository(tmp_path_factory):
    if not (paths.MODEL_REPOSITORY / "iris" / "2" / "model.onnx").exists():
        pytest.fail("exported models are missing: run `make models` first")
    repo = tmp_path_factory.mktemp("security_repo")
    (repo / "iris").symlink_to(paths.MODEL_REPOSITORY / "iris")
    return repo


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (its own root), made with openssl; None without it."""
    if shutil.which("openssl") is None:
        return None
    tls = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    return tls.cert, tls.key


def _server(repo, tmp_path_factory, **kwargs) -> TritonServer:
    return TritonServer(ServerSettings(model_repository=repo, cache_size_bytes=None,
                                       log_dir=tmp_path_factory.mktemp("logs"),
                                       startup_timeout=120, **kwargs))


@pytest.fixture(scope="module")
def locked(iris_repository, certs, tmp_path_factory):
    """Admin and API keys, gRPC over TLS (when openssl is there), explicit model control."""
    tls = GrpcTls(*certs) if certs else None
    server = _server(iris_repository, tmp_path_factory, admin_key=ADMIN, api_key=API, grpc_tls=tls,
                     model_control_mode="explicit", load_models=["iris"])
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def default(iris_repository, tmp_path_factory):
    """The launcher's defaults: admin APIs behind the configured admin key, inference open."""
    server = _server(iris_repository, tmp_path_factory)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _post(server, path, headers=None, json=None):
    return requests.post(f"http://{server.http_url}{path}", json=json if json is not None else {},
                         headers=headers or {},
                         timeout=10)


def _refused(response) -> bool:
    return response.status_code != 200 and "restricted" in response.text.lower()


def test_inference_needs_the_api_key_health_does_not(locked):
    assert requests.get(f"http://{locked.http_url}/v2/health/ready", timeout=5).status_code == 200
    for headers in ({}, {API_HEADER: "wrong-key-0123456789"}, {ADMIN_HEADER: ADMIN}):
        answer = _post(locked, "/v2/models/iris/infer", headers, INFER)
        assert _refused(answer), (headers, answer.status_code, answer.text)
    answer = _post(locked, "/v2/models/iris/infer", {API_HEADER: API}, INFER)
    assert answer.status_code == 200, answer.text
    assert {o["name"]: o["data"] for o in answer.json()["outputs"]}["LABEL"] == [2]
    assert _refused(requests.get(f"http://{locked.http_url}/v2/models/iris", timeout=5))  # metadata too


def test_repository_and_shared_memory_apis_need_the_admin_key(locked):
    for headers in ({}, {API_HEADER: API}, {ADMIN_HEADER: "wrong-key-0123456789"}):
        assert _refused(_post(locked, "/v2/repository/index", headers)), headers
        assert _refused(_post(locked, "/v2/repository/models/iris/load", headers)), headers
        assert _refused(requests.get(f"http://{locked.http_url}/v2/systemsharedmemory/status", headers=headers,
                                     timeout=5)), headers
    index = _post(locked, "/v2/repository/index", {ADMIN_HEADER: ADMIN})
    assert index.status_code == 200 and {m["name"] for m in index.json()} == {"iris"}
    status = requests.get(f"http://{locked.http_url}/v2/systemsharedmemory/status", headers={ADMIN_HEADER: ADMIN},
                          timeout=5)
    assert status.status_code == 200, status.text
    # the launcher's own calls carry the key
    assert {m["name"] for m in locked.model_index()} == {"iris"}
    assert locked.reload_model("iris") is True
    locked.wait_ready_models(["iris"], timeout=30)


def test_sdk_sends_the_keys_over_http(locked, monkeypatch):
    with PatternClient(locked.http_url, api_key=API, admin_key=ADMIN) as client:
        assert client.synchronous(VIRGINICA).label == "virginica"
        assert "iris" in {m.name for m in client.models()}
    with PatternClient(locked.http_url, api_key="wrong-key-0123456789") as client:
        with pytest.raises(PatternError, match="restricted"):
            client.synchronous(VIRGINICA)
    monkeypatch.setenv(API_KEY_ENV, API)  # the SDK's default: the environment
    with PatternClient(locked.http_url) as client:
        assert client.synchronous(VIRGINICA, version=1).label == "virginica"


def test_grpc_over_tls_with_the_keys(locked, certs):
    if certs is None:
        pytest.skip("no openssl to make a certificate")
    cert, _ = certs
    with PatternClient(locked.grpc_url, "grpc", root_certificates=str(cert), api_key=API, admin_key=ADMIN) as client:
        prediction = client.synchronous(VIRGINICA)
        assert prediction.label == "virginica" and np.isclose(prediction.scores.sum(), 1, atol=1e-4)
        assert "iris" in {m.name for m in client.models()}
    with PatternClient(locked.grpc_url, "grpc", root_certificates=str(cert)) as client:
        with pytest.raises(PatternError, match="restricted"):  # TLS alone does not open inference
            client.synchronous(VIRGINICA)
    with PatternClient(locked.grpc_url, "grpc", api_key=API, timeout_s=5) as client:
        with pytest.raises(PatternError):  # a plain channel to a TLS port
            client.synchronous(VIRGINICA)

    async def over_asyncio():
        async with AsyncPatternClient(locked.grpc_url, "grpc", root_certificates=str(cert), api_key=API) as client:
            return (await client.synchronous(VIRGINICA)).label

    assert asyncio.run(over_asyncio()) == "virginica"


def test_readiness_probe_sends_the_api_key(locked, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API)
    assert probe.main(["--url", locked.http_url, "--expect", "LABEL=0"]) == 0
    assert probe.main(["--url", locked.http_url, "--data", ",".join(map(str, VIRGINICA)), "--expect", "LABEL=2"]) == 0
    monkeypatch.delenv(API_KEY_ENV)
    assert probe.main(["--url", locked.http_url]) == 1


def test_by_default_the_repository_api_is_locked_and_inference_open(default):
    assert _refused(_post(default, "/v2/repository/index"))
    assert _refused(_post(default, "/v2/repository/models/iris/unload"))
    assert _post(default, "/v2/models/iris/infer", json=INFER).status_code == 200
    assert {m["name"] for m in default.model_index()} == {"iris"}
    with PatternClient(default.http_url) as client:  # the configured admin key (variable or key file)
        assert {m.name for m in client.models()} == {"iris"}
    with PatternClient(default.http_url, admin_key="not-the-admin-key-123") as client:
        with pytest.raises(Exception, match="restricted"):
            client.models()
