"""`PatternModel` without a server: a stand-in for `triton_python_backend_utils` records the
responses, so the base class's execute forms, error codes and parameter errors are checked."""

from __future__ import annotations

import asyncio
import json
import sys
import types

import numpy as np
import pytest

from pattern_kernel.errors import InputError, StepError
from pattern_runtime import paths


class _Error:
    INVALID_ARG, INTERNAL, UNAVAILABLE = 3, 13, 14

    def __init__(self, message, code):
        self.message, self.code = message, code


class _Response:
    def __init__(self, output_tensors=None, error=None, parameters=None):
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


class _Metric:
    def __init__(self, labels):
        self.labels, self.value = labels, 0

    def increment(self, amount):
        self.value += amount

    def set(self, value):
        self.value = value


class _Family:
    COUNTER, GAUGE = "counter", "gauge"
    made: list = []

    def __init__(self, name, description, kind):
        self.name = name

    def Metric(self, labels):  # pb_utils' name
        metric = _Metric({"__name__": self.name, **labels})
        _Family.made.append(metric)
        return metric


class _Request:
    def __init__(self, **inputs):
        self.inputs = inputs
        self.trace_handle = object()  # what request.trace() returns: the parent of its BLS calls

    def trace(self):
        return self.trace_handle


@pytest.fixture(scope="module")
def pattern_model():
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = lambda name, array: types.SimpleNamespace(name=name, array=array)
    fake.InferenceResponse, fake.TritonError, fake.MetricFamily = _Response, _Error, _Family
    fake.InferenceRequest = lambda **kwargs: types.SimpleNamespace(**kwargs)  # a BLS request, as built
    fake.get_input_tensor_by_name = lambda request, name: (
        types.SimpleNamespace(as_numpy=lambda: request.inputs[name]) if name in request.inputs else None)
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith("pattern_kernel.")
             and k.split(".")[1] in ("triton_glue", "pattern_model")}
    sys.modules["triton_python_backend_utils"] = fake
    try:
        from pattern_kernel import pattern_model
        yield pattern_model
    finally:
        for name in ("triton_python_backend_utils", "pattern_kernel.triton_glue", "pattern_kernel.pattern_model"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def _args(parameters: dict, max_batch_size: int = 8) -> dict:
    config = {"name": "m", "backend": "fault_injection", "max_batch_size": max_batch_size,
              "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [2]}],
              "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [2]},
                         {"name": "FALLBACK", "data_type": "TYPE_BOOL", "dims": [1]}],
              "parameters": {k: {"string_value": v} for k, v in parameters.items()}}
    return {"model_config": json.dumps(config), "model_name": "m", "model_version": "1"}


def _model(pattern_model, body: dict, parameters: dict | None = None):
    # a model.py of backends/ finds its folder's neighbours beside it; this class is not in one
    cls = type("Model", (pattern_model.PatternModel,), {"backends_root": classmethod(lambda c: paths.BACKENDS), **body})
    model = cls()
    model.initialize(_args({"target_model": "iris", **(parameters or {})}))
    return model


def _failures(reason: str) -> float:
    return sum(m.value for m in _Family.made if m.labels.get("__name__") == "pattern_request_failures_total"
               and m.labels.get("reason") == reason)


def test_run_merges_a_batch_and_a_bad_request_fails_alone(pattern_model):
    calls = []

    def run(self, inputs):
        calls.append(len(inputs["X"]))
        if (inputs["X"] < 0).any():
            raise InputError("X", "must be >= 0")
        return {"Y": inputs["X"] * 2}

    model = _model(pattern_model, {"run": run})
    assert model.params["latency_ms"] == 0.0 and model.params["target_version"] == -1
    assert [s.name for s in model.model_outputs] == ["Y", "FALLBACK"]  # fault_injection adds no output
    ok, bad = np.ones((2, 2), np.float32), -np.ones((1, 2), np.float32)
    before = _failures("client_error")
    good, failed = model.execute([_Request(X=ok), _Request(X=bad)])
    assert calls == [3, 2, 1] and good.outputs["Y"].tolist() == [[2, 2], [2, 2]]
    assert failed.error.code == _Error.INVALID_ARG and "input 'X': must be >= 0" in failed.error.message
    assert _failures("client_error") == before + 1


def test_error_codes_only_input_errors_are_the_clients(pattern_model):
    def handle(self, request, inputs):
        raise request.inputs["raise"]

    model = _model(pattern_model, {"handle": handle})
    raised = [InputError("X", "bad"), ValueError("cannot reshape array of size 3 into shape (2,)"),
              StepError("target", "iris", 1, "input 'X': bad", _Error.INVALID_ARG),
              StepError("target", "iris", 1, "down"), RuntimeError("boom")]
    responses = model.execute([_Request(X=np.ones((1, 2)), **{"raise": exc}) for exc in raised])
    assert [r.error.code for r in responses] == [_Error.INVALID_ARG, _Error.INTERNAL, _Error.INVALID_ARG,
                                                 _Error.UNAVAILABLE, _Error.INTERNAL]


def test_answer_runs_requests_concurrently_then_batch_done(pattern_model):
    done = []

    async def answer(self, request, inputs):
        await asyncio.sleep(0.01)
        return {"Y": inputs["X"]}

    model = _model(pattern_model, {"answer": answer, "batch_done": lambda self: done.append(True)})
    coroutine = model.execute([_Request(X=np.ones((1, 2))), _Request()])
    responses = asyncio.run(coroutine)
    assert responses[0].outputs["Y"].shape == (1, 2) and done == [True]
    assert responses[1].error.code == _Error.INVALID_ARG and "input 'X': is required" in responses[1].error.message


def test_auto_complete_adds_the_spec_s_extra_outputs_the_config_leaves_out(pattern_model):
    class AutoCompleteConfig:  # pb_utils.ModelConfig's part that auto_complete_config uses
        def __init__(self, config):
            self.config = config

        def as_dict(self):
            return self.config

        def add_output(self, output):
            self.config["output"].append(output)

    cls = type("Model", (pattern_model.PatternModel,), {"backends_root": classmethod(lambda c: paths.BACKENDS)})
    config = json.loads(_args({})["model_config"])
    config["backend"] = "circuit_breaker"
    completed = cls.auto_complete_config(AutoCompleteConfig(config)).as_dict()
    assert [(o["name"], o["data_type"], o["dims"]) for o in completed["output"]] == [
        ("Y", "TYPE_FP32", [2]), ("FALLBACK", "TYPE_BOOL", [1]), ("FALLBACK_REASON", "TYPE_STRING", [1])]


def test_a_bad_parameter_fails_initialize_naming_it(pattern_model):
    with pytest.raises(ValueError, match="model 'm': parameter 'failure_rate' must be <= 1, got 2.0"):
        _model(pattern_model, {}, {"failure_rate": "2"})
    with pytest.raises(ValueError, match="model 'm': config parameter 'target_model' is required"):
        _model(pattern_model, {}, {"target_model": ""})


def test_bls_requests_carry_the_trace_of_the_request_they_are_made_for(pattern_model):
    glue = sys.modules["pattern_kernel.triton_glue"]
    built = []  # (the request being answered, the BLS request built for it)

    def bls(request, inputs):
        built.append((request, glue._bls_request("iris", 1, inputs, ["Y"])))
        return {"Y": inputs["X"]}

    async def answer(self, request, inputs):
        await asyncio.sleep(0.01)  # the other request's task runs meanwhile
        return bls(request, inputs)

    requests = [_Request(X=np.ones((1, 2))), _Request(X=np.zeros((1, 2)))]
    _model(pattern_model, {"handle": lambda self, request, inputs: bls(request, inputs)}).execute(requests)
    asyncio.run(_model(pattern_model, {"answer": answer}).execute(requests))
    assert [bls_request.trace for _, bls_request in built] == [r.trace_handle for r, _ in built]
    assert len(built) == 4

    built.clear()  # calls made for a whole batch carry its first request's trace
    _model(pattern_model, {"run": lambda self, inputs: bls(requests[0], inputs)}).execute(requests)
    _model(pattern_model, {"handle_batch": lambda self, items: [bls(r, i) for r, i in items]}).execute(requests)
    assert [bls_request.trace for _, bls_request in built] == [requests[0].trace_handle] * 3
    # outside a request (a thread pool, after the response): no trace at all
    assert not hasattr(glue._bls_request("iris", 1, {"X": np.ones((1, 2))}, ["Y"]), "trace")
