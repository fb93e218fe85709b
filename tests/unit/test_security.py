"""Access keys and TLS (security.py) on the server side (flags), the client side (headers,
TLS options), in the launcher, the Docker spec, the image entry point and the readiness probe."""

from __future__ import annotations

import json
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pattern_kernel import container, probe
from pattern_kernel.access import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    ADMIN_KEY_FILE_ENV,
    API_HEADER,
    API_KEY_ENV,
    GRPC_ROOT_CERT_ENV,
    Access,
    GrpcTls,
    tls_from_env,
)
from pattern_kernel.server_command import common_server_flags
from pattern_runtime import admin_key
from pattern_runtime.docker_server import docker_container_spec
from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_settings import ServerSettings
from triton_patterns import credentials
from triton_patterns.client import PatternClient
from triton_patterns.credentials import KeyHeaders

ADMIN = "admin-key-0123456789"
API = "api-key-0123456789"


@pytest.fixture(autouse=True)
def key_env(monkeypatch, tmp_path):
    """No key from the environment; the key file in tmp_path."""
    for name in (ADMIN_KEY_ENV, API_KEY_ENV, GRPC_ROOT_CERT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ADMIN_KEY_FILE_ENV, str(tmp_path / "keys" / "admin.key"))
    return tmp_path / "keys" / "admin.key"


def test_flags_restrict_admin_apis_and_with_an_api_key_inference():
    admin_only = Access(admin_key=ADMIN).server_flags()
    group = f"model-repository,shared-memory,logging,trace:{ADMIN_HEADER}={ADMIN}"
    assert admin_only == [f"--http-restricted-api={group}", f"--grpc-restricted-protocol={group}"]
    both = Access(admin_key=ADMIN, api_key=API).server_flags()
    assert f"--http-restricted-api=inference,metadata,model-config,statistics:{API_HEADER}={API}" in both
    assert f"--grpc-restricted-protocol=inference,metadata,model-config,statistics:{API_HEADER}={API}" in both
    assert len(both) == 4
    assert Access().server_flags() == [] and Access().headers() == {}
    assert Access(admin_key=ADMIN, api_key=API).headers() == {ADMIN_HEADER: ADMIN, API_HEADER: API}


@pytest.mark.parametrize("kwargs, match", [
    ({"admin_key": "short"}, "at least 8"),
    ({"api_key": "has:colon=and-more"}, "at least 8"),
    ({"admin_key": ADMIN, "admin_apis": ("inference",), "api_key_apis": ("inference",)}, "one restricted group"),
    ({"admin_apis": ("repository",)}, "unknown Triton APIs"),
])
def test_access_refuses_what_tritonserver_would(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Access(**kwargs)


def test_admin_key_file_created_once_0600_and_shared(key_env):
    assert credentials.configured_admin_key() is None  # a client never creates it
    assert admin_key.configured_admin_key() is None
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: admin_key.configured_admin_key(create=True), range(16)))
    assert len(keys) == 1 and key_env.read_text().strip() in keys
    assert key_env.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in key_env.parent.iterdir()] == ["admin.key"]  # no temporary files left
    assert credentials.client_headers() == {ADMIN_HEADER: keys.pop()}


def test_environment_wins_over_the_key_file(monkeypatch, key_env):
    admin_key.configured_admin_key(create=True)
    monkeypatch.setenv(ADMIN_KEY_ENV, ADMIN)
    monkeypatch.setenv(API_KEY_ENV, API)
    assert credentials.client_headers() == {ADMIN_HEADER: ADMIN, API_HEADER: API}
    assert credentials.client_headers(api_key="other-key-123", admin_key="another-key-456") == {
        ADMIN_HEADER: "another-key-456", API_HEADER: "other-key-123"}
    monkeypatch.setenv(ADMIN_KEY_ENV, "bad key")
    with pytest.raises(ValueError, match=ADMIN_KEY_ENV):
        credentials.configured_admin_key()
    with pytest.raises(ValueError, match=ADMIN_KEY_ENV):
        admin_key.configured_admin_key(create=True)


def test_a_client_without_the_key_file_variable_sends_no_admin_key(monkeypatch, key_env):
    admin_key.configured_admin_key(create=True)
    monkeypatch.delenv(ADMIN_KEY_FILE_ENV)
    assert credentials.admin_key_file() is None and credentials.client_headers() == {}


def test_plugin_adds_headers_without_overriding_explicit_ones():
    class Request:
        headers = {API_HEADER: "explicit"}

    KeyHeaders({ADMIN_HEADER: ADMIN, API_HEADER: API})(Request)
    assert Request.headers == {API_HEADER: "explicit", ADMIN_HEADER: ADMIN}


def test_sdk_clients_carry_the_keys_and_tls_options(monkeypatch, tmp_path):
    monkeypatch.setenv(API_KEY_ENV, API)
    http = PatternClient("127.0.0.1:1", admin_key=ADMIN)
    assert http.client.plugin().headers == {ADMIN_HEADER: ADMIN, API_HEADER: API}
    http.close()
    grpc = PatternClient("127.0.0.1:1", "grpc", admin_key=ADMIN)  # gRPC: Triton checks prefixed metadata keys
    assert grpc.client.plugin().headers == {f"triton-grpc-protocol-{ADMIN_HEADER}": ADMIN,
                                            f"triton-grpc-protocol-{API_HEADER}": API}
    grpc.close()
    cert = tmp_path / "ca.pem"
    cert.write_text("not checked before a call")
    assert credentials.grpc_client_options() == {}
    assert credentials.grpc_client_options(root_certificates=cert) == {"ssl": True, "root_certificates": str(cert)}
    monkeypatch.setenv(GRPC_ROOT_CERT_ENV, str(cert))
    assert credentials.grpc_client_options() == {"ssl": True, "root_certificates": str(cert)}
    assert credentials.grpc_client_options(ssl=False) == {}
    # HTTPS (the gateway's): a factory of gevent SSL contexts for the sync client, a context for aiohttp
    assert credentials.http_client_options() == {}
    sync = credentials.http_client_options(root_certificates=cert)
    assert sync["ssl"] is True and sync["ssl_context_factory"].keywords == {"cafile": str(cert)}
    aio = credentials.http_client_options(ssl=True, asynchronous=True)
    assert aio["ssl"] is True and aio["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_tls_flags_and_from_env(tmp_path):
    tls = GrpcTls(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem", mutual=True)
    assert tls.server_flags() == [
        "--grpc-use-ssl=true", f"--grpc-server-cert={tmp_path / 'c.pem'}", f"--grpc-server-key={tmp_path / 'k.pem'}",
        f"--grpc-root-cert={tmp_path / 'ca.pem'}", "--grpc-use-ssl-mutual=true"]
    with pytest.raises(ValueError, match="mutual"):
        GrpcTls(Path("c"), Path("k"), mutual=True)
    prefix = "TRITON_PATTERNS_GRPC_TLS_"
    assert tls_from_env({}) is None
    assert tls_from_env({prefix + "CERT": "/c", prefix + "KEY": "/k"}) == GrpcTls(Path("/c"), Path("/k"))
    with pytest.raises(ValueError, match="KEY"):
        tls_from_env({prefix + "CERT": "/c"})


def test_launcher_restricts_admin_apis_by_default(tmp_path, key_env):
    server = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path))
    key = key_env.read_text().strip()  # created by the launcher
    cmd = server.command()
    assert f"--http-restricted-api=model-repository,shared-memory,logging,trace:{ADMIN_HEADER}={key}" in cmd
    assert not any(API_HEADER in a for a in cmd)  # inference open without an API key
    assert server.access.headers() == {ADMIN_HEADER: key}

    locked = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path, admin_key=ADMIN,
                                         api_key=API,
                                         grpc_tls=GrpcTls(tmp_path / "c.pem", tmp_path / "k.pem")))
    assert sum(API_HEADER in a for a in locked.command()) == 2 and "--grpc-use-ssl=true" in locked.command()
    open_server = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path,
                                              restrict_admin_apis=False))
    assert not any("restricted" in a for a in open_server.command())
    assert common_server_flags() == common_server_flags(access=Access())


def test_docker_spec_restricts_and_mounts_tls_files(tmp_path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    spec = docker_container_spec(model_repository=tmp_path, project_backends=tmp_path,
                                 access=Access(admin_key=ADMIN), grpc_tls=GrpcTls(cert, key, cert))
    binds = {v["bind"]: k for k, v in spec["volumes"].items()}
    assert binds["/run/triton-patterns/tls/cert.pem"] == str(cert)
    assert binds["/run/triton-patterns/tls/key.pem"] == str(key)
    assert "--grpc-server-cert=/run/triton-patterns/tls/cert.pem" in spec["command"]
    assert "--grpc-root-cert=/run/triton-patterns/tls/cert.pem" in spec["command"]  # one file, one mount
    restricted = f"--grpc-restricted-protocol=model-repository,shared-memory,logging,trace:{ADMIN_HEADER}={ADMIN}"
    assert restricted in spec["command"]


def test_container_entry_point_from_environment():
    env = {"MODEL_REPOSITORY": "s3://bucket/repo", ADMIN_KEY_ENV: ADMIN, API_KEY_ENV: API,
           "MODEL_CONTROL_MODE": "explicit", "LOAD_MODELS": "iris, digits", "CACHE_SIZE_BYTES": "0",
           "TRITON_ARGS": "--log-verbose=1 --exit-timeout-secs=5",
           "TRITON_PATTERNS_GRPC_TLS_CERT": "/tls/c.pem", "TRITON_PATTERNS_GRPC_TLS_KEY": "/tls/k.pem"}
    cmd = container.command_from_env(env, ["--http-thread-count=4"])
    assert cmd[:3] == ["tritonserver", "--model-repository=s3://bucket/repo",
                       "--backend-directory=/opt/tritonserver/backends"]
    for flag in ("--model-control-mode=explicit", "--load-model=iris", "--load-model=digits", "--grpc-use-ssl=true",
                 f"--http-restricted-api=inference,metadata,model-config,statistics:{API_HEADER}={API}"):
        assert flag in cmd
    assert not any(a.startswith("--cache-config") for a in cmd)
    assert cmd[-3:] == ["--log-verbose=1", "--exit-timeout-secs=5", "--http-thread-count=4"]
    assert not any(ADMIN in a or API in a for a in container.masked(cmd))

    default = container.command_from_env({}, [])
    assert "--model-repository=/models" in default
    locked = [a for a in default if a.startswith("--http-restricted-api=")]
    assert len(locked) == 1 and locked[0].startswith("--http-restricted-api=model-repository,")  # random key


@pytest.mark.parametrize("version, passed", [("2.62.0", True), ("2.59.0", True), ("2.51.0", False), (None, False)])
def test_container_passes_the_input_size_limit_only_to_a_server_that_knows_it(version, passed):
    env = {container.MAX_INPUT_ENV: "67108864", **({container.VERSION_ENV: version} if version else {})}
    flags, notes = container.version_flags(env)
    assert ("--http-max-input-size=67108864" in container.command_from_env(env, [])) == passed
    assert flags == (["--http-max-input-size=67108864"] if passed else [])
    assert (notes == []) == passed and all(container.MAX_INPUT_ENV in n and "2.59" in n for n in notes)


def test_container_refuses_an_input_size_limit_that_is_not_a_number():
    with pytest.raises(ValueError, match=container.MAX_INPUT_ENV):
        container.command_from_env({container.MAX_INPUT_ENV: "64m", container.VERSION_ENV: "2.62.0"}, [])


def test_container_print(monkeypatch, capsys):
    monkeypatch.setenv(ADMIN_KEY_ENV, ADMIN)
    assert container.main(["--print"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0] == "tritonserver" and any(a.endswith(f"{ADMIN_HEADER}=***") for a in printed)


# --------------------------------------------------------------------------- readiness probe


class _FakeTriton(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict]] = {}
    seen: list[dict] = []
    health = 200  # GET /v2/health/ready

    def do_GET(self):  # http.server's name
        type(self).seen.append({"path": self.path, "key": self.headers.get(API_HEADER)})
        self.send_response(self.health if self.path == "/v2/health/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):  # http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "body": body, "key": self.headers.get(API_HEADER)})
        status, answer = self.answers.get(self.path.split("/")[3], (404, {"error": "unknown model"}))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_triton():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeTriton.seen.clear()
    _FakeTriton.health = 200
    yield server, _FakeTriton
    server.shutdown()
    server.server_close()


def _outputs(label, probabilities):
    return {"outputs": [{"name": "LABEL", "datatype": "INT64", "shape": [1], "data": [label]},
                        {"name": "PROBABILITIES", "datatype": "FP32", "shape": [1, 3], "data": probabilities}]}


def test_probe_infers_and_checks_the_answer(fake_triton, monkeypatch, capsys):
    server, handler = fake_triton
    url = f"127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(API_KEY_ENV, API)
    handler.answers = {"iris": (200, _outputs(0, [0.9, 0.05, 0.05])), "wrong": (200, _outputs(2, [0.1, 0.1, 0.8])),
                       "nan": (200, _outputs(0, [float("nan"), 0, 0])),
                       "locked": (403, {"error": "This API is restricted"})}
    assert probe.main(["--url", url]) == 0
    assert handler.seen[0] == {"path": "/v2/health/ready", "key": API}
    assert handler.seen[1]["path"] == "/v2/models/iris/infer" and handler.seen[1]["key"] == API
    assert handler.seen[1]["body"]["inputs"][0] == {"name": "FEATURES", "shape": [1, 4], "datatype": "FP32",
                                                    "data": [5.1, 3.5, 1.4, 0.2]}
    assert probe.main(["--url", url, "--model", "iris", "--model", "wrong", "--model", "nan", "--model", "locked",
                       "--model", "missing"]) == 1
    err = capsys.readouterr().err
    assert "wrong: LABEL = 2, expected 0" in err and "nan: output PROBABILITIES is not finite" in err
    assert "locked: HTTP 403" in err and "missing: HTTP 404" in err and "iris" not in err
    handler.health = 400  # starting or shutting down: not ready, whatever the models answer
    handler.seen.clear()
    assert probe.main(["--url", url]) == 1
    assert "server: /v2/health/ready is HTTP 400" in capsys.readouterr().err
    assert [seen["path"] for seen in handler.seen] == ["/v2/health/ready"]
    free = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTriton)
    port = free.server_address[1]
    free.server_close()
    assert probe.main(["--url", f"127.0.0.1:{port}", "--timeout", "1"]) == 1  # nothing listening


def test_the_server_image_modules_need_only_the_stdlib():
    """The image's entry point, probe and command line run in the NGC server image, which has no
    tritonclient and no numpy of ours: they import the standard library and the kernel only."""
    import ast

    package = Path(container.__file__).parent
    for module in ("container", "probe", "access", "server_command"):
        tree = ast.parse((package / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert not getattr(node, "level", 0), (module, "relative import")
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    top = name.split(".")[0]
                    assert top in sys.stdlib_module_names or top == "pattern_kernel", (module, name)

