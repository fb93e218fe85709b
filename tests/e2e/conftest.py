"""Session fixtures: a real tritonserver on the project's repository and a real Redis, both on
free ports on 127.0.0.1, stopped at the end of the run.

A server that dies during a test fails that test with the death (signal or exit code, ports, log
tail) and is restarted for the next ones, so one crash is reported where it happened instead of
failing every later test with "connection refused"."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
import tritonclient.http as httpclient

from pattern_runtime.processes import wait_for
from pattern_runtime.stack import Stack
from triton_patterns import paths
from triton_patterns.client import AsyncPatternClient, PatternClient

EXPORTED = [
    "iris/1/model.onnx", "iris/2/model.onnx", "iris_web_single/1/model.onnx",
    "digits_classifier/1/model.onnx", "text_encoder/1/model.onnx",
    "text_classifier/1/model.onnx", "text_tokenizer/1/tokenizer.json", "heavy_mlp/1/model.onnx",
    "heavy_mlp_guarded/1/model.onnx",
]


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory):
    """The session's stack; each part starts when a test first needs it (a test that uses only
    `redis_server` starts no tritonserver)."""
    with contextlib.closing(Stack(store=tmp_path_factory.mktemp("store") / "data_store.sqlite", seed_digits=40,
                                  restart_on_death=True, max_restarts=3)) as stack:
        yield stack


@pytest.fixture(scope="session")
def redis_server(session_stack):
    return session_stack.redis


@pytest.fixture(scope="session")
def data_store_path(session_stack):
    return session_stack.store


@pytest.fixture(scope="session")
def triton(session_stack):
    missing = [p for p in EXPORTED if not (paths.MODEL_REPOSITORY / p).exists()]
    if missing:
        pytest.fail(f"exported models are missing ({', '.join(missing)}): run `make models` first")
    return session_stack.triton


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
    test's own (repository API: the config, the model folder's files and the version's sent
    with the load) and returns that name; the copy is unloaded after the test. Its statistics count this test's
    requests only, whatever else the session calls meanwhile (a test that counts a shared model's
    statistics races every background call to it). `parameters` {key: value} set or replace
    config parameters of the copy (e.g. a feature switched on for this test only)."""
    loaded = []
    client = httpclient.InferenceServerClient(triton.http_url)

    def load(source: str, version: int = 1, parameters: dict[str, str] | None = None) -> str:
        name = re.sub(r"\W+", "_", f"{source}_{request.node.name}")[:60] + f"_{len(loaded)}"
        config = client.get_model_config(source)
        config.update(name=name, version_policy={"specific": {"versions": [version]}})
        config.setdefault("parameters", {}).update({k: {"string_value": v} for k, v in (parameters or {}).items()})
        folder = paths.MODEL_REPOSITORY / source
        sent = [f for f in folder.iterdir() if f.is_file() and f.name != "config.pbtxt"]  # e.g. labels.txt
        sent += [f for f in (folder / str(version)).iterdir() if f.is_file()]
        files = {f"file:{f.relative_to(folder)}": f.read_bytes() for f in sent}
        client.load_model(name, headers=triton.access.headers(), config=json.dumps(config), files=files)
        loaded.append(name)
        triton.wait_ready_models([name], timeout=60)
        return name

    yield load
    for name in loaded:
        triton.unload_model(name)
    client.close()
