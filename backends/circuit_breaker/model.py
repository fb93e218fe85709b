"""Circuit breaker and fallback pattern as a BLS model wrapping one target model: when the
target fails, misses the deadline or is overloaded (Triton's queue policy sheds the call), or
while the circuit is open, the configured default answer is returned at once, flagged.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
`max_request_rows` is the target's max_batch_size when it is smaller than this model's (which
batches several requests); `force_default` is the switch to the default answer, and the
environment variable TRITON_PATTERNS_FORCE_DEFAULT overrides it.
Outputs: the target's outputs, FALLBACK (BOOL) and FALLBACK_REASON (STRING: "" or forced, open,
deadline, overloaded, target_error). A bad input (the target's INVALID_ARG) stays an error.
Metrics: circuit_breaker_state{model,target,instance} (0 closed, 1 half-open, 2 open),
pattern_fallbacks_total{model,pattern,reason}, prediction_log_records_total{model,result}.
"""

from __future__ import annotations

import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from pattern_kernel import breaker as cb
from pattern_kernel import prediction_log as plog
from pattern_kernel.batching import request_batch_size, to_config_rank
from pattern_kernel.errors import InputError
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.triton_glue import call_model_async, fallback_metrics


class TritonPythonModel(PatternModel):

    def setup(self, args):
        c, p = self.config, self.params
        self.target, self.version = p["target_model"], p["target_version"]
        self.defaults = cb.default_outputs(p["default_outputs"], self.model_outputs, c.name)
        by_env = cb.forced_by_env(c.name, os.environ.get(cb.FORCE_DEFAULT_ENV))
        self.forced = by_env if by_env is not None else p["force_default"]

        self.state_gauge = self.metrics("circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, "
                                        "2 open", kind="gauge", target=self.target,
                                        instance=args.get("model_instance_name", ""))
        self.fallbacks = fallback_metrics(c.name, "circuit_breaker", cb.REASONS)
        self.breaker = cb.CircuitBreaker(
            failure_threshold=p["failure_threshold"],
            window_s=p["window_ms"] / 1000,
            cool_down_s=p["cool_down_ms"] / 1000,
            half_open_probes=p["half_open_probes"],
            on_change=lambda state: self.state_gauge.set(cb.STATE_VALUES[state]),
        )
        self.state_gauge.set(cb.STATE_VALUES[cb.CLOSED])

        # this batch's prediction-log records, written after it (batch_done)
        self.log = self.prediction_log() if p["prediction_log"] == "redis" else None

    def _flagged(self, outputs, rows: int, reason: str):
        lead = (rows,) if self.config.batching else ()
        if reason:
            outputs = {n: np.broadcast_to(row, lead + row.shape).copy() for n, row in self.defaults.items()}
        else:  # the target's outputs in the config's rank (iris's LABEL comes back as [rows])
            outputs = {s.name: to_config_rank(outputs[s.name], s.dims, self.config.batching)
                       for s in self.model_outputs}
        return {
            **outputs,
            "FALLBACK": np.full(lead + (1,), bool(reason), dtype=bool),
            "FALLBACK_REASON": np.full(lead + (1,), reason.encode(), dtype=object),
        }

    async def _call_target(self, inputs) -> tuple[dict | None, str]:
        """(outputs, "") or (None, fallback reason); raises for a bad input."""
        if self.forced:
            return None, cb.FORCED
        ticket = self.breaker.acquire()
        if ticket is None:
            return None, cb.CIRCUIT_OPEN
        try:
            outputs = await call_model_async(
                "target", self.target, inputs, [s.name for s in self.model_outputs], self.version,
                self.params["deadline_ms"] / 1000,
                queue_timeout_us=int(self.params["target_queue_timeout_ms"] * 1000),
            )
        except Exception as exc:
            reason = cb.failure_reason(exc, pb_utils.TritonError.INVALID_ARG)
            self.breaker.release(ticket, ok=reason is None)  # a bad input: the target did answer
            if reason is None:
                raise
            return None, reason
        self.breaker.release(ticket, ok=True)
        return outputs, ""

    async def answer(self, request, inputs):
        start = time.perf_counter()
        rows = request_batch_size(inputs) if self.config.batching else 1
        max_rows = self.params["max_request_rows"]
        if max_rows and rows > max_rows:
            name = self.config.inputs[0].name
            raise InputError(name, f"at most {max_rows} rows per request ({self.target}'s limit), got {rows}")
        outputs, reason = await self._call_target(inputs)
        if reason:
            self.fallbacks.increment(reason=reason)
        answer = self._flagged(outputs, rows, reason)
        if self.log:
            self.log.add(plog.record(
                self.config.name, self.target, self.version, inputs,
                {s.name: answer[s.name] for s in self.model_outputs},
                (time.perf_counter() - start) * 1000, bool(reason), reason,
                reference=self.params["prediction_log_reference"],
            ))
        return answer

    def batch_done(self) -> None:
        if self.log:
            self.log.flush()
