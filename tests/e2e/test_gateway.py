"""The nginx gateway in front of tritonserver: TLS for HTTP and gRPC, the API and admin
keys, the rate limit's 429, the body limit, JSON error bodies and the access log, each through a
real nginx (Debian's, with its njs module) and a real tritonserver, with curl and the SDKs.
The declared-shape battery is in test_fuzz.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import requests

from pattern_runtime.datasets.digits import encode_digit_png, load_test_split
from pattern_runtime.gateway import Gateway, self_signed_certificate
from triton_patterns.client import AsyncPatternClient, PatternClient, PatternError

pytestmark = pytest.mark.e2e

API_KEY = "gateway-api-key-123"
SETOSA = [5.1, 3.5, 1.4, 0.2]


def _body(row=SETOSA, shape=(1, 4)) -> str:
    return json.dumps({"inputs": [{"name": "FEATURES", "shape": list(shape), "datatype": "FP32", "data": row}]})


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """(status, headers in lower case, body) of one curl call."""
    done = subprocess.run(["curl", "-s", "-i", "--max-time", "30", *args], capture_output=True, text=True, check=True)
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("gateway-tls"))


@pytest.fixture(scope="module")
def certs(tls):
    return tls.cert, tls.key


@pytest.fixture(scope="module")
def locked_gateway(triton, tls):
    # the admin key: tritonserver's own, which it checks too behind the gateway
    with Gateway(triton.http_url, triton.grpc_url, tls=tls, api_key=API_KEY,
                 admin_key=triton.access.admin_key) as gateway:
        yield gateway


def test_https_needs_the_api_key_and_answers_with_it(locked_gateway, certs):
    url = f"{locked_gateway.http_url}/v2/models/iris/infer"
    status, headers, body = curl("--cacert", str(certs[0]), "-d", _body(), url)
    assert status == 401 and headers["content-type"] == "application/json", body
    assert "triton-patterns-api-key" in json.loads(body)["error"]
    status, _, body = curl("--cacert", str(certs[0]), "-H", f"triton-patterns-api-key: {API_KEY}", "-d", _body(), url)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [0]  # LABEL: setosa
    # plain HTTP to the TLS port is refused
    status, _, _ = curl("-d", _body(), url.replace("https://", "http://"))
    assert status == 400


def test_admin_apis_need_the_admin_key(triton, locked_gateway, certs):
    url = f"{locked_gateway.http_url}/v2/repository/index"
    status, _, body = curl("--cacert", str(certs[0]), "-X", "POST", "-H", f"triton-patterns-api-key: {API_KEY}", url)
    assert status == 401 and "admin" in json.loads(body)["error"]
    status, _, body = curl("--cacert", str(certs[0]), "-X", "POST",
                           "-H", f"triton-patterns-admin-key: {triton.access.admin_key}", url)
    assert status == 200 and any(m["name"] == "iris" for m in json.loads(body)), body
    status, _, _ = curl("--cacert", str(certs[0]), f"{locked_gateway.http_url}/v2/health/ready")
    assert status == 200  # health stays open for load balancers


def test_https_through_the_gateway_with_the_sdk_sync_and_asyncio(locked_gateway, certs):
    with PatternClient(locked_gateway.http_address, root_certificates=str(certs[0]), api_key=API_KEY) as client:
        assert client.synchronous(SETOSA).label == "setosa"

    async def call():
        async with AsyncPatternClient(locked_gateway.http_address, root_certificates=str(certs[0]),
                                      api_key=API_KEY) as client:
            return (await client.synchronous(SETOSA)).label

    assert asyncio.run(call()) == "setosa"


def test_grpc_over_tls_through_the_gateway_with_the_sdk(locked_gateway, certs):
    with PatternClient(locked_gateway.grpc_address, protocol="grpc", root_certificates=str(certs[0]),
                       api_key=API_KEY) as client:
        assert client.synchronous(SETOSA).label == "setosa"
        assert client.serial_bls([6.7, 3.0, 5.2, 2.3]).label == "virginica"
    with PatternClient(locked_gateway.grpc_address, protocol="grpc", root_certificates=str(certs[0]),
                       api_key="not-the-key-000") as client:
        with pytest.raises(PatternError, match="UNAUTHENTICATED|key"):
            client.synchronous(SETOSA)


def test_a_client_over_its_rate_gets_429_with_a_json_reason(triton):
    with Gateway(triton.http_url, triton.grpc_url, rate="1r/s", burst=3) as gateway:
        statuses = [requests.post(f"{gateway.http_url}/v2/models/iris/infer", data=_body(), timeout=30)
                    for _ in range(8)]
        codes = [r.status_code for r in statuses]
        assert codes[:4] == [200] * 4 and 429 in codes[4:], codes  # the burst of 3 beyond the rate, then 429
        refused = next(r for r in statuses if r.status_code == 429)
        assert refused.headers["Content-Type"] == "application/json" and refused.headers["Retry-After"] == "1"
        assert "rate limit" in refused.json()["error"]
        with PatternClient(gateway.grpc_address, protocol="grpc") as client:
            errors = []
            for _ in range(8):
                try:
                    client.synchronous(SETOSA)
                except PatternError as exc:
                    errors.append(str(exc))
            assert any("RESOURCE_EXHAUSTED" in e or "rate limit" in e for e in errors), errors
        logged = [e["status"] for e in gateway.access_log_entries()]
        assert logged.count(429) >= codes.count(429)


def test_a_body_over_the_limit_is_413_json(triton):
    with Gateway(triton.http_url, triton.grpc_url, body_limit="1k") as gateway:
        reply = requests.post(f"{gateway.http_url}/v2/models/iris/infer", data=_body([1.0] * 400, (100, 4)), timeout=30)
        assert reply.status_code == 413 and reply.headers["Content-Type"] == "application/json"
        assert "1k" in reply.json()["error"]
        assert requests.post(f"{gateway.http_url}/v2/models/iris/infer", data=_body(), timeout=30).status_code == 200


@pytest.fixture(scope="module")
def gateway(triton):
    with Gateway(triton.http_url, triton.grpc_url) as gateway:
        yield gateway


def test_tritons_errors_come_out_as_json_and_the_access_log_names_model_status_latency(triton, gateway):
    direct = requests.post(f"http://{triton.http_url}/v2/models/iris_failing/infer", data=_body(), timeout=30)
    through = requests.post(f"{gateway.http_url}/v2/models/iris_failing/infer", data=_body(), timeout=30)
    assert direct.status_code == through.status_code >= 400
    assert not direct.headers["Content-Type"].startswith("application/json")  # Triton 2.51's own
    assert through.headers["Content-Type"] == "application/json"
    assert "injected failure" in through.json()["error"]
    ok = requests.post(f"{gateway.http_url}/v2/models/iris/versions/1/infer", data=_body(), timeout=30)
    assert ok.status_code == 200
    entries = gateway.access_log_entries()
    by_model = {e["model"]: e for e in entries}
    assert by_model["iris_failing"]["status"] == through.status_code
    assert by_model["iris"]["status"] == 200 and by_model["iris"]["uri"] == "/v2/models/iris/versions/1/infer"
    assert 0 <= by_model["iris"]["request_time"] < 30 and by_model["iris"]["upstream_time"] != ""


def test_the_sdk_over_http_through_the_gateway(gateway):
    """JSON and the binary extension (the SDK's default; PNG bytes) both pass the shape check."""
    images, labels = load_test_split()
    with PatternClient(gateway.http_address) as client:
        assert client.synchronous(SETOSA).label == "setosa"
        assert client.serial("The goalkeeper saved a penalty in the last minute.").label == "sports"
        for i in range(3):
            assert client.prep_pred(encode_digit_png(images[i])).label == str(labels[i])


def test_serve_with_the_gateway_over_tls_and_its_stop(tmp_path, tls):
    """`triton-patterns serve --tls-cert --tls-key`: the gateway on the serve ports, tritonserver
    on loopback behind it; SIGTERM stops nginx, tritonserver and Redis."""
    from test_new_user import Served  # the `serve` subprocess of the new-user test

    served = Served(tmp_path, "--tls-cert", str(tls.cert), "--tls-key", str(tls.key))
    try:
        served.wait_ready()
        banner = served.banner()
        assert f"gateway  https://127.0.0.1:{served.http}" in banner, banner
        status, _, body = curl("--cacert", str(tls.cert), "-d", _body(), f"https://127.0.0.1:{served.http}/v2/models/iris/infer")
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [0], body
        with PatternClient(f"127.0.0.1:{served.grpc}", protocol="grpc", root_certificates=str(tls.cert)) as client:
            assert client.synchronous(SETOSA).label == "setosa"
        nginx = [p for p in served_children(served.proc.pid) if p[1] == "nginx"]
        assert nginx, "no nginx under serve"
    finally:
        served.stop()
    assert served.proc.returncode == 0
    assert not [p for p in nginx if Path(f"/proc/{p[0]}").exists()], "nginx left running"


def served_children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the processes whose parent is `pid` or one of its children."""
    found, parents = [], {pid}
    for _ in range(3):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
                if int(rest[1]) in parents and int(entry.name) not in {p for p, _ in found}:
                    found.append((int(entry.name), name))
        parents |= {p for p, _ in found}
    return found
