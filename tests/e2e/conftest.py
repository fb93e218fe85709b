"""Session fixtures: a real tritonserver on the project's repository and a real Redis, both on
free ports on 127.0.0.1, stopped at the end of the run.

A server that dies during a test fails that test with the death (signal or exit code, ports, log
tail) and is restarted for the next ones, so one crash is reported where it happened instead of
failing every later test with "connection refused"."""

from __future__ import annotations

import json
import re

import pytest
import tritonclient.http as httpclient

from pattern_kernel.data_store import DATA_STORE_ENV
from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime.launcher import TritonServer
from pattern_runtime.processes import wait_for
from pattern_runtime.redis_server import RedisServer
from pattern_runtime.services import seed_store
from triton_patterns import paths
from triton_patterns.client import AsyncPatternClient, PatternClient

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
    with TritonServer(env=env, restart_on_death=True, max_restarts=3) as server:
        yield server


@pytest.fixture(autouse=True)
def _server_deaths_fail_the_test(request):
    """Fails the test during which the session server or Redis died, with what the log says;
    a test that starts while the server restarts waits for it (a failure says it never came back)."""
    if "triton" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("triton")
    redis = request.getfixturevalue("redis_server")
    if not wait_for(server.is_ready, 180, interval=0.5):
        pytest.fail(f"the session tritonserver (HTTP {server.http_port}) is not ready: "
                    + (str(server.deaths[-1]) + "\n" + server.deaths[-1].log_tail if server.deaths else server.log_tail()))
    deaths = len(server.deaths)
    yield
    for died in server.deaths[deaths:]:
        pytest.fail(f"{died} during this test (ports HTTP {server.http_port}, gRPC {server.grpc_port}); "
                    f"last lines of {server.log_path}:\n{died.log_tail}")
    if redis.pid is not None and not redis.is_running():  # tests that stop Redis start it again
        pytest.fail(f"the session redis-server (port {redis.port}, pid {redis.pid}) died during this test; "
                    f"last lines of its log:\n{redis.log_tail()}")


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


@pytest.fixture()
def own_model(triton, request):
    """`own_model("iris", version=1)` loads a copy of a repository model under a name of this
    test's own (repository API: the config and the version's files sent with the load) and
    returns that name; the copy is unloaded after the test. Its statistics count this test's
    requests only, whatever else the session calls meanwhile (a test that counts a shared model's
    statistics races every background call to it)."""
    loaded = []
    client = httpclient.InferenceServerClient(triton.http_url)

    def load(source: str, version: int = 1) -> str:
        name = re.sub(r"\W+", "_", f"{source}_{request.node.name}")[:60] + f"_{len(loaded)}"
        config = client.get_model_config(source)
        config.update(name=name, version_policy={"specific": {"versions": [version]}})
        folder = paths.MODEL_REPOSITORY / source / str(version)
        files = {f"file:{version}/{f.name}": f.read_bytes() for f in folder.iterdir() if f.is_file()}
        client.load_model(name, headers=triton.access.headers(), config=json.dumps(config), files=files)
        loaded.append(name)
        triton.wait_ready_models([name], timeout=60)
        return name

    yield load
    for name in loaded:
        triton.unload_model(name)
    client.close()
