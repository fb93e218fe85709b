"""Session fixtures: a real tritonserver on the project's repository and a real Redis, both on
free ports on 127.0.0.1, stopped at the end of the run; and the project's compose stack in
containers (container_stack.py), started once when a test first needs it, stopped at the end.

One suite, two targets: a test marked `container` runs twice, against the embedded server
(`[embedded]`) and through the container stack's TLS gateway (`[container]`, marked
`container_stack`: `-m "not container_stack"` leaves every container test out), from the same code,
by the `target` fixture its `client`, `grpc_client` and `async_client_factory` are made from.
Where no container engine can run, the `[container]` instances are skipped with the reason.
Tests that need the embedded server's internals (its log, pid, own models) use `triton` and
stay embedded-only.

A server that dies during a test fails that test with the death (signal or exit code, ports, log
tail) and is restarted for the next ones, so one crash is reported where it happened instead of
failing every later test with "connection refused"; the same for the stack's triton container
(stopped or restarted during the test)."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field

import pytest
import tritonclient.http as httpclient
from container_stack import BUILD_TIMEOUT_S, UP_TIMEOUT_S, engine_or_reason
from container_stack import container_stack as start_container_stack

from pattern_runtime import paths
from pattern_runtime.processes import wait_for
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.stack import Stack
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
    server = ServerSettings(restart_on_death=True, max_restarts=3)
    with contextlib.closing(Stack(store=tmp_path_factory.mktemp("store") / "data_store.sqlite", seed_digits=40,
                                  server=server)) as stack:
        yield stack


@pytest.fixture(scope="session")
def redis_server(session_stack):
    return session_stack.redis


@pytest.fixture(scope="session")
def data_store_path(session_stack):
    return session_stack.store


@pytest.fixture(scope="session")
def triton(session_stack):
    missing = [p for p in EXPORTED if not (paths.model_folder(p.split("/")[0]) / p.split("/", 1)[1]).exists()]
    if missing:
        pytest.fail(f"exported models are missing ({', '.join(missing)}): run `make models` first")
    return session_stack.triton


CONTAINER = "container"
EMBEDDED = "embedded"
STOPS_THE_STACK = "stops_container_stack"


def pytest_configure(config):
    for marker in (f"{CONTAINER}: runs against the embedded server and the container stack (the `target` fixture)",
                   "container_stack: needs a container engine "
                   "(the compose stack, started once per session; the kube pod)",
                   f"{STOPS_THE_STACK}: stops the container stack: runs after every other test"):
        config.addinivalue_line("markers", marker)


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames and metafunc.definition.get_closest_marker(CONTAINER):
        # the first test to need the stack may build the images and start it (docs/deploy.md: times)
        in_containers = pytest.param(CONTAINER, marks=[pytest.mark.container_stack,
                                                       pytest.mark.timeout(BUILD_TIMEOUT_S + UP_TIMEOUT_S)])
        metafunc.parametrize("target", [EMBEDDED, in_containers], indirect=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """The container tests run together at the end, so the stack runs only then (not beside the whole
    suite): those on the stack, then the one that stops it, then the others (the kube pod). The
    sort is stable: every other test keeps its place (a module's tests may rely on their order)."""
    def order(item) -> tuple[int, int]:
        if item.get_closest_marker(STOPS_THE_STACK):
            return 1, 1
        if item.get_closest_marker("container_stack") is None:
            return 0, 0
        return 1, 0 if {"container_stack", "target"} & set(item.fixturenames) else 2
    items.sort(key=order)


@pytest.fixture(scope="session")
def container_stack(tmp_path_factory):
    """The compose stack (container_stack.py), once per session: skipped with the reason where no
    container engine can run."""
    engine, reason = engine_or_reason()
    if engine is None:
        pytest.skip(reason)
    with start_container_stack(engine, tmp_path_factory.mktemp("containers")) as stack:
        yield stack


@dataclass(frozen=True)
class Target:
    """Where a test's clients connect: the embedded tritonserver and Redis, or the container stack
    (its TLS gateway, its Redis and Triton's metrics port published on the host's loopback)."""

    name: str
    http_url: str
    grpc_url: str
    metrics_url: str
    redis_url: str
    client_options: dict = field(default_factory=dict)  # PatternClient keywords: certificate, admin key

    def client(self, protocol: str = "http") -> PatternClient:
        return PatternClient(self.url(protocol), protocol=protocol, **self.client_options)

    def async_client(self, protocol: str) -> AsyncPatternClient:
        return AsyncPatternClient(self.url(protocol), protocol, **self.client_options)

    def url(self, protocol: str) -> str:
        return self.http_url if protocol == "http" else self.grpc_url


def target_name(request) -> str:
    callspec = getattr(request.node, "callspec", None)
    return callspec.params.get("target", EMBEDDED) if callspec else EMBEDDED


@pytest.fixture()
def target(request) -> Target:
    """The embedded server, or the container stack for a `container` test's `[container]` instance."""
    if target_name(request) == EMBEDDED:
        server, redis = request.getfixturevalue("triton"), request.getfixturevalue("redis_server")
        return Target(EMBEDDED, server.http_url, server.grpc_url, server.metrics_url, redis.url)
    stack = request.getfixturevalue("container_stack")
    port = stack.ports
    return Target(CONTAINER, f"127.0.0.1:{port['GATEWAY_HTTPS_PORT']}", f"127.0.0.1:{port['GATEWAY_GRPC_PORT']}",
                  f"http://127.0.0.1:{port['TRITON_METRICS_PORT']}/metrics", f"redis://127.0.0.1:{port['REDIS_PORT']}/0",
                  {"root_certificates": str(stack.cert), "admin_key": stack.admin_key})


@pytest.fixture(autouse=True)
def _container_deaths_fail_the_test(request):
    """Fails a `[container]` test during which the stack's triton container stopped or restarted."""
    if "target" not in request.fixturenames or target_name(request) != CONTAINER:
        yield
        return
    stack = request.getfixturevalue("container_stack")
    before = stack.state("triton")
    yield
    after = stack.state("triton")
    if after != before:
        pytest.fail(f"the stack's triton container changed during this test: {before!r} -> {after!r}; "
                    f"its log:\n{stack.logs('triton')}")


@pytest.fixture(autouse=True)
def _server_deaths_fail_the_test(request):
    """Fails the test during which the session server or Redis died, with what the log says;
    a test that starts while the server restarts waits for it (a failure says it never came back)."""
    embedded_target = "target" in request.fixturenames and target_name(request) == EMBEDDED
    if "triton" not in request.fixturenames and not embedded_target:
        yield
        return
    server = request.getfixturevalue("triton")
    redis = request.getfixturevalue("redis_server")
    if not wait_for(server.is_ready, 180, interval=0.5):
        pytest.fail(f"the session tritonserver (HTTP {server.http_port}) is not ready: "
                    + (str(server.deaths[-1]) + "\n" + server.deaths[-1].log_tail if server.deaths
                       else server.log_tail()))
    deaths = len(server.deaths)
    yield
    for died in server.deaths[deaths:]:
        pytest.fail(f"{died} during this test (ports HTTP {server.http_port}, gRPC {server.grpc_port}); "
                    f"last lines of {server.log_path}:\n{died.log_tail}")
    if redis.pid is not None and not redis.is_running():  # tests that stop Redis start it again
        pytest.fail(f"the session redis-server (port {redis.port}, pid {redis.pid}) died during this test; "
                    f"last lines of its log:\n{redis.log_tail()}")


@pytest.fixture()
def client(target):
    with target.client() as c:
        yield c


@pytest.fixture()
def grpc_client(target):
    with target.client("grpc") as c:
        yield c


@pytest.fixture()
def async_client_factory(target):
    return target.async_client


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
        folder = paths.model_folder(source)
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
