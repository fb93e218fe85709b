"""End-to-end: every pattern method of the table, through `PatternClient` and through
`AsyncPatternClient`, over HTTP and gRPC, gives the same answers (the per-call details that
differ between two calls, such as latency, a cache hit or a job id, aside)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pattern_runtime.datasets import digits as digits_export
from pattern_tools.demo import TEXT_SAMPLES
from triton_patterns.client import PatternClient, Prediction
from triton_patterns.methods import VALUES, pattern_methods

pytestmark = pytest.mark.e2e

METHODS = pattern_methods()
OPTIONS = {"user_id": "compare-user"}  # sticky arms: both calls get the same one
PER_CALL = {"latency_ms", "report", "cache_hit", "source", "job_id"}  # may differ from call to call


@pytest.fixture(scope="module")
def values():
    x_test, _ = digits_export.load_test_split()
    by_parameter = {"features": [6.7, 3.0, 5.2, 2.3], "image": digits_export.encode_digit_png(x_test[0]),
                    "text": TEXT_SAMPLES[0][0], "record_id": "digit-1"}
    return {name: by_parameter[VALUES[m.first.input][0]] for name, m in METHODS.items()}


def _options(name: str) -> dict:
    return {k: v for k, v in OPTIONS.items() if k in METHODS[name].signature.parameters}


def _comparable(p: Prediction) -> dict:
    return {k: v for k, v in p.as_dict().items() if k not in PER_CALL | {"scores"}}


def _same(sync: list[Prediction], coroutine: list[Prediction]) -> None:
    assert [_comparable(p) for p in coroutine] == [_comparable(p) for p in sync]
    for a, b in zip(sync, coroutine, strict=True):
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)
        assert (a.report is None) == (b.report is None)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_pattern_method_answers_alike_through_both_clients(triton, async_client_factory, values, protocol):
    streams = [name for name, m in METHODS.items() if m.stream]
    unary = [name for name in METHODS if name not in streams]
    with PatternClient(triton.http_url if protocol == "http" else triton.grpc_url, protocol) as client:
        answers = {name: getattr(client, name)(values[name], **_options(name)) for name in unary}
        if protocol == "grpc":
            answers |= {name: getattr(client, name)(values[name], timeout_s=30) for name in streams}

    async def run():
        async with async_client_factory(protocol) as aclient:
            found = {name: await getattr(aclient, name)(values[name], **_options(name)) for name in unary}
            if protocol == "grpc":
                found |= {name: await getattr(aclient, name)(values[name], timeout_s=30) for name in streams}
            else:
                for name in streams:
                    with pytest.raises(ValueError, match="needs a gRPC client"):
                        await getattr(aclient, name)(values[name])
            return found

    found = asyncio.run(run())
    assert set(found) == set(answers) == set(unary) | (set(streams) if protocol == "grpc" else set())
    for name, answer in answers.items():
        sync = answer if isinstance(answer, list) else [answer]
        coroutine = found[name] if isinstance(found[name], list) else [found[name]]
        assert all(isinstance(p, Prediction) for p in sync + coroutine), name
        _same(sync, coroutine)
        assert sync[0].model == METHODS[name].first.model, name
    if protocol == "grpc":
        assert [p.stage for p in found["time_difference_stream"]] == ["fast", "slow"]
    assert found["time_difference"].job_id and found["canary"].arm and found["circuit_breaker"].fallback is not None
