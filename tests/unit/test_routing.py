"""Unit tests of the router's decisions (pattern_kernel/routing.py) and the blue-green accuracy gate."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pattern_jobs.bluegreen import accuracy_gate
from pattern_kernel.routing import (
    Arm,
    Conditions,
    Split,
    agree,
    parse_arms,
    parse_rules,
    parse_weights,
    pick,
    stable_fraction,
    summarize,
    weights_from_json,
)

ARMS = parse_arms("iris:1,iris:2", "stable,canary")


def test_arms_and_weights_parse_and_validate():
    assert ARMS == [Arm("stable", "iris", 1), Arm("canary", "iris", 2)]
    assert [a.target for a in parse_arms("iris:1,iris_slow")] == ["iris:1", "iris_slow"]
    assert [a.name for a in parse_arms("iris:1,iris_slow")] == ["iris:1", "iris_slow"]
    with pytest.raises(ValueError, match="1 names for 2 targets"):
        parse_arms("iris:1,iris:2", "only")
    with pytest.raises(ValueError, match="distinct"):
        parse_arms("iris:1,iris:2", "a,a")
    assert parse_weights("90,10", ARMS) == (90.0, 10.0)
    assert parse_weights("", ARMS) == (1.0, 1.0)
    for bad in ("90", "-1,2", "0,0", "a,b"):
        with pytest.raises(ValueError):
            parse_weights(bad, ARMS)


def test_run_time_weights_from_json():
    assert weights_from_json('{"stable": 80, "canary": 20}', ARMS) == (80.0, 20.0)
    assert weights_from_json(b'{"canary": 1}', ARMS) == (0.0, 1.0)  # left out: 0
    for bad, message in (("{", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"blue": 1}', "unknown arms"),
                         ('{"stable": 0}', "positive sum"), ('{"stable": "x"}', "bad weights")):
        with pytest.raises(ValueError, match=message):
            weights_from_json(bad, ARMS)


def test_pick_follows_cumulative_shares_and_skips_zero_weights():
    assert [pick((90, 10), u) for u in (0.0, 0.5, 0.8999, 0.9, 0.9999)] == [0, 0, 0, 1, 1]
    assert pick((0, 1), 0.0) == 1 and pick((1, 0), 0.99999999) == 0
    assert pick((1, 0), 1.0) == 0  # rounding at the top never lands on a zero-weight arm


def test_stable_hash_is_deterministic_salted_and_uniform():
    assert stable_fraction("user-1", "s") == stable_fraction("user-1", "s")
    assert stable_fraction("user-1", "s") != stable_fraction("user-1", "t")
    values = np.array([stable_fraction(f"user-{i}", "s") for i in range(20000)])
    assert ((0 <= values) & (values < 1)).all()
    counts, _ = np.histogram(values, bins=10, range=(0, 1))
    assert (abs(counts - 2000) < 200).all()


def test_split_is_sticky_by_key_random_without_and_can_require_the_key():
    split = Split(ARMS, (50, 50), salt="exp", sticky_key="user_id", rng=random.Random(0))
    for i in range(50):
        first = split.choose({"user_id": f"u{i}"})
        assert all(split.choose({"user_id": f"u{i}"}) == first for _ in range(5))
    arms = [split.choose({}) for _ in range(2000)]
    assert 850 < arms.count(1) < 1150
    strict = Split(ARMS, (50, 50), salt="exp", sticky_key="user_id", sticky_required=True)
    with pytest.raises(ValueError, match="request parameter 'user_id': is required"):
        strict.choose({"other": 1})


def test_raising_the_canary_weight_only_moves_keys_onto_the_canary():
    split = Split(ARMS, (90, 10), salt="exp", sticky_key="user_id")
    users = [{"user_id": f"u{i}"} for i in range(3000)]
    before = [split.choose(u) for u in users]
    split.weights = (50, 50)
    after = [split.choose(u) for u in users]
    assert all(a == 1 for b, a in zip(before, after, strict=True) if b == 1)
    assert 0.05 < np.mean(before) < 0.15 and 0.45 < np.mean(after) < 0.55


def test_rules_and_route_parameter():
    arms = parse_arms("iris:1,iris:2", "v1,v2")
    rules = parse_rules("FEATURES[2] < 2.5 -> v1; FEATURES[0]>=7 -> v2", arms, ["FEATURES"])
    conditions = Conditions(arms, "target", rules, "v2")
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [7.2, 3.0, 1.0, 0.1]], dtype=np.float32)
    assert conditions.choose({}, {"FEATURES": rows}, 3).tolist() == [0, 1, 0]  # first matching rule wins
    assert conditions.choose({"target": "v1"}, {"FEATURES": rows}, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="must be one of \\['v1', 'v2'\\]"):
        conditions.choose({"target": "plants"}, {"FEATURES": rows}, 3)
    for bad, message in (("FEATURES[2] ~ 1 -> v1", "expected"), ("OTHER[0] < 1 -> v1", "no input"),
                         ("FEATURES[0] < 1 -> v9", "no arm")):
        with pytest.raises(ValueError, match=message):
            parse_rules(bad, arms, ["FEATURES"])
    with pytest.raises(ValueError, match="default_arm"):
        Conditions(arms, "target", [], "v3")


def test_summaries_and_agreement():
    small = summarize({"FEATURES": np.array([[1.0, 2.0]], dtype=np.float32), "TEXT": np.array([b"hi"], dtype=object)})
    assert small == {"FEATURES": [[1.0, 2.0]], "TEXT": ["hi"]}
    big = summarize({"IMAGE": np.zeros((10, 10))})["IMAGE"]
    assert big["shape"] == [10, 10] and len(big["sha256"]) == 64
    assert agree(np.array([[1], [2]]), np.array([1, 2])) and not agree(np.array([1, 2]), np.array([1, 0]))


def test_accuracy_gate():
    same = {"measured": 0.9778, "recorded": 0.9778}
    assert accuracy_gate(same, dict(same), n=45) == []
    worse = {"measured": 0.4, "recorded": 0.4}
    problems = accuracy_gate(same, worse, n=45)
    assert len(problems) == 1 and "measured accuracy 0.4000 is worse" in problems[0]
    assert accuracy_gate(same, {"measured": 0.96, "recorded": 0.96}, n=45, tolerance=0.02) == []
    assert "manifest accuracy" in accuracy_gate(same, {"measured": 0.99, "recorded": 0.9}, n=45)[0]
    mismatch = accuracy_gate(same, {"measured": 1.0, "recorded": 0.98}, n=100)
    assert len(mismatch) == 1 and "not the ones the manifest describes" in mismatch[0]
    assert "records no held-out accuracy" in accuracy_gate(same, {"measured": 1.0, "recorded": None}, n=45)[0]
