"""Sampled capture of a pipeline's intermediate tensors (serial and parallel backends): for a
fraction `capture_rate` of the requests, one prediction-log entry holding the request's inputs
and final outputs and, per step, its name, model, version, status and the tensors it was given
and gave back, so that a wrong answer can be traced to the step that produced it.

An entry is never larger than `capture_max_bytes` (field names and values, UTF-8). A tensor is
{"dtype", "shape", "values"} (values flat, row-major; bytes as text). One met before, e.g. a
step's input that an earlier step produced, is {"same_as": "steps[0].outputs.EMBEDDING"}. When
the whole does not fit, the small tensors stay whole and the large ones share what is left: each
keeps its first values and says so ("truncated": "first k of n values", with mean, std, min and
max); when not even that fits, the tensors are "omitted", then the steps' details.
"""

from __future__ import annotations

import bisect
import functools
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from pattern_kernel.prediction_log import read_recent, summarize

KIND = "capture"
MIN_BYTES = 1024  # the smallest cap: room for the header and each step's name and status
_TEXT_LIMIT = 300  # characters kept of a request id or a step's error message


@dataclass
class StepRecord:
    """One step as captured: `info` (step, model, version, status, ms, error; JSON-able) and
    the tensors by the callee's names."""

    info: dict
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def size(fields: Mapping[str, str]) -> int:
    """Bytes of a stream entry: its field names and values, UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())


def _scalars(array: np.ndarray, limit: int) -> tuple[list | np.ndarray, np.ndarray]:
    """The first `limit` values, flat, as JSON scalars (floats as the texts of their dtype's
    shortest repr, str(np.float32(0.1)) being "0.1", read by `float` when written), and the
    length of each in JSON."""
    flat = array.reshape(-1)[:limit]
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        values = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
        return values, np.array([len(_dumps(v)) for v in values], dtype=np.int64)
    texts = flat.astype(str)  # vectorised; "True" is as long as "true", "inf" 5 shorter than "Infinity"
    lengths = np.char.str_len(texts).astype(np.int64)
    if array.dtype.kind == "f":
        return texts, lengths + 5 * np.isinf(flat)
    return flat.tolist(), lengths


class _Tensor:
    """One captured tensor: its values' JSON costs, and its encoding with the first k of them."""

    def __init__(self, array: np.ndarray, max_values: int):
        self.array = np.asarray(array)
        self.n = int(self.array.size)
        self.values, lengths = _scalars(self.array, max_values)
        self.costs = np.cumsum(lengths + 1).tolist()  # each with its comma
        # the bytes of all its values, None when they were not all read (more than max_values)
        self.full = (self.costs[-1] if self.costs else 0) if len(self.values) == self.n else None
        self.kept = self.n  # values written; set by `_share_out` when they do not all fit

    @functools.cached_property
    def note(self) -> int:
        """The bytes a truncation adds at most: its note and statistics."""
        return len(_dumps(self.encode(worst=True))) - len(_dumps(self.encode(bare=True)))

    def fitting(self, budget: float) -> int:
        """How many of its first values fit in `budget` bytes."""
        return bisect.bisect_right(self.costs, budget)

    def encode(self, kept: int | None = None, omitted: bool = False, worst: bool = False, bare: bool = False) -> dict:
        """With its first `kept` values (default `self.kept`) and, when that is not all, a note;
        `omitted`: no values, said so; `worst`: no values, the longest note; `bare`: no values, no note."""
        kept = 0 if worst or bare else (self.kept if kept is None else kept)
        out = {"dtype": str(self.array.dtype), "shape": list(self.array.shape)}
        if omitted:
            return {**out, "omitted": "over capture_max_bytes"}
        first = self.values[:kept]
        out["values"] = [float(t) for t in first.tolist()] if isinstance(first, np.ndarray) else first
        if (kept < self.n and not bare) or worst:
            out["truncated"] = f"first {self.n if worst else kept} of {self.n} values: over capture_max_bytes"
            if self.n and self.array.dtype.kind in "biuf":
                out.update({k: v for k, v in summarize(self.array, 0).items() if k != "shape"})
        return out


def _collect(inputs, steps: list[StepRecord], outputs, max_values: int) -> dict[str, _Tensor | str]:
    """Every tensor by where it is ("inputs.X", "steps[0].outputs.Y", "outputs.Z"); one met
    before (the same array) as the place it was met first."""
    groups = [("inputs", inputs)]
    for i, step in enumerate(steps):
        groups += [(f"steps[{i}].inputs", step.inputs), (f"steps[{i}].outputs", step.outputs)]
    groups.append(("outputs", outputs))
    seen: dict[int, str] = {}
    tensors: dict[str, _Tensor | str] = {}
    for prefix, group in groups:
        for name, array in group.items():
            where = f"{prefix}.{name}"
            if id(array) in seen:
                tensors[where] = seen[id(array)]
            else:
                seen[id(array)] = where
                tensors[where] = _Tensor(array, max_values)
    return tensors


def _share_out(tensors: list[_Tensor], budget: float) -> None:
    """Sets each tensor's `kept`: the small ones whole, the others an equal share of what is left
    (its truncation note included)."""
    ordered = sorted(tensors, key=lambda t: float("inf") if t.full is None else t.full)
    for i, t in enumerate(ordered):
        share = budget / (len(ordered) - i)
        if t.full is not None and t.full <= share:
            t.kept = t.n
            budget -= t.full
        else:
            t.kept = t.fitting(share - t.note)
            budget -= t.note + (t.costs[t.kept - 1] if t.kept else 0)


class Capturer:
    """Which requests are captured (`sampled`), and a captured request as a stream entry (`entry`)."""

    def __init__(self, model: str, rate: float, max_bytes: int, rng: random.Random | None = None):
        """`rate` within [0, 1], `max_bytes` at least MIN_BYTES (the spec's bounds, `spec.CAPTURE`)."""
        self.model, self.rate, self.max_bytes = model, rate, max_bytes
        self.rng = rng or random.Random()

    def sampled(self) -> bool:
        """Whether to capture the request at hand (a fraction `rate` of them)."""
        return self.rate > 0 and self.rng.random() < self.rate

    def entry(
        self,
        request_id: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        steps: list[StepRecord],
        latency_ms: float,
        fallback: bool,
        reason: str = "",
    ) -> dict[str, str]:
        """The stream entry of one captured request (flat string fields), at most `max_bytes`."""
        header = {
            "ts": f"{time.time():.3f}", "kind": KIND, "model": self.model,
            "request_id": (request_id or "")[:_TEXT_LIMIT], "latency_ms": f"{latency_ms:.2f}",
            "fallback": "1" if fallback else "0", "reason": reason, "capture_max_bytes": str(self.max_bytes),
        }
        tensors = _collect(inputs, steps, outputs, self.max_bytes // 2)
        infos = [{**s.info, **({"error": str(s.info["error"])[:_TEXT_LIMIT]} if "error" in s.info else {})}
                 for s in steps]

        def fields(encode, truncated: bool = True, with_steps: bool = True) -> dict[str, str]:
            def group(prefix: str, names) -> dict:
                return {n: {"same_as": t} if isinstance(t, str) else encode(t)
                        for n in names for t in [tensors[f"{prefix}.{n}"]]}

            doc = [{**info, "inputs": group(f"steps[{i}].inputs", s.inputs),
                    "outputs": group(f"steps[{i}].outputs", s.outputs)} if with_steps else info
                   for i, (info, s) in enumerate(zip(infos, steps, strict=True))]
            return {**header, "inputs": _dumps(group("inputs", inputs)), "outputs": _dumps(group("outputs", outputs)),
                    "steps": _dumps(doc), "truncated": "1" if truncated else "0"}

        real = [t for t in tensors.values() if isinstance(t, _Tensor)]
        if all(t.full is not None for t in real):
            whole = fields(lambda t: t.encode(t.n), truncated=False)
            if size(whole) <= self.max_bytes:
                return whole
        # room for values and notes: the cap less the entry without them
        budget = self.max_bytes - size(fields(lambda t: t.encode(bare=True)))
        if budget >= 0:
            _share_out(real, budget)
            fitted = fields(lambda t: t.encode())
            if size(fitted) <= self.max_bytes:
                return fitted
        for with_steps in (True, False):  # the tensors said omitted; then the steps' details left out
            omitted = fields(lambda t: t.encode(omitted=True), with_steps=with_steps)
            if size(omitted) <= self.max_bytes:
                return omitted
        note = _dumps([{"omitted": f"{len(steps)} steps: over capture_max_bytes"}])
        return {**header, "inputs": "{}", "outputs": "{}", "steps": note, "truncated": "1"}


def read_captures(client, stream: str, count: int, request_id: str | None = None) -> list[dict]:
    """The captures among the newest `count` entries of `stream`, oldest first (those of
    `request_id` only, when given); `steps` parsed, `truncated` a bool."""
    captures = []
    for item in read_recent(client, stream, count):
        if item.get("kind") != KIND or (request_id is not None and item.get("request_id") != request_id):
            continue
        item["steps"] = json.loads(item.get("steps") or "[]")
        item["truncated"] = item.get("truncated") == "1"
        captures.append(item)
    return captures
