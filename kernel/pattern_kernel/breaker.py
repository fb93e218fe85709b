"""Circuit breaker state machine (no Triton imports): closed -> open after `failure_threshold`
failures within `window_s` -> half-open after `cool_down_s` (up to `half_open_probes` calls let
through) -> closed on a probe's success, open again on its failure. Also the classification of
a failed call (bad input, overload, deadline, target error) and the forced-default switch."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable

import numpy as np

from pattern_kernel import errors

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the circuit_breaker_state gauge

# Fallback reasons, the FALLBACK_REASON output and the `reason` label of the fallback counter.
FORCED, CIRCUIT_OPEN, DEADLINE, OVERLOADED, TARGET_ERROR = "forced", "open", "deadline", "overloaded", "target_error"
REASONS = (FORCED, CIRCUIT_OPEN, DEADLINE, OVERLOADED, TARGET_ERROR)

FORCE_DEFAULT_ENV = "TRITON_PATTERNS_FORCE_DEFAULT"


class CircuitBreaker:
    """One breaker; `acquire()` says whether a call may go to the target, `release()` records
    how it went. `on_change(state)` is called on every transition (for the state gauge)."""

    def __init__(
        self,
        failure_threshold: int = 5,
        window_s: float = 10.0,
        cool_down_s: float = 5.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ):
        if failure_threshold < 1 or half_open_probes < 1 or window_s <= 0 or cool_down_s < 0:
            raise ValueError("failure_threshold and half_open_probes must be >= 1, window > 0, cool-down >= 0")
        self.failure_threshold, self.window_s = failure_threshold, window_s
        self.cool_down_s, self.half_open_probes = cool_down_s, half_open_probes
        self.clock, self.on_change = clock, on_change
        self._state = CLOSED
        self._failures: collections.deque[float] = collections.deque()
        self._opened_at = 0.0
        self._probes = 0  # probe calls in flight while half-open

    @property
    def state(self) -> str:
        if self._state == OPEN and self.clock() - self._opened_at >= self.cool_down_s:
            self._move(HALF_OPEN)
        return self._state

    def _move(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if state == OPEN:
            self._opened_at = self.clock()
        if state != HALF_OPEN:
            self._probes = 0
        if state == CLOSED:
            self._failures.clear()
        if self.on_change:
            self.on_change(state)

    def acquire(self) -> str | None:
        """None: do not call the target (answer with the default). Otherwise a ticket for
        `release`: "call" when closed, "probe" when half-open and a probe slot is free."""
        state = self.state
        if state == CLOSED:
            return "call"
        if state == HALF_OPEN and self._probes < self.half_open_probes:
            self._probes += 1
            return "probe"
        return None

    def release(self, ticket: str, ok: bool) -> None:
        """Record a call's outcome. A probe decides the half-open state; a late result of a call
        made while closed only counts as a failure in the closed state's window."""
        if ticket == "probe":
            self._probes = max(0, self._probes - 1)
            if self._state == HALF_OPEN:
                self._move(CLOSED if ok else OPEN)
            return
        if ok or self._state != CLOSED:
            return
        now = self.clock()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.failure_threshold:
            self._move(OPEN)


def forced_by_env(model: str, value: str | None) -> bool | None:
    """The environment switch: "1"/"true"/"all" forces every breaker's default, "0"/"false"/
    "none" forces none, a comma list forces the named models; unset or empty: no say (None)."""
    if value is None or not value.strip():
        return None
    v = value.strip().lower()
    if v in ("1", "true", "yes", "all"):
        return True
    if v in ("0", "false", "no", "none"):
        return False
    names = {n.strip() for n in value.split(",") if n.strip()}
    return True if model in names else None


# The fallback a failed target call gets, by its failure reason (errors.failure_reason); a bad
# input (the callee's INVALID_ARG) gets none: that error is the client's, not the target's.
_FALLBACK_OF = {errors.TIMEOUT: DEADLINE, errors.OVERLOAD: OVERLOADED, errors.CLIENT_ERROR: None}


def failure_reason(exc: BaseException, invalid_arg_code: int) -> str | None:
    """The fallback reason for a failed target call: DEADLINE for our own deadline, OVERLOADED
    when Triton shed it, TARGET_ERROR otherwise; None for a bad input (it stays an error)."""
    return _FALLBACK_OF.get(errors.failure_reason(exc, invalid_arg_code), TARGET_ERROR)


def default_outputs(text: str, specs, model: str) -> dict:
    """The configured default answer, one row per output: `text` is JSON {output: value}, a
    value being a scalar (repeated over the output's dims) or a list of the output's shape."""
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"model '{model}': default_outputs is not JSON: {exc}") from None
    rows = {}
    for spec in specs:
        if spec.name not in values:
            raise ValueError(f"model '{model}': default_outputs has no value for output '{spec.name}'")
        value = values[spec.name]
        if spec.dtype is np.object_:
            value = np.asarray([v.encode() if isinstance(v, str) else v for v in np.ravel(value)], dtype=object)
        try:
            rows[spec.name] = np.broadcast_to(np.asarray(value, dtype=spec.dtype), spec.dims).copy()
        except ValueError:
            raise ValueError(
                f"model '{model}': default for output '{spec.name}' does not fit its dims {list(spec.dims)}"
            ) from None
    return rows
