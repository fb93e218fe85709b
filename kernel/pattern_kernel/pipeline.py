"""Steps of a serial pipeline from config: parsing, and the routing condition on earlier results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Step:
    name: str
    model: str
    version: int = -1
    inputs: dict[str, str] = field(default_factory=dict)   # callee input <- pool tensor
    outputs: dict[str, str] = field(default_factory=dict)  # callee output -> pool tensor
    timeout_ms: float | None = None  # None: no deadline, a plain synchronous BLS call
    on_error: str = "fail"  # or "skip": the pool keeps what it had (or `skip_values`)
    skip_values: dict[str, list] = field(default_factory=dict)
    when: dict | None = None  # {"tensor": name, "max_below"|"max_at_least"|"argmax_in": value}


def parse_steps(text: str) -> list[Step]:
    """The `steps` parameter: a JSON list of step objects (see `Step`)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"parameter 'steps' is not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ValueError("parameter 'steps' must be a JSON list of step objects")
    steps = []
    for i, item in enumerate(raw):
        unknown = set(item) - set(Step.__dataclass_fields__)
        if unknown or "name" not in item or "model" not in item:
            raise ValueError(f"step {i}: needs 'name' and 'model'; unknown keys {sorted(unknown)}")
        step = Step(**item)
        if step.on_error not in ("fail", "skip"):
            raise ValueError(f"step '{step.name}': on_error must be 'fail' or 'skip'")
        steps.append(step)
    return steps


def should_run(step: Step, pool: dict[str, np.ndarray]) -> bool:
    """Routing: a step with `when` runs only if its condition holds for every row."""
    if not step.when:
        return True
    tensor = pool.get(step.when["tensor"])
    if tensor is None:
        return False
    values = np.asarray(tensor, dtype=np.float64).reshape(len(tensor), -1)
    if "max_below" in step.when:
        return bool((values.max(axis=1) < step.when["max_below"]).all())
    if "max_at_least" in step.when:
        return bool((values.max(axis=1) >= step.when["max_at_least"]).all())
    if "argmax_in" in step.when:
        return bool(np.isin(values.argmax(axis=1), step.when["argmax_in"]).all())
    if "equals" in step.when:
        return bool((values[:, 0] == step.when["equals"]).all())
    raise ValueError(f"step '{step.name}': unknown condition {step.when}")
