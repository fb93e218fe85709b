"""Unit tests of the pipelines' sampled capture (pattern_kernel.capture): sampling, the entry's
tensors and links between steps, the size cap, and the CLI's text form."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pattern_kernel.capture import MIN_BYTES, Capturer, StepRecord, size
from pattern_kernel.specs import load_specs
from pattern_runtime import paths
from pattern_tools.captures import format_capture

SPECS = load_specs(paths.BACKENDS)

FEATURES = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
LABEL = np.array([[2]], dtype=np.int64)
SCORES = np.array([[0.01, 0.09, 0.9]], dtype=np.float32)


def pipeline(embedding: np.ndarray):
    """A request through two steps: encode (FEATURES -> EMBEDDING), classify (EMBEDDING -> LABEL, SCORES)."""
    steps = [
        StepRecord({"step": "encode", "model": "enc", "version": 1, "status": "ran", "ms": 1.5},
                   {"X": FEATURES}, {"EMBEDDING": embedding}),
        StepRecord({"step": "classify", "model": "cls", "version": -1, "status": "ran", "ms": 0.4},
                   {"EMBEDDING": embedding}, {"LABEL": LABEL, "SCORES": SCORES}),
    ]
    return {"FEATURES": FEATURES}, steps, {"LABEL": LABEL.copy(), "SCORES": SCORES.copy()}


def capture(max_bytes: int, embedding: np.ndarray, **kw) -> dict:
    inputs, steps, outputs = pipeline(embedding)
    fields = Capturer("m", 1.0, max_bytes).entry("r-1", inputs, outputs, steps, 2.5, False, **kw)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())  # Redis stream fields
    return fields


def parsed(fields: dict) -> dict:
    return {**fields, **{k: json.loads(fields[k]) for k in ("inputs", "outputs", "steps")}}


@pytest.mark.parametrize("rate, expected", [(0, 0), (1, 4000), (0.25, 1000), (0.01, 40)])
def test_sampling_takes_the_configured_fraction(rate, expected):
    capturer = Capturer("m", rate, MIN_BYTES, rng=random.Random(7))
    taken = sum(capturer.sampled() for _ in range(4000))
    assert abs(taken - expected) <= max(3 * (4000 * rate * (1 - rate)) ** 0.5, 0)


def test_capture_is_off_by_default_and_its_parameters_are_declared():
    for backend in ("serial", "parallel"):
        params = SPECS[backend].read("m", {"steps": "[]", "targets": "iris"})
        assert params["capture_rate"] == 0 and params["capture_max_bytes"] == 65536
        with pytest.raises(ValueError, match="capture_rate' must be <= 1"):
            SPECS[backend].read("m", {"steps": "[]", "targets": "iris", "capture_rate": "2"})
        with pytest.raises(ValueError, match=f"capture_max_bytes' must be >= {MIN_BYTES}"):
            SPECS[backend].read("m", {"steps": "[]", "targets": "iris", "capture_max_bytes": "100"})


def test_a_small_request_is_captured_whole_with_each_step_and_its_links():
    embedding = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    fields = capture(65536, embedding)
    entry = parsed(fields)
    assert (entry["kind"], entry["model"], entry["request_id"], entry["truncated"]) == ("capture", "m", "r-1", "0")
    assert entry["inputs"]["FEATURES"] == {"dtype": "float32", "shape": [1, 4], "values": [5.1, 3.5, 1.4, 0.2]}
    encode, classify = entry["steps"]
    assert (encode["step"], encode["model"], encode["version"], encode["status"]) == ("encode", "enc", 1, "ran")
    assert encode["inputs"]["X"] == {"same_as": "inputs.FEATURES"}  # the request's own tensor
    np.testing.assert_array_equal(np.float32(encode["outputs"]["EMBEDDING"]["values"]), embedding.reshape(-1))
    assert classify["inputs"]["EMBEDDING"] == {"same_as": "steps[0].outputs.EMBEDDING"}
    assert classify["outputs"]["LABEL"]["values"] == [2]
    assert classify["outputs"]["SCORES"]["values"] == [0.01, 0.09, 0.9]  # float32 at its shortest repr
    assert entry["outputs"]["LABEL"]["values"] == [2]  # the final answer, to find the request by
    assert size(fields) <= 65536


@pytest.mark.parametrize("cap", [MIN_BYTES, 2048, 8192, 65536])
def test_the_cap_holds_and_a_big_tensor_is_truncated_and_marked(cap):
    embedding = np.random.default_rng(0).normal(size=(1, 100_000)).astype(np.float32)  # ~1 MB as text
    fields = capture(cap, embedding)
    assert size(fields) <= cap
    entry = parsed(fields)
    assert entry["truncated"] == "1"
    big = entry["steps"][0]["outputs"]["EMBEDDING"]
    assert big["shape"] == [1, 100_000] and len(big["values"]) < 100_000
    assert big["truncated"].startswith(f"first {len(big['values'])} of 100000 values")
    assert big["mean"] == pytest.approx(float(embedding.mean()), abs=1e-5)
    np.testing.assert_array_equal(np.float32(big["values"]), embedding.reshape(-1)[:len(big["values"])])
    # the small tensors are whole: the final answer is always there to find the request by
    assert entry["steps"][1]["outputs"]["LABEL"]["values"] == [2]
    assert entry["outputs"]["SCORES"]["values"] == [0.01, 0.09, 0.9]
    if cap >= 8192:
        assert len(big["values"]) > cap // 20  # the room left goes to the big tensor


def test_text_bytes_bools_scalars_and_empty_tensors():
    text = np.array([["héllo".encode()], [b"\xff\xfe binary"]], dtype=object)
    steps = [StepRecord({"step": "s", "model": "t", "version": 1, "status": "ran"},
                        {"TEXT": text}, {"OK": np.array([True, False]), "N": np.int32(7), "E": np.zeros((0, 3))})]
    entry = parsed(Capturer("m", 1, 4096).entry("", {"TEXT": text}, {}, steps, 1, False))
    out = entry["steps"][0]["outputs"]
    assert entry["inputs"]["TEXT"]["values"] == ["héllo", "\ufffd\ufffd binary"]
    assert out["OK"]["values"] == [True, False] and out["N"] == {"dtype": "int32", "shape": [], "values": [7]}
    assert out["E"] == {"dtype": "float64", "shape": [0, 3], "values": []}


def _form(steps: list) -> str:
    """How much of the steps a capture kept."""
    if "step" not in steps[0]:
        return "steps omitted"
    if "inputs" not in steps[0]:
        return "steps without tensors"
    return "tensors omitted" if "omitted" in next(iter(steps[0]["inputs"].values())) else "values cut"


@pytest.mark.parametrize("count, error, cap, form", [
    (3, 5000, 20000, "values cut"),
    (30, 5000, 20000, "tensors omitted"),
    (30, 0, 4096, "steps without tensors"),
    (30, 5000, MIN_BYTES, "steps omitted"),
])
def test_whatever_the_steps_the_cap_holds(count, error, cap, form):
    """Many steps, long errors, big tensors: the values are cut, then the tensors omitted, then
    the steps' tensors left out, then the steps themselves; the cap holds throughout."""
    big = np.ones((64, 1000), dtype=np.float32)
    steps = [StepRecord({"step": f"step-{i}", "model": "m" * 40, "version": i, "status": "skipped",
                         **({"error": "x" * error} if error else {})}, {f"IN{i}": big + i}, {f"OUT{i}": big - i})
             for i in range(count)]
    fields = Capturer("m", 1, cap).entry("r" * 1000, {"BIG": big}, {"LABEL": LABEL}, steps, 1, True, "step_skipped")
    assert size(fields) <= cap
    assert fields["truncated"] == "1" and fields["reason"] == "step_skipped" and fields["fallback"] == "1"
    assert len(fields["request_id"]) <= 300
    assert _form(json.loads(fields["steps"])) == form


def test_the_text_form_shows_each_step_and_the_cut():
    embedding = np.arange(5000, dtype=np.float32).reshape(1, 5000)
    entry = parsed(capture(4096, embedding, reason="step_skipped"))
    entry.update(id="1-0", latency_ms=2.5, truncated=True)
    text = format_capture(entry)
    assert "request_id=r-1" in text and "[step_skipped]" in text and "capture_max_bytes=4096" in text
    assert "step encode -> enc v1: ran 1.5 ms" in text and "step classify -> cls v-1: ran" in text
    assert "in  EMBEDDING: = steps[0].outputs.EMBEDDING" in text
    assert "out EMBEDDING: float32[1, 5000] [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, ...]  (first " in text
    assert "out LABEL: int64[1, 1] [2]" in text


class Counter:
    """Records what `prediction_log.Writer` counts (the metric family's part)."""

    def __init__(self):
        self.counts: dict[str, float] = {}

    def metric(self, result: str):
        self.counts.setdefault(result, 0)

    def increment(self, amount: float, result: str):
        self.counts[result] += amount


def test_a_capture_lost_to_redis_being_down_is_counted_not_raised():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from pattern_kernel.prediction_log import Writer
    from pattern_runtime.processes import free_ports

    (port,) = free_ports(1)  # nothing listens there
    counter = Counter()
    writer = Writer(redis.Redis(port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)),
                    "prediction_log:m", 100, counter)
    assert counter.counts == {"written": 0, "error": 0}  # both series exist from the start
    writer.add(capture(MIN_BYTES, np.ones((1, 8), dtype=np.float32)))
    writer.add(capture(MIN_BYTES, np.ones((1, 8), dtype=np.float32)))
    writer.flush()
    assert counter.counts == {"written": 0, "error": 2} and writer.records == []
    writer.flush()  # nothing buffered: no round trip, nothing counted
    assert counter.counts == {"written": 0, "error": 2}
