"""The router backend's decisions, free of Triton: arms, weights, the stable hash behind sticky
assignment, condition rules on inputs, and what a shadow comparison records.

Sticky assignment: a key (e.g. a user id) maps to a fraction u in [0, 1) through sha256 of a salt
and the key; the arm is the first whose cumulative weight share exceeds u. The same key always
lands on the same arm while the weights stay; with two arms, raising the second one's weight (the
canary's) only moves keys onto it, never off it.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pattern_kernel.errors import InputError
from pattern_kernel.validation import parse_list, parse_targets


@dataclass(frozen=True)
class Arm:
    """One place a request can go: a name (reported in ARM) and a model and version."""

    name: str
    model: str
    version: int = -1

    @property
    def target(self) -> str:
        return f"{self.model}:{self.version}" if self.version > 0 else self.model


def parse_arms(targets: str, names: str | None = None) -> list[Arm]:
    """`targets` "iris:1,iris:2" with optional `names` "stable,canary" (default: the targets)."""
    pairs = parse_targets(targets)
    labels = parse_list(names) if names else [f"{m}:{v}" if v > 0 else m for m, v in pairs]
    if not pairs:
        raise ValueError("targets: at least one model[:version] is needed")
    if len(labels) != len(pairs):
        raise ValueError(f"arms: {len(labels)} names for {len(pairs)} targets")
    if len(set(labels)) != len(labels):
        raise ValueError(f"arms: names must be distinct, got {labels}")
    return [Arm(name, model, version) for name, (model, version) in zip(labels, pairs, strict=True)]


def check_weights(weights: Sequence[float], arms: Sequence[Arm]) -> tuple[float, ...]:
    if len(weights) != len(arms):
        raise ValueError(f"weights: {len(weights)} values for {len(arms)} arms")
    if any(w < 0 or w != w for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    return tuple(float(w) for w in weights)


def parse_weights(text: str | None, arms: Sequence[Arm]) -> tuple[float, ...]:
    """"90,10" (one per arm); empty: equal weights."""
    if not text:
        return tuple(1.0 for _ in arms)
    try:
        values = parse_list(text, float)
    except ValueError:
        raise ValueError(f"weights must be numbers, got {text!r}") from None
    return check_weights(values, arms)


def weights_from_json(raw: bytes | str, arms: Sequence[Arm]) -> tuple[float, ...]:
    """Run-time weights as stored in Redis: {"stable": 80, "canary": 20}; an arm left out gets 0."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"weights are not valid JSON: {raw!r}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"weights must be a JSON object of arm: weight, got {raw!r}")
    names = [a.name for a in arms]
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ValueError(f"weights name unknown arms {unknown}; arms: {names}")
    try:
        return check_weights([float(value.get(n, 0)) for n in names], arms)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad weights {raw!r}: {exc}") from None


def stable_fraction(key: str, salt: str) -> float:
    """A key's fixed place in [0, 1): the first 8 bytes of sha256(salt + ":" + key)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick(weights: Sequence[float], u: float) -> int:
    """Index of the arm whose share of the cumulative weights holds u (0 <= u < 1)."""
    total = sum(weights)
    edge = 0.0
    for index, weight in enumerate(weights):
        edge += weight / total
        if u < edge and weight > 0:
            return index
    return max(i for i, w in enumerate(weights) if w > 0)  # u at the very top, after rounding


class Split:
    """Weighted choice among arms, sticky by a key when one is given, random otherwise."""

    def __init__(self, arms: Sequence[Arm], weights: Sequence[float], salt: str,
                 sticky_key: str | None = None, sticky_required: bool = False, rng: random.Random | None = None):
        self.arms = list(arms)
        self.config_weights = check_weights(weights, arms)
        self.weights = self.config_weights  # replaced whole (atomic) when run-time weights change
        self.salt, self.sticky_key, self.sticky_required = salt, sticky_key, sticky_required
        self.random = rng or random.Random()

    def key_of(self, parameters: Mapping) -> str | None:
        value = parameters.get(self.sticky_key) if self.sticky_key else None
        return None if value is None or value == "" else str(value)

    def choose(self, parameters: Mapping) -> int:
        key = self.key_of(parameters)
        if key is None:
            if self.sticky_required:
                raise InputError(self.sticky_key, f"is required: arms are assigned per '{self.sticky_key}'",
                                 kind="request parameter")
            return pick(self.weights, self.random.random())
        return pick(self.weights, stable_fraction(key, self.salt))


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
_RULE = re.compile(r"^\s*(\w+)\[(\d+)\]\s*(<=|>=|==|!=|<|>)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*->\s*(\S+)\s*$")


@dataclass(frozen=True)
class Rule:
    """`INPUT[i] op number -> arm`: element i of a row of INPUT (flattened) against a number."""

    input: str
    index: int
    op: str
    value: float
    arm: int

    def holds(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        rows = inputs[self.input]
        column = rows.reshape(len(rows), -1)[:, self.index].astype(np.float64)
        return _OPS[self.op](column, self.value)


def parse_rules(text: str | None, arms: Sequence[Arm], input_names: Sequence[str]) -> list[Rule]:
    """Rules separated by ";", e.g. "FEATURES[2] < 2.5 -> v1; FEATURES[0] >= 7 -> v2"."""
    names = [a.name for a in arms]
    rules = []
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        match = _RULE.match(item)
        if not match:
            raise ValueError(f"rule {item.strip()!r}: expected 'INPUT[i] op number -> arm' (op: {' '.join(_OPS)})")
        name, index, op, value, arm = match.groups()
        if name not in input_names:
            raise ValueError(f"rule {item.strip()!r}: no input {name!r}; inputs: {list(input_names)}")
        if arm not in names:
            raise ValueError(f"rule {item.strip()!r}: no arm {arm!r}; arms: {names}")
        rules.append(Rule(name, int(index), op, float(value), names.index(arm)))
    return rules


class Conditions:
    """Condition-based routing: a request parameter names the arm for all rows; otherwise each
    row goes to the arm of the first rule it satisfies, else to the default arm."""

    def __init__(self, arms: Sequence[Arm], parameter: str, rules: Sequence[Rule], default: str | None):
        self.arms, self.parameter, self.rules = list(arms), parameter, list(rules)
        names = [a.name for a in arms]
        if default is not None and default not in names:
            raise ValueError(f"default_arm {default!r} is not one of the arms {names}")
        self.default = names.index(default) if default is not None else 0

    def choose(self, parameters: Mapping, inputs: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        named = parameters.get(self.parameter)
        names = [a.name for a in self.arms]
        if named is not None and named != "":
            if str(named) not in names:
                raise InputError(self.parameter, f"must be one of {names}, got {named!r}", kind="request parameter")
            return np.full(rows, names.index(str(named)), dtype=np.int64)
        choice = np.full(rows, -1, dtype=np.int64)
        for rule in self.rules:
            choice[(choice < 0) & rule.holds(inputs)] = rule.arm
        choice[choice < 0] = self.default
        return choice


def summarize(arrays: Mapping[str, np.ndarray], limit: int = 64) -> dict:
    """Tensors as JSON values for a log: small ones in full, larger ones as shape, dtype and sha256."""
    out = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.size > limit:
            out[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                         "sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()}
        elif array.dtype == np.object_:
            out[name] = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        else:
            out[name] = array.tolist()
    return out


def agree(primary: np.ndarray, candidate: np.ndarray) -> bool:
    """Whether two answers agree: equal values, row by row (e.g. the same labels)."""
    a, b = np.asarray(primary), np.asarray(candidate)
    return a.size == b.size and bool(np.array_equal(a.reshape(-1), b.reshape(-1)))
