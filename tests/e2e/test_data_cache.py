"""End-to-end: the data cache reads records by id through Redis in front of a SQLite store."""

from __future__ import annotations

import pytest

from pattern_runtime.datasets import digits as digits_export
from triton_patterns.client import PatternError

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("model", ["digits_by_id", "digits_by_id_prep"])
def test_first_read_from_the_store_then_from_redis(client, redis_server, model):
    redis_server.client().flushdb()
    _, labels = digits_export.load_test_split()
    first = client.data_cache("digit-3", model=model)
    second = client.data_cache("digit-3", model=model)
    assert (first.source, second.source) == ("store", "redis")
    assert first.class_id == second.class_id == int(labels[3])


def test_both_variants_and_the_image_pattern_agree(client):
    x_test, _ = digits_export.load_test_split()
    by_pixels = client.prep_pred(digits_export.encode_digit_png(x_test[7]))
    for model in ("digits_by_id", "digits_by_id_prep"):
        assert abs(client.data_cache("digit-7", model=model).scores - by_pixels.scores).max() < 1e-6


def test_unknown_id_is_a_clear_error(client):
    with pytest.raises(PatternError) as err:
        client.data_cache("digit-99999")
    assert "input 'ID'" in str(err.value) and "digit-99999" in str(err.value)
    assert err.value.status == "400"
    assert client.data_cache("digit-0").label
