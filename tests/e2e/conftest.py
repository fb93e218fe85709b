"""Session fixtures: a real tritonserver on the project's repository and a real Redis, both on
free ports on 127.0.0.1, stopped at the end of the run."""

from __future__ import annotations

import pytest

from triton_patterns import paths
from triton_patterns.client import AsyncPatternClient, PatternClient
from triton_patterns.data_store import DATA_STORE_ENV, seed_store
from triton_patterns.launcher import TritonServer
from triton_patterns.redis_server import REDIS_URL_ENV, RedisServer

EXPORTED = [
    "iris/1/model.onnx", "iris/2/model.onnx", "iris_web_single/1/model.onnx",
    "digits_classifier/1/model.onnx", "text_encoder/1/model.onnx",
    "text_classifier/1/model.onnx", "text_tokenizer/1/tokenizer.json", "heavy_mlp/1/model.onnx",
    "heavy_mlp_guarded/1/model.onnx",
]


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer(maxmemory="64mb", maxmemory_policy="allkeys-lru") as server:
        yield server


@pytest.fixture(scope="session")
def data_store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "data_store.sqlite"
    seed_store(path, digits=40)
    return path


@pytest.fixture(scope="session")
def triton(redis_server, data_store_path):
    missing = [p for p in EXPORTED if not (paths.MODEL_REPOSITORY / p).exists()]
    if missing:
        pytest.fail(f"exported models are missing ({', '.join(missing)}): run `make models` first")
    env = {REDIS_URL_ENV: redis_server.url, DATA_STORE_ENV: str(data_store_path)}
    with TritonServer(env=env) as server:
        yield server


@pytest.fixture()
def client(triton):
    with PatternClient(triton.http_url) as c:
        yield c


@pytest.fixture()
def grpc_client(triton):
    with PatternClient(triton.grpc_url, protocol="grpc") as c:
        yield c


@pytest.fixture()
def async_client_factory(triton):
    def make(protocol: str) -> AsyncPatternClient:
        return AsyncPatternClient(triton.http_url if protocol == "http" else triton.grpc_url, protocol)

    return make
