"""Bad-input fuzzing: malformed requests to every model in the repository over HTTP
JSON, HTTP binary and gRPC. Each must get a client-error answer (HTTP 4xx / a gRPC client-error
status) whose message names the problem: never a 5xx, a stack trace or a hang. Requests that are
well-formed for the model's config (NaN, odd bytes, extra parameters...) may also succeed, but
never with a server error. Afterwards every pattern still answers correctly and no Python stub
process died. The count of requests tried is printed and written to reports/fuzz.json.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient.utils import InferenceServerException

from pattern_runtime import paths
from pattern_tools.demo import TEXT_SAMPLES

pytestmark = pytest.mark.e2e

NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP64": np.float64, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
         "TYPE_BOOL": np.bool_, "TYPE_STRING": np.object_, "TYPE_UINT8": np.uint8}
WIRE = {"TYPE_FP32": "FP32", "TYPE_FP64": "FP64", "TYPE_INT32": "INT32", "TYPE_INT64": "INT64",
        "TYPE_BOOL": "BOOL", "TYPE_STRING": "BYTES", "TYPE_UINT8": "UINT8"}
# gRPC statuses that say "your request is wrong" (the HTTP 4xx class)
CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE,
                 grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}
# models whose well-formed requests are slow (1.5 s fault injection), leave work behind (queued
# jobs) or are shed by design when the machine is busy (heavy_mlp_guarded's bounded queue answers
# "Request timeout expired", UNAVAILABLE): they get only requests that must be refused
NO_VALID_REQUESTS = ("slow", "async_submit", "time_difference", "failing", "cascade_strict", "flaky", "guarded")
TIMEOUT_S = 30


@dataclass
class Tally:
    tried: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)
    problems: list = field(default_factory=list)


TALLY = Tally()


@dataclass(frozen=True)
class Tensor:
    name: str
    wire: str  # KServe datatype sent
    array: np.ndarray


@dataclass(frozen=True)
class Case:
    model: str
    kind: str
    tensors: tuple[Tensor, ...]
    must_fail: bool
    names: tuple[str, ...]  # a refusal's message must name one of these
    parameters: tuple[tuple[str, str], ...] = ()


def _configs(triton) -> dict[str, dict]:
    base = f"http://{triton.http_url}"
    names = sorted({m["name"] for m in triton.model_index() if m.get("state") == "READY"})
    return {n: requests.get(f"{base}/v2/models/{n}/config", timeout=10).json() for n in names}


def _shape(config: dict, spec: dict, batch: int = 1) -> list[int]:
    dims = [4 if d == -1 else int(d) for d in spec["dims"]]
    return ([batch] if config.get("max_batch_size", 0) > 0 else []) + dims


def _fill(data_type: str, shape: list[int], value=None) -> np.ndarray:
    if data_type == "TYPE_STRING":
        return np.full(shape, b"hello" if value is None else value, dtype=object)
    return np.full(shape, 0 if value is None else value, dtype=NUMPY.get(data_type, np.float32))


def _good(config: dict, batch: int = 1) -> list[Tensor]:
    return [Tensor(s["name"], WIRE.get(s["data_type"], "FP32"), _fill(s["data_type"], _shape(config, s, batch)))
            for s in config.get("input", []) if not s.get("optional")]


def _png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (size, size)).save(out, "PNG")
    return out.getvalue()


def cases(model: str, config: dict) -> list[Case]:
    """The deterministic matrix: each kind of malformation that applies to this model."""
    inputs = [s for s in config.get("input", []) if not s.get("optional")]
    if not inputs:
        return []
    first, good = inputs[0], _good(config)
    name, shape = first["name"], _shape(config, first)
    # a streaming-only (decoupled) model is refused by the unary endpoints, whatever the tensors
    names = ("decoupled",) if config.get("model_transaction_policy", {}).get("decoupled") else (name, "input")
    valid_ok = not any(part in model for part in NO_VALID_REQUESTS)
    out: list[Case] = []

    def replace(tensor: Tensor, must_fail: bool, kind: str, parameters=()) -> None:
        if must_fail or valid_ok:
            out.append(Case(model, kind, (tensor, *good[1:]), must_fail, names, parameters))

    other = "TYPE_INT32" if first["data_type"] != "TYPE_INT32" else "TYPE_FP32"
    replace(Tensor(name, WIRE[other], _fill(other, shape)), True, "wrong_dtype")
    replace(Tensor(name, good[0].wire, _fill(first["data_type"], shape + [1])), True, "extra_dim")
    if len(shape) > 1:
        replace(Tensor(name, good[0].wire, _fill(first["data_type"], shape[:-1])), True, "missing_dim")
    if shape and shape[-1] > 0 and first["dims"] and first["dims"][-1] != -1:
        replace(Tensor(name, good[0].wire, _fill(first["data_type"], shape[:-1] + [shape[-1] + 1])), True,
                "wrong_size")
    if config.get("max_batch_size", 0) > 0:
        too_many = config["max_batch_size"] + 1
        out.append(Case(model, "batch_too_big", tuple(_good(config, too_many)), True, ("batch",)))
        replace(Tensor(name, good[0].wire, _fill(first["data_type"], [0] + shape[1:])), False, "empty_batch")
    out.append(Case(model, "missing_input", tuple(good[1:]), True, names))
    out.append(Case(model, "unknown_input", (*good, Tensor("NOT_AN_INPUT", "FP32", np.zeros([1, 1], np.float32))),
                    True, names if names == ("decoupled",) else ("NOT_AN_INPUT", "input")))
    if first["data_type"] == "TYPE_FP32":
        replace(Tensor(name, "FP32", _fill("TYPE_FP32", shape, np.nan)), False, "nan")
        replace(Tensor(name, "FP32", _fill("TYPE_FP32", shape, np.inf)), False, "inf")
    if first["data_type"] == "TYPE_STRING":
        replace(Tensor(name, "BYTES", _fill("TYPE_STRING", shape, b"\xff\xfe\xfa\x80 not utf-8")), False, "bad_utf8")
        replace(Tensor(name, "BYTES", _fill("TYPE_STRING", shape, b"")), False, "empty_bytes")
        replace(Tensor(name, "BYTES", _fill("TYPE_STRING", shape, bytes(range(256)) * 4096)), False, "1MB_bytes")
        if name == "IMAGE":
            replace(Tensor(name, "BYTES", _fill("TYPE_STRING", shape, b"\x89PNG\r\n\x1a\n garbage")), True,
                    "corrupt_image")
            replace(Tensor(name, "BYTES", _fill("TYPE_STRING", shape, _png(5000))), True, "oversized_image")
        if name == "ID":
            replace(Tensor(name, "BYTES", _fill("TYPE_STRING", shape, b"no-such-record")), True, "unknown_id")
    if valid_ok:
        out.append(Case(model, "unknown_parameters", tuple(good), False, (*names, "parameter"),
                        (("zzz_unknown", "1"), ("target", "no_such_model"))))
    return out


# --------------------------------------------------------------------------- sending


def _http_json(triton, case: Case) -> tuple[bool, str]:
    body = {"inputs": [{"name": t.name, "shape": list(t.array.shape), "datatype": t.wire,
                        "data": [v.decode("latin-1") if isinstance(v, bytes) else v for v in
                                 t.array.reshape(-1).tolist()]} for t in case.tensors]}
    if case.parameters:
        body["parameters"] = dict(case.parameters)
    text = json.dumps(body, allow_nan=True)
    reply = requests.post(f"http://{triton.http_url}/v2/models/{case.model}/infer", data=text,
                          headers={"Content-Type": "application/json"}, timeout=TIMEOUT_S)
    return _judge_status(reply.status_code, reply.text)


def _judge_status(status: int, text: str) -> tuple[bool, str]:
    if status == 501 and "decoupled" in text:  # Triton's HTTP endpoint refuses streaming-only models
        return False, text
    if status >= 500:
        raise AssertionError(f"server error {status}: {text[:300]}")
    return status == 200, text


def _http_binary(triton, case: Case) -> tuple[bool, str]:
    client = httpclient.InferenceServerClient(triton.http_url, network_timeout=TIMEOUT_S)
    try:
        tensors = []
        for t in case.tensors:
            item = httpclient.InferInput(t.name, list(t.array.shape), t.wire)
            item.set_data_from_numpy(t.array, binary_data=True)
            tensors.append(item)
        client.infer(case.model, tensors, parameters=dict(case.parameters) or None)
        return True, ""
    except InferenceServerException as exc:
        status = int(exc.status()) if exc.status() and str(exc.status()).isdigit() else 400
        return _judge_status(status, exc.message())
    finally:
        client.close()


def _grpc(grpc_client, case: Case) -> tuple[bool, str]:
    tensors = []
    for t in case.tensors:
        item = grpcclient.InferInput(t.name, list(t.array.shape), t.wire)
        item.set_data_from_numpy(t.array)
        tensors.append(item)
    try:
        grpc_client.infer(case.model, tensors, parameters=dict(case.parameters) or None, client_timeout=TIMEOUT_S)
        return True, ""
    except InferenceServerException as exc:
        code = exc.status()
        if code not in {c.name for c in CLIENT_ERRORS} and code not in {str(c) for c in CLIENT_ERRORS}:
            raise AssertionError(f"gRPC {code}: {exc.message()[:300]}") from None
        return False, exc.message()


def send(triton, grpc_client, protocol: str, case: Case) -> None:
    TALLY.tried[protocol] += 1
    try:
        if protocol == "http_json":
            answered, message = _http_json(triton, case)
        elif protocol == "http_binary":
            answered, message = _http_binary(triton, case)
        else:
            answered, message = _grpc(grpc_client, case)
    except (AssertionError, requests.RequestException) as exc:
        TALLY.problems.append(f"{protocol} {case.model} {case.kind}: {exc}")
        return
    if answered:
        TALLY.answered[protocol] += 1
        if case.must_fail:
            TALLY.problems.append(f"{protocol} {case.model} {case.kind}: accepted, expected a refusal")
    elif "Traceback" in message or not any(n.lower() in message.lower() for n in case.names):
        TALLY.problems.append(f"{protocol} {case.model} {case.kind}: unclear refusal: {message[:200]}")


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def configs(triton):
    return _configs(triton)


@pytest.fixture(scope="module")
def raw_grpc(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stubs_before(triton, configs):
    return triton.stub_pids()


PROTOCOLS = ("http_json", "http_binary", "grpc")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_kind_of_malformed_request_to_every_model_is_refused_clearly(triton, raw_grpc, configs, stubs_before,
                                                                             protocol):
    before = len(TALLY.problems)
    matrix = [c for model, config in configs.items() for c in cases(model, config)]
    assert len({c.model for c in matrix}) == len(configs), "every model gets malformed requests"
    for case in matrix:
        send(triton, raw_grpc, protocol, case)
    assert TALLY.problems[before:] == [], "\n".join(TALLY.problems[before:])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_random_tensors_are_refused_unless_they_fit_the_config(triton, raw_grpc, configs, stubs_before, protocol):
    """Property: any datatype and shape; if it does not fit the model's config, a clear refusal."""
    models = sorted(configs)
    before = len(TALLY.problems)

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(model=st.sampled_from(models), wire=st.sampled_from(sorted(WIRE)),
           shape=st.lists(st.integers(0, 6), min_size=0, max_size=4), raw=st.binary(max_size=64))
    def one(model, wire, shape, raw):
        config = configs[model]
        spec = config["input"][0]
        array = (np.full(shape, raw, dtype=object) if wire == "TYPE_STRING"
                 else np.resize(np.frombuffer(raw.ljust(8, b"\0"), np.uint8), shape).astype(NUMPY[wire]))
        fits = wire == spec["data_type"] and len(shape) == len(_shape(config, spec)) and all(
            d in (-1, s)
            for d, s in zip(([-1] if config.get("max_batch_size", 0) else []) + spec["dims"], shape, strict=True))
        required = [s for s in config["input"][1:] if not s.get("optional")]
        if fits and (required or any(p in model for p in NO_VALID_REQUESTS)):
            return  # a well-formed request to a model that must not get one (or needs more inputs)
        decoupled = config.get("model_transaction_policy", {}).get("decoupled")
        case = Case(model, "random", (Tensor(spec["name"], WIRE[wire], array),), not fits,
                    ("decoupled",) if decoupled else (spec["name"], "input"))
        send(triton, raw_grpc, protocol, case)

    one()
    assert TALLY.problems[before:] == [], "\n".join(TALLY.problems[before:])


def test_after_the_fuzzing_every_pattern_answers_and_no_stub_died(triton, client, configs, stubs_before):
    total = sum(TALLY.tried.values())
    report = {"requests": total, "per_protocol": dict(TALLY.tried), "answered": dict(TALLY.answered),
              "models": len(configs), "problems": TALLY.problems[:50], "time": time.strftime("%Y-%m-%d %H:%M")}
    paths.REPORTS.mkdir(parents=True, exist_ok=True)
    (paths.REPORTS / "fuzz.json").write_text(json.dumps(report, indent=1))
    print(f"\nfuzz: {total} malformed requests to {len(configs)} models ({dict(TALLY.tried)}); "
          f"{sum(TALLY.answered.values())} well-formed ones answered")
    assert total >= 2000, "thousands of requests"
    after = triton.stub_pids()
    assert {m: sorted(p) for m, p in after.items()} == {m: sorted(p) for m, p in stubs_before.items()}, \
        "a Python stub process died or was restarted"
    text, topic = TEXT_SAMPLES[0]
    assert client.serial(text).label == topic
    assert client.synchronous([5.1, 3.5, 1.4, 0.2]).label == "setosa"
    assert client.web_single([6.7, 3.0, 5.2, 2.3]).label == "virginica"
    assert client.data_cache("digit-0").label == client.data_cache("digit-0").label
    assert {m["name"] for m in triton.model_index() if m.get("state") == "READY"} >= set(configs)


# --------------------------------------------------------------------------- declared shapes
# A KServe v2 JSON input whose shape declares far more values than its `data` carries. Triton 2.51
# allocates the declared size before comparing it with the data (no --http-max-input-size before
# 2.59); the gateway (deploy/gateway) refuses it before it reaches tritonserver.

DECLARED = 1_000_000_000


def declared_shape_cases(model: str, config: dict) -> list[tuple[str, str]]:
    """(input name, JSON body) per input and declared shape: several ranks, each input's own datatype
    (BYTES too), four values in `data`; the other inputs well-formed."""
    good = {t.name: t for t in _good(config)}
    out = []
    for spec in config.get("input", []):
        if spec["name"] not in good:
            continue
        shape = _shape(config, spec)
        wire = good[spec["name"]].wire
        value = "hello" if wire == "BYTES" else 1
        for declared in (shape[:-1] + [DECLARED], [DECLARED], shape + [1000, 1000], shape[:-1] + [4096]):
            inputs = [{"name": t.name, "shape": list(t.array.shape), "datatype": t.wire,
                       "data": [v.decode("latin-1") if isinstance(v, bytes) else v
                                for v in t.array.reshape(-1).tolist()]}
                      for n, t in good.items() if n != spec["name"]]
            inputs.append({"name": spec["name"], "shape": declared, "datatype": wire, "data": [value] * 4})
            out.append((spec["name"], json.dumps({"inputs": inputs})))
    return out


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


def _reset_peak(pid: int) -> None:
    """Reset the process's peak resident memory (VmHWM) to its current RSS (Linux clear_refs 5)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


@pytest.fixture(scope="module")
def gateway(triton):
    from pattern_runtime.gateway import Gateway

    with Gateway(triton.http_url, triton.grpc_url) as gateway:
        yield gateway


def test_declared_shapes_are_refused_at_the_gateway_and_tritons_memory_stays_bounded(triton, gateway, configs):
    from pattern_tools.perf import datatype, sample_requests

    _reset_peak(triton.pid)
    start = _rss_mb(triton.pid)
    problems, sent = [], 0
    for model, config in configs.items():
        for name, body in declared_shape_cases(model, config):
            reply = requests.post(f"{gateway.http_url}/v2/models/{model}/infer", data=body, timeout=TIMEOUT_S)
            sent += 1
            error = reply.json().get("error", "") if reply.headers.get("Content-Type") == "application/json" else ""
            if reply.status_code != 400 or f"input '{name}'" not in error:
                problems.append(f"{model} {name}: {reply.status_code} {reply.text[:200]}")
    peak = _rss_mb(triton.pid, "VmHWM")
    print(f"\ndeclared shapes: {sent} requests to {len(configs)} models through the gateway; tritonserver "
          f"RSS {start:.0f} MB before, peak {peak:.0f} MB")
    assert problems == [], "\n".join(problems[:20])
    assert sent >= 4 * len(configs)
    assert peak - start <= 100, f"tritonserver's peak memory grew {peak - start:.0f} MB"
    # and every model still answers a well-formed request through the gateway
    unanswered = {"iris_failing", "iris_cascade_strict", "iris_time_difference_stream", "async_result"}
    client = httpclient.InferenceServerClient(gateway.http_address, network_timeout=TIMEOUT_S)
    try:
        for model in sorted(set(configs) - unanswered):
            inputs = []
            for name, array in sample_requests(model, 1)[0].items():
                tensor = httpclient.InferInput(name, list(array.shape), datatype(model, name))
                tensor.set_data_from_numpy(array, binary_data=True)
                inputs.append(tensor)
            client.infer(model, inputs)  # raises on an error answer
    finally:
        client.close()


def test_direct_to_triton_2_51_a_declared_shape_costs_its_size_in_memory(tmp_path):
    """Documents the runtime's limit the gateway is for: a 100-byte JSON request declaring 100
    million FP32 values makes tritonserver 2.51 allocate ~400 MB before refusing it (as a 500)."""
    from pattern_runtime.launcher import TritonServer
    from pattern_runtime.server_settings import ServerSettings

    body = json.dumps({"inputs": [{"name": "FEATURES", "shape": [1, 100_000_000], "datatype": "FP32",
                                   "data": [1, 2, 3, 4]}]})
    with TritonServer(ServerSettings(model_control_mode="explicit", load_models=["iris"], cache_size_bytes=None,
                      log_dir=tmp_path)) as server:
        _reset_peak(server.pid)
        start = _rss_mb(server.pid)
        reply = requests.post(f"http://{server.http_url}/v2/models/iris/infer", data=body, timeout=120)
        peak = _rss_mb(server.pid, "VmHWM")
    print(f"\ndirect: {len(body)}-byte request; tritonserver RSS {start:.0f} MB, peak {peak:.0f} MB; "
          f"answer {reply.status_code} {reply.text[:100]}")
    assert reply.status_code >= 400 and "shape" in reply.text.lower()
    assert peak - start >= 300, "Triton 2.51 allocated the declared size: if not, the runtime changed"
