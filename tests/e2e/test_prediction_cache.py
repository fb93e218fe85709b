"""End-to-end: the Redis prediction cache in front of real models (a hit and its count also on the
container stack: `container`)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

pytestmark = pytest.mark.e2e

ROW = np.array([[6.0, 2.7, 5.1, 1.6]], dtype=np.float32)


def _metric(server, result: str, model: str) -> float:
    """`server`: anything with a `metrics_url` (the embedded server, a test target)."""
    text = requests.get(server.metrics_url, timeout=10).text
    pattern = rf'prediction_cache_requests_total{{[^}}]*model="{model}"[^}}]*result="{result}"[^}}]*}} (\S+)'
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def _iris_cached(client, model, row=ROW):
    tensor = httpclient.InferInput("FEATURES", list(row.shape), "FP32")
    tensor.set_data_from_numpy(row)
    result = client.client.infer(model, [tensor])
    return bool(result.as_numpy("CACHE_HIT")[0, 0]), result.as_numpy("PROBABILITIES")


@pytest.mark.container
def test_second_identical_text_is_a_hit_with_the_same_answer(target, client):
    text = f"The referee stopped the match after {time.time_ns()} seconds of rain delay."
    hits_before = _metric(target, "hit", "text_classify_cached")
    first = client.prediction_cache(text)
    second = client.prediction_cache(text)
    assert first.cache_hit is False and second.cache_hit is True
    assert second.label == first.label and np.array_equal(second.scores, first.scores)
    assert _metric(target, "hit", "text_classify_cached") == hits_before + 1
    direct = client.serial(text)
    assert direct.label == first.label


def test_version_is_part_of_the_key_and_answers_expire(triton, client, redis_server):
    redis_server.client().flushdb()
    assert _iris_cached(client, "iris_cached_v1")[0] is False
    hit, scores_v1 = _iris_cached(client, "iris_cached_v1")
    assert hit is True
    hit_v2, scores_v2 = _iris_cached(client, "iris_cached_v2")
    assert hit_v2 is False, "v2 must never get v1's cached answer for the same bytes"
    assert not np.allclose(scores_v1, scores_v2)
    time.sleep(2.5)  # ttl_seconds: 2
    assert _iris_cached(client, "iris_cached_v1")[0] is False


def test_redis_down_the_model_still_answers_and_errors_are_counted(triton, client, redis_server):
    errors_before = _metric(triton, "error", "iris_cached_v2")
    expected = client.synchronous(ROW[0], version=2)
    redis_server.stop()
    try:
        start = time.perf_counter()
        hit, scores = _iris_cached(client, "iris_cached_v2")
        elapsed = time.perf_counter() - start
        assert hit is False
        np.testing.assert_allclose(scores[0], expected.scores, atol=1e-6)
        assert _metric(triton, "error", "iris_cached_v2") > errors_before
        assert elapsed < 2.0
    finally:
        redis_server.start()
    redis_server.client().flushdb()
    assert _iris_cached(client, "iris_cached_v2")[0] is False
    assert _iris_cached(client, "iris_cached_v2")[0] is True


def _nv_cache_hits(triton, model: str) -> float:
    text = requests.get(triton.metrics_url, timeout=10).text
    match = re.search(rf'nv_cache_num_hits_per_model{{model="{model}",version="1"}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def test_triton_response_cache_on_a_top_level_ensemble(triton, client):
    from pattern_runtime.datasets import digits as digits_export

    x_test, y_test = digits_export.load_test_split()
    png = digits_export.encode_digit_png(x_test[5])
    hits_before = _nv_cache_hits(triton, "digits_cached")
    first = client.predict("prep_pred", png, model="digits_cached")[0]
    second = client.predict("prep_pred", png, model="digits_cached")[0]
    assert first.class_id == second.class_id == client.prep_pred(png).class_id
    assert np.array_equal(first.scores, second.scores)
    assert _nv_cache_hits(triton, "digits_cached") == hits_before + 1
