"""Unit tests of the serial and parallel backends' logic: step parsing, routing, aggregation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pattern_kernel.aggregation import aggregate
from pattern_kernel.pipeline import Step, parse_steps, should_run
from pattern_kernel.specs import load_spec
from pattern_runtime import paths

A = np.array([[0.6, 0.3, 0.1]], dtype=np.float32)
B = np.array([[0.2, 0.7, 0.1]], dtype=np.float32)
C = np.array([[0.1, 0.45, 0.45]], dtype=np.float32)


def test_majority_vote_and_tie_break_by_scores():
    labels, scores = aggregate("majority", [A, B, C])
    assert labels.tolist() == [1]  # B and C vote 1
    np.testing.assert_allclose(scores, (A + B + C) / 3)
    labels, _ = aggregate("majority", [A, np.array([[0.1, 0.8, 0.1]], dtype=np.float32)])
    assert labels.tolist() == [1]  # one vote each: class 1 has the higher summed score


def test_mean_and_max_confidence():
    assert aggregate("mean", [A, B])[0].tolist() == [1]  # mean (0.4, 0.5, 0.1)
    labels, scores = aggregate("max_confidence", [A, B, C])
    assert labels.tolist() == [1] and np.allclose(scores, B)


def test_unknown_policy_and_empty_answers():
    for policy in ("median", "all"):  # "all" is no synonym of "mean"
        with pytest.raises(ValueError,
                           match=f"aggregation must be one of majority, mean, max_confidence, got '{policy}'"):
            aggregate(policy, [A])
    with pytest.raises(ValueError, match="nothing to aggregate"):
        aggregate("mean", [])


@pytest.mark.parametrize("backend", ["aggregate", "parallel"])
def test_a_config_asking_for_aggregation_all_is_refused_naming_the_parameter_and_the_values(backend):
    parameters = {"targets": "iris:1,iris:2"} if backend == "parallel" else {}
    with pytest.raises(ValueError) as refused:
        load_spec(paths.BACKENDS / backend).read("m", {**parameters, "aggregation": "all"})
    assert str(refused.value) == ("model 'm': parameter 'aggregation' must be one of "
                                  "['majority', 'mean', 'max_confidence'], got 'all'")


def test_parse_steps_validates():
    steps = parse_steps(json.dumps([{"name": "a", "model": "iris", "version": 1}]))
    assert steps == [Step(name="a", model="iris", version=1)]
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_steps("[{")
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        parse_steps(json.dumps([{"name": "a", "model": "m", "colour": "red"}]))
    with pytest.raises(ValueError, match="on_error must be"):
        parse_steps(json.dumps([{"name": "a", "model": "m", "on_error": "retry"}]))


def test_routing_conditions():
    pool = {"P": np.array([[0.95, 0.05, 0.0], [0.5, 0.4, 0.1]]), "L": np.array([[0], [0]])}
    assert should_run(Step("s", "m"), pool)
    assert not should_run(Step("s", "m", when={"tensor": "P", "max_below": 0.9}), {"P": pool["P"][:1]})
    assert should_run(Step("s", "m", when={"tensor": "P", "max_below": 0.9}), {"P": pool["P"][1:]})
    assert should_run(Step("s", "m", when={"tensor": "P", "argmax_in": [0]}), pool)
    assert should_run(Step("s", "m", when={"tensor": "L", "equals": 0}), pool)
    assert not should_run(Step("s", "m", when={"tensor": "missing", "equals": 0}), pool)
    with pytest.raises(ValueError, match="unknown condition"):
        should_run(Step("s", "m", when={"tensor": "P", "near": 1}), pool)
