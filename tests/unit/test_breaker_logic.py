"""Unit tests of the circuit breaker's logic: state machine, failure classification, the
forced-default switch, the default answer, and the prediction log records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pattern_kernel import breaker as cb
from pattern_kernel import prediction_log as plog
from pattern_kernel.errors import StepError, StepTimeout
from pattern_kernel.model_config import TensorSpec

INVALID_ARG, INTERNAL = 3, 13


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _breaker(clock, **kw):
    changes = []
    b = cb.CircuitBreaker(failure_threshold=3, window_s=10, cool_down_s=2, clock=clock, on_change=changes.append, **kw)
    return b, changes


def test_opens_after_threshold_failures_in_window_then_half_open_probe_closes():
    clock = Clock()
    b, changes = _breaker(clock)
    for _ in range(2):
        b.release(b.acquire(), ok=False)
    assert b.state == cb.CLOSED
    b.release(b.acquire(), ok=True)  # successes do not reset the window's failures
    b.release(b.acquire(), ok=False)
    assert b.state == cb.OPEN and changes == [cb.OPEN]
    assert b.acquire() is None  # open: answer the default at once
    clock.now += 2.0
    assert b.state == cb.HALF_OPEN
    probe = b.acquire()
    assert probe == "probe" and b.acquire() is None  # one probe at a time
    b.release(probe, ok=True)
    assert b.state == cb.CLOSED and changes == [cb.OPEN, cb.HALF_OPEN, cb.CLOSED]
    assert b.acquire() == "call"


def test_failed_probe_reopens_for_a_new_cool_down():
    clock = Clock()
    b, _ = _breaker(clock)
    for _ in range(3):
        b.release(b.acquire(), ok=False)
    clock.now += 2.5
    b.release(b.acquire(), ok=False)
    assert b.state == cb.OPEN
    clock.now += 1.9
    assert b.state == cb.OPEN and b.acquire() is None
    clock.now += 0.2
    assert b.state == cb.HALF_OPEN


def test_failures_outside_the_window_do_not_count_and_late_results_are_ignored():
    clock = Clock()
    b, _ = _breaker(clock)
    stale = b.acquire()
    for _ in range(2):
        b.release(b.acquire(), ok=False)
    clock.now += 11  # those two left the window
    b.release(b.acquire(), ok=False)
    assert b.state == cb.CLOSED
    for _ in range(2):
        b.release(b.acquire(), ok=False)
    assert b.state == cb.OPEN
    clock.now += 2
    assert b.state == cb.HALF_OPEN
    b.release(stale, ok=True)  # a call from the closed state does not close a half-open circuit
    assert b.state == cb.HALF_OPEN


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        cb.CircuitBreaker(failure_threshold=0)


def test_failure_reasons():
    assert cb.failure_reason(StepTimeout("target", "m", 1, "late"), INVALID_ARG) == cb.DEADLINE
    shed = StepError("target", "heavy", 1, "Exceeds maximum queue size", INTERNAL)
    assert cb.failure_reason(shed, INVALID_ARG) == cb.OVERLOADED
    raised = RuntimeError("Model heavy - Error when running inference: Request timeout expired")
    assert cb.failure_reason(raised, INVALID_ARG) == cb.OVERLOADED
    assert cb.failure_reason(StepError("target", "m", 1, "boom", INTERNAL), INVALID_ARG) == cb.TARGET_ERROR
    bad_input = StepError("target", "m", 1, "input 'FEATURES': bad", INVALID_ARG)
    assert cb.failure_reason(bad_input, INVALID_ARG) is None


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("true", True), ("ALL", True), ("0", False), ("none", False),
    ("iris_breaker,heavy_breaker", True), ("heavy_breaker", None),
])
def test_force_default_environment_switch(value, expected):
    assert cb.forced_by_env("iris_breaker", value) is expected


def test_default_outputs_scalar_list_and_errors():
    specs = [TensorSpec("LABEL", np.int64, (1,)), TensorSpec("PROBABILITIES", np.float32, (3,))]
    rows = cb.default_outputs('{"LABEL": 0, "PROBABILITIES": [0.2, 0.3, 0.5]}', specs, "m")
    assert rows["LABEL"].tolist() == [0] and rows["LABEL"].dtype == np.int64
    assert rows["PROBABILITIES"].dtype == np.float32
    assert rows["PROBABILITIES"].tolist() == pytest.approx([0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="no value for output 'PROBABILITIES'"):
        cb.default_outputs('{"LABEL": 0}', specs, "m")
    with pytest.raises(ValueError, match="does not fit its dims"):
        cb.default_outputs('{"LABEL": 0, "PROBABILITIES": [1, 2]}', specs, "m")
    with pytest.raises(ValueError, match="not JSON"):
        cb.default_outputs("{LABEL: 0}", specs, "m")
    text = cb.default_outputs('{"NAME": "unknown"}', [TensorSpec("NAME", np.object_, (1,))], "m")
    assert text["NAME"].tolist() == [b"unknown"]


def test_prediction_log_records_small_inputs_as_rows_and_large_as_summary():
    features = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    big = np.ones((1, 512), dtype=np.float32)
    rec = plog.record("iris_breaker", "iris_flaky", 1, {"FEATURES": features, "INPUT": big},
                      {"LABEL": np.array([[0], [2]])}, 1.234, fallback=True, reason="open", reference="iris:1")
    inputs = json.loads(rec["inputs"])
    np.testing.assert_allclose(inputs["FEATURES"], features, rtol=1e-6)
    assert inputs["INPUT"]["shape"] == [1, 512] and inputs["INPUT"]["mean"] == 1.0
    assert json.loads(rec["outputs"]) == {"LABEL": [[0.0], [2.0]]}
    assert (rec["fallback"], rec["reason"], rec["latency_ms"], rec["reference"]) == ("1", "open", "1.23", "iris:1")
    assert all(isinstance(v, str) for v in rec.values())  # Redis stream fields
