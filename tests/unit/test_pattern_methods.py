"""The clients' pattern methods come from one table (written out by `python -m pattern_tools.sdk_gen`,
kept in step by test_sdk_generated.py): both clients have the same methods with the same signatures
and the table's docstrings, the methods that existed before the table keep their signatures,
and a call becomes the `predict` call the table says (no server: `predict` is recorded)."""

from __future__ import annotations

import asyncio
import inspect

import numpy as np
import pytest

from triton_patterns.client import AsyncPatternClient, PatternClient, Prediction
from triton_patterns.methods import pattern_methods
from triton_patterns.patterns import PATTERNS, RESULT_FIELDS, STREAMS, PatternSpec

# the hand-written methods' signatures before the table (self omitted): callers rely on them
SIGNATURES = {
    "web_single": "(features: 'Sequence[float]') -> 'Prediction'",
    "synchronous": "(features: 'Sequence[float]', version: 'int | None' = None) -> 'Prediction'",
    "prep_pred": "(image: 'bytes', form: 'str' = 'ensemble') -> 'Prediction'",
    "serial": "(text: 'str') -> 'Prediction'",
    "prediction_cache": "(text: 'str', model: 'str' = 'text_classify_cached') -> 'Prediction'",
    "data_cache": "(record_id: 'str', model: 'str' = 'digits_by_id') -> 'Prediction'",
    "serial_bls": "(features: 'Sequence[float]', model: 'str' = 'iris_cascade') -> 'Prediction'",
    "parallel": "(features: 'Sequence[float]', model: 'str' = 'iris_parallel') -> 'Prediction'",
    "canary": "(features: 'Sequence[float]', user_id: 'str | None' = None, model: 'str' = 'iris_canary') "
              "-> 'Prediction'",
    "ab_test": "(features: 'Sequence[float]', user_id: 'str | None' = None, model: 'str' = 'iris_ab') -> 'Prediction'",
    "shadow": "(features: 'Sequence[float]', model: 'str' = 'iris_shadow') -> 'Prediction'",
    "route": "(features: 'Sequence[float]', target: 'str | None' = None, model: 'str' = 'iris_route') -> 'Prediction'",
    "circuit_breaker": "(features: 'Sequence[float]', model: 'str' = 'iris_breaker') -> 'Prediction'",
    "time_difference": "(features: 'Sequence[float]', model: 'str' = 'iris_time_difference') -> 'Prediction'",
    "time_difference_stream": "(features: 'Sequence[float]', model: 'str' = 'iris_time_difference_stream', "
                              "timeout_s: 'float' = 30.0) -> 'list[Prediction]'",
}
METHODS = pattern_methods()


def _without_self(function) -> str:
    signature = inspect.signature(function)
    return str(signature.replace(parameters=list(signature.parameters.values())[1:]))


def test_every_table_entry_has_a_method_and_every_method_an_entry():
    assert {spec.method_name for spec in (*PATTERNS.values(), *STREAMS.values())} == set(METHODS)
    assert set(SIGNATURES) <= set(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_both_clients_have_the_method_with_one_signature_and_docstring(name):
    sync, coroutine = getattr(PatternClient, name), getattr(AsyncPatternClient, name)
    assert not inspect.iscoroutinefunction(sync) and inspect.iscoroutinefunction(coroutine)
    assert inspect.signature(sync) == inspect.signature(coroutine)
    assert list(inspect.signature(sync).parameters)[0] == "self"
    assert sync.__doc__ == coroutine.__doc__ and inspect.getdoc(sync) == METHODS[name].doc
    assert (sync.__name__, sync.__qualname__, coroutine.__qualname__) == (
        name, f"PatternMethods.{name}", f"AsyncPatternMethods.{name}")  # written out in pattern_methods.py
    assert sync.__module__ == coroutine.__module__ == "triton_patterns.pattern_methods"


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_the_methods_written_by_hand_before_keep_their_signatures(name):
    for cls in (PatternClient, AsyncPatternClient):
        assert _without_self(getattr(cls, name)) == SIGNATURES[name], cls.__name__


def test_every_extra_output_is_a_prediction_attribute_listed_in_the_docstrings():
    core = {"LABEL", "CLASS_ID", "PROBABILITIES"}
    known = {output for f in RESULT_FIELDS for output in f.outputs}
    for spec in (*PATTERNS.values(), *STREAMS.values()):
        assert set(spec.outputs) - core <= known, spec.name
        for f in RESULT_FIELDS:
            if set(f.outputs) & set(spec.outputs):
                assert f"`.{f.name}`" in METHODS[spec.method_name].doc
    for f in RESULT_FIELDS:
        assert getattr(Prediction, f.name).__doc__ == f.doc


def test_prediction_reads_its_extra_outputs_from_the_table():
    outputs = {"ARM": np.array([b"canary"], dtype=object), "TARGET": np.array(["iris:2"], dtype=object),
               "CACHE_HIT": np.array([True]), "REPORT": np.array([b'{"answered": ["a"]}'], dtype=object)}
    p = Prediction("iris_canary", "1", "virginica", 2, np.array([0.1, 0.2, 0.7]), 1.0, outputs)
    assert (p.arm, p.target, p.cache_hit, p.report) == ("canary", "iris:2", True, {"answered": ["a"]})
    assert (p.source, p.job_id, p.fallback, p.fallback_reason, p.stage) == (None,) * 5
    assert list(p.as_dict()) == ["model", "version", "label", "class_id", "scores", "latency_ms",
                                 "report", "cache_hit", "arm", "target"]
    bare = Prediction("iris", "2", "setosa", 0, np.array([1.0, 0, 0]), 1.0)
    assert set(bare.as_dict()) == {"model", "version", "label", "class_id", "scores", "latency_ms"}


class _Recorder:
    """Stands for a client's connection: `predict` and `_stream` record their arguments."""

    def __init__(self):
        self.calls = []

    def predict(self, pattern_name, value, version=None, model=None, parameters=None):
        self.calls.append((pattern_name, value, version, model, parameters))
        return ["answer"]

    def _stream(self, spec, value, model, timeout_s):
        self.calls.append((spec.name, value, model, timeout_s))
        return ["fast", "slow"]


class _AsyncRecorder(_Recorder):
    async def predict(self, *args, **kwargs):
        return super().predict(*args, **kwargs)

    async def _stream(self, *args, **kwargs):
        return super()._stream(*args, **kwargs)


ROW = [6.7, 3.0, 5.2, 2.3]
CALLS = [  # (method, args, kwargs) -> the client call it becomes
    ("web_single", (ROW,), {}, ("web_single", ROW, None, None, None)),
    ("synchronous", (ROW, 1), {}, ("synchronous", ROW, 1, None, None)),
    ("prep_pred", (b"png",), {}, ("prep_pred", b"png", None, None, None)),
    ("prep_pred", (b"png",), {"form": "bls"}, ("prep_pred_bls", b"png", None, None, None)),
    ("data_cache", ("digit-1",), {"model": "digits_by_id_prep"},
     ("data_cache", "digit-1", None, "digits_by_id_prep", None)),
    ("canary", (ROW,), {"user_id": 42}, ("canary", ROW, None, "iris_canary", {"user_id": "42"})),
    ("ab_test", (ROW,), {}, ("ab_test", ROW, None, "iris_ab", None)),
    ("route", (ROW, "v1"), {}, ("route", ROW, None, "iris_route", {"target": "v1"})),
    ("route", (ROW,), {"target": ""}, ("route", ROW, None, "iris_route", None)),
    ("time_difference_stream", (ROW,), {"timeout_s": 5},
     ("time_difference_stream", ROW, "iris_time_difference_stream", 5)),
]


@pytest.mark.parametrize("name, args, kwargs, call", CALLS)
def test_a_call_becomes_the_client_call_the_table_says(name, args, kwargs, call):
    sync, coroutine = _Recorder(), _AsyncRecorder()
    expected = ["fast", "slow"] if name in STREAMS else "answer"
    assert getattr(PatternClient, name)(sync, *args, **kwargs) == expected
    assert asyncio.run(getattr(AsyncPatternClient, name)(coroutine, *args, **kwargs)) == expected
    assert sync.calls == coroutine.calls == [call]


def test_bad_arguments_fail_as_for_a_written_method():
    with pytest.raises(TypeError):
        PatternClient.synchronous(_Recorder(), ROW, versoin=1)
    with pytest.raises(TypeError):
        PatternClient.web_single(_Recorder())
    with pytest.raises(ValueError, match="form must be one of 'ensemble', 'bls'"):
        PatternClient.prep_pred(_Recorder(), b"png", form="python")


def test_streams_need_grpc():
    client = PatternClient("127.0.0.1:1")
    with pytest.raises(ValueError, match="time_difference_stream needs a gRPC client"):
        client.time_difference_stream(ROW)


def test_a_new_entry_is_a_new_method_and_each_form_calls_its_own_model():
    specs = [PatternSpec("echo", "echo_ensemble", "TEXT", "BYTES", ("LABEL", "PROBABILITIES", "SOURCE"), "text",
                         "an echo", "hi", form="ensemble"),
             PatternSpec("echo_bls", "echo_bls", "TEXT", "BYTES", ("LABEL", "PROBABILITIES", "SOURCE"), "text",
                         "an echo in BLS", "hi", method="echo", form="bls")]
    [(name, method)] = pattern_methods(specs).items()
    assert str(method.signature) == ("(text: 'str', form: 'str' = 'ensemble', model: 'str' = 'echo_ensemble') "
                                     "-> 'Prediction'")
    assert "`.source`" in method.doc and "`echo_bls` (form \"bls\")" in method.doc
    assert method.request("hi", form="bls") == (specs[1], {"value": "hi", "model": "echo_bls", "parameters": None})
    assert method.request("hi", "bls", "mine")[1]["model"] == "mine"
