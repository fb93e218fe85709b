"""End-to-end: the circuit breaker over a target whose fault is switched in Redis (fails, then
recovers for real), the forced-default switch (environment and config reload), and load
shedding on the guarded heavy model turned into flagged fallbacks by the breaker in front.
Time bounds are generous: they only tell "answered at once" from "waited for the deadline"."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from pattern_kernel.breaker import FORCE_DEFAULT_ENV
from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_settings import ServerSettings
from pattern_tools.monitoring import scrape, value
from triton_patterns.client import AsyncPatternClient, PatternClient, PatternError

pytestmark = pytest.mark.e2e

VIRGINICA = [6.7, 3.0, 5.2, 2.3]
FAULT_KEY = "fault:iris_flaky"  # model_repository/iris_flaky/config.pbtxt
DEADLINE_S = 1.0  # iris_breaker's deadline_ms
HEAVY_ROWS = 8  # heavy_mlp_guarded's max_batch_size: one request is one full batch
UNIFORM = 1 / 16  # heavy_breaker's default OUTPUT


@pytest.fixture()
def fault(redis_server):
    """fault(mode): set iris_flaky's fault ("fail", "hang", a latency in ms) or clear it (None)."""
    r = redis_server.client()

    def switch(mode):
        r.set(FAULT_KEY, mode) if mode else r.delete(FAULT_KEY)

    switch(None)
    yield switch
    switch(None)


def _timed(client, model="iris_breaker", row=VIRGINICA):
    start = time.perf_counter()
    p = client.circuit_breaker(row, model=model)
    return p, time.perf_counter() - start


def wait_closed(client, model="iris_breaker", timeout=40.0):
    """Call until the breaker answers for real (an earlier test may have left it open)."""
    deadline = time.monotonic() + timeout
    while True:
        p = client.circuit_breaker(VIRGINICA, model=model)
        if not p.fallback:
            return p
        assert time.monotonic() < deadline, f"{model} still answers the default: {p.fallback_reason}"
        time.sleep(0.25)


def _metric(triton, name, **labels):
    return value(scrape(triton.metrics_url), name, **labels) or 0.0


def _assert_default(p):
    assert p.fallback is True and p.label == "setosa" and p.class_id == 0
    np.testing.assert_allclose(p.scores, [0.3333, 0.3333, 0.3334], atol=1e-6)


def test_healthy_target_answers_for_real(client, fault):
    p = wait_closed(client)
    assert (p.label, p.fallback, p.fallback_reason) == ("virginica", False, "")
    assert p.as_dict()["fallback"] is False


def test_opens_on_a_failing_target_answers_the_default_then_closes_after_recovery(triton, client, fault):
    wait_closed(client)
    before = {r: _metric(triton, "pattern_fallbacks_total", model="iris_breaker", reason=r)
              for r in ("target_error", "open")}
    fault("fail")
    reasons = []
    for _ in range(4):  # failure_threshold 3: at most 3 target errors, then the circuit is open
        p = client.circuit_breaker(VIRGINICA)
        _assert_default(p)
        reasons.append(p.fallback_reason)
        if p.fallback_reason == "open":
            break
    assert reasons[0] == "target_error" and reasons[-1] == "open", reasons
    assert set(reasons) == {"target_error", "open"}
    assert _metric(triton, "circuit_breaker_state", model="iris_breaker") == 2
    assert _metric(triton, "pattern_fallbacks_total", model="iris_breaker", reason="target_error") == (
        before["target_error"] + reasons.count("target_error"))
    assert _metric(triton, "pattern_fallbacks_total", model="iris_breaker", reason="open") == before["open"] + 1

    fault(None)  # the target recovers; after the 2 s cool-down one probe closes the circuit
    recovered = time.monotonic()
    p = wait_closed(client, timeout=20)
    assert p.label == "virginica" and time.monotonic() - recovered < 20
    assert _metric(triton, "circuit_breaker_state", model="iris_breaker") == 0
    for _ in range(3):
        assert client.circuit_breaker(VIRGINICA).fallback is False


def test_deadline_miss_waits_for_the_deadline_then_the_open_circuit_answers_at_once(client, fault):
    wait_closed(client)
    fault("2500")  # the target now answers 2.5 s late; the deadline is 1 s
    p, took = _timed(client)
    _assert_default(p)
    assert p.fallback_reason == "deadline" and took >= DEADLINE_S * 0.9, (p.fallback_reason, took)
    for _ in range(5):
        p, took = _timed(client)
        _assert_default(p)
        if p.fallback_reason == "open":
            break
        assert p.fallback_reason == "deadline"
    assert p.fallback_reason == "open" and took < DEADLINE_S / 2, (p.fallback_reason, took)
    fault(None)
    assert wait_closed(client).label == "virginica"


def test_bad_input_is_an_error_not_a_fallback(client, fault):
    wait_closed(client)
    with pytest.raises(PatternError, match="FEATURES"):
        client.circuit_breaker([5.1, 3.5, 1.4])  # three features: refused, no fallback
    assert client.circuit_breaker(VIRGINICA).fallback is False


def test_request_over_the_targets_row_limit_is_refused(client):
    tensor = client._mod.InferInput("INPUT", [HEAVY_ROWS + 1, 512], "FP32")
    tensor.set_data_from_numpy(np.zeros((HEAVY_ROWS + 1, 512), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="at most 8 rows per request"):
        client.client.infer("heavy_breaker", [tensor])


# -- the forced-default switch: environment variable at start, config parameter by reload


@pytest.fixture(scope="module")
def forced_server(redis_server):
    """A second, small server (explicit model control) started with the environment switch
    naming heavy_breaker; its target is not even loaded: a forced breaker never calls it."""
    env = {REDIS_URL_ENV: redis_server.url, FORCE_DEFAULT_ENV: "heavy_breaker"}
    models = ["iris", "iris_flaky", "iris_breaker", "heavy_breaker"]
    settings = ServerSettings(env=env, model_control_mode="explicit", load_models=models, cache_size_bytes=None)
    with TritonServer(settings) as server:
        yield server


def test_environment_switch_forces_the_default(forced_server):
    with PatternClient(forced_server.http_url) as c:
        row = np.ones((1, 512), dtype=np.float32)
        tensor = c._mod.InferInput("INPUT", [1, 512], "FP32")
        tensor.set_data_from_numpy(row)
        result = c.client.infer("heavy_breaker", [tensor])
        assert result.as_numpy("FALLBACK").tolist() == [[True]]
        assert result.as_numpy("FALLBACK_REASON").tolist() == [[b"forced"]]
        np.testing.assert_allclose(result.as_numpy("OUTPUT"), UNIFORM)
        assert c.circuit_breaker(VIRGINICA).fallback is False  # not named in the variable


def test_config_switch_forces_the_default_without_a_restart(forced_server):
    with PatternClient(forced_server.http_url) as c:
        assert c.circuit_breaker(VIRGINICA).fallback is False
        config = c.client.get_model_config("iris_breaker")
        try:
            config["parameters"]["force_default"] = {"string_value": "true"}
            c.client.load_model("iris_breaker", config=json.dumps(config))
            p = c.circuit_breaker(VIRGINICA)
            _assert_default(p)
            assert p.fallback_reason == "forced"
        finally:
            config["parameters"]["force_default"] = {"string_value": "false"}
            c.client.load_model("iris_breaker", config=json.dumps(config))
        assert c.circuit_breaker(VIRGINICA).label == "virginica"


# -- load shedding on the guarded heavy model, and the breaker in front of it


async def _burst(url: str, model: str, requests: int) -> list:
    """`requests` concurrent requests of HEAVY_ROWS rows; each result or exception."""
    rows = np.random.default_rng(0).standard_normal((HEAVY_ROWS, 512)).astype(np.float32)
    async with AsyncPatternClient(url) as pc:
        async def one():
            tensor = http_aio.InferInput("INPUT", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            return await pc.client.infer(model, [tensor])

        return await asyncio.gather(*(one() for _ in range(requests)), return_exceptions=True)


def test_guarded_heavy_model_sheds_load_with_unavailable(triton):
    rejected_before = _metric(triton, "nv_inference_request_failure", model="heavy_mlp_guarded", reason="REJECTED")
    results = asyncio.run(_burst(triton.http_url, "heavy_mlp_guarded", 48))
    errors = [r for r in results if isinstance(r, Exception)]
    answers = [r for r in results if not isinstance(r, Exception)]
    assert answers, "some requests must be served"
    assert errors, "a burst of 48 full batches must overflow a queue of 4"
    for e in errors:
        assert isinstance(e, InferenceServerException), repr(e)
        assert e.status() == "503", (e.status(), e.message())  # UNAVAILABLE
        assert "Exceeds maximum queue size" in e.message() or "Request timeout expired" in e.message(), e.message()
    for r in answers:
        np.testing.assert_allclose(r.as_numpy("OUTPUT").sum(axis=1), 1.0, rtol=1e-4)
    # Triton 2.51 counts the queue timeouts as failures (reason REJECTED), not the full-queue refusals
    timeouts = sum("Request timeout expired" in e.message() for e in errors)
    assert _metric(triton, "nv_inference_request_failure", model="heavy_mlp_guarded",
                   reason="REJECTED") >= rejected_before + timeouts


def test_breaker_turns_shedding_into_flagged_fallbacks(triton):
    before = _metric(triton, "pattern_fallbacks_total", model="heavy_breaker", reason="overloaded")
    results = []
    for _ in range(3):  # a loaded machine may drain a burst in time: try again
        results += asyncio.run(_burst(triton.http_url, "heavy_breaker", 48))
        if _metric(triton, "pattern_fallbacks_total", model="heavy_breaker", reason="overloaded") > before:
            break
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, f"every response must be an answer or a flagged fallback: {errors[:3]}"
    reasons = []
    for r in results:
        fallback, reason, out = r.as_numpy("FALLBACK"), r.as_numpy("FALLBACK_REASON"), r.as_numpy("OUTPUT")
        assert fallback.shape == (HEAVY_ROWS, 1) and out.shape == (HEAVY_ROWS, 16)
        reason = reason[0, 0].decode()
        reasons.append(reason)
        if fallback[0, 0]:
            assert reason in ("overloaded", "open", "deadline"), reason
            np.testing.assert_allclose(out, UNIFORM)
        else:
            assert reason == ""
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)
            assert not np.allclose(out, UNIFORM)
    assert "overloaded" in reasons, sorted(set(reasons))
    assert _metric(triton, "pattern_fallbacks_total", model="heavy_breaker", reason="overloaded") > before
    if "" not in reasons:  # a starved machine may shed a whole burst: one request alone is served
        deadline = time.monotonic() + 30
        while not any(not r.as_numpy("FALLBACK")[0, 0]
                      for r in asyncio.run(_burst(triton.http_url, "heavy_breaker", 1))):
            assert time.monotonic() < deadline, "heavy_breaker never answered for real"
            time.sleep(0.3)
