"""Circuit breaker and fallback pattern as a BLS model wrapping one target model: when the
target fails, misses the deadline or is overloaded (Triton's queue policy sheds the call), or
while the circuit is open, the configured default answer is returned at once, flagged.

parameters:
  target_model, target_version  the wrapped model (its inputs/outputs = this model's, less flags)
  deadline_ms          the target's answer is awaited at most this long (default 1000)
  target_queue_timeout_ms  sent as the BLS request timeout: the call may wait this long in the
                       target's queue (needs allow_timeout_override there; default 0: its own policy)
  max_request_rows     rows one request may have (default 0: any): the target's max_batch_size
                       when it is smaller than this model's, which batches several requests
  failure_threshold    failures within window_ms that open the circuit (default 5; window 10000)
  cool_down_ms         open -> half-open after this (default 5000); half_open_probes calls are
                       then let through (default 1): a success closes, a failure re-opens
  default_outputs      JSON {output: value}: the fallback answer per row (scalar or list)
  force_default        "true": always answer the default (the seeds' switch to the default);
                       env TRITON_PATTERNS_FORCE_DEFAULT overrides: "true"/"all", "false"/"none",
                       or a comma list of model names forced
  prediction_log       "redis": one record per request to the Redis stream prediction_log:<model>
                       (prediction_log_stream, prediction_log_maxlen 10000; redis_url as the cache);
                       prediction_log_reference: model:version whose manifest holds the training
                       statistics (for `triton-patterns drift`)
Outputs: the target's outputs, FALLBACK (BOOL) and FALLBACK_REASON (STRING: "" or forced, open,
deadline, overloaded, target_error). A bad input (the target's INVALID_ARG) stays an error.
Metrics: circuit_breaker_state{model,target,instance} (0 closed, 1 half-open, 2 open),
pattern_fallbacks_total{model,pattern,reason}, prediction_log_records_total{model,result}.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import redis
import triton_python_backend_utils as pb_utils

from pattern_kernel import breaker as cb
from pattern_kernel import prediction_log as plog
from pattern_kernel.errors import InputError
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.redis_link import connect
from pattern_kernel.triton_glue import (
    Metrics,
    call_model_async,
    count_failures,
    error_response,
    fallback_metrics,
    read_inputs,
    response,
)

FLAGS = ("FALLBACK", "FALLBACK_REASON")


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        c = self.config = parse_model_config(args["model_config"])
        self.target = c.required_parameter("target_model")
        self.version = c.int_parameter("target_version", -1)
        self.deadline_s = c.float_parameter("deadline_ms", 1000) / 1000
        self.queue_timeout_us = int(c.float_parameter("target_queue_timeout_ms", 0) * 1000)
        self.max_rows = c.int_parameter("max_request_rows", 0)
        self.specs = [s for s in c.outputs if s.name not in FLAGS]
        self.defaults = cb.default_outputs(c.required_parameter("default_outputs"), self.specs, c.name)
        by_env = cb.forced_by_env(c.name, os.environ.get(cb.FORCE_DEFAULT_ENV))
        self.forced = by_env if by_env is not None else c.parameter("force_default", "false").lower() == "true"

        labels = {"model": c.name, "target": self.target}
        self.state_gauge = Metrics("circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                                   {**labels, "instance": args.get("model_instance_name", "")}, kind="gauge")
        self.fallbacks = fallback_metrics(c.name, "circuit_breaker", cb.REASONS)
        self.breaker = cb.CircuitBreaker(
            failure_threshold=c.int_parameter("failure_threshold", 5),
            window_s=c.float_parameter("window_ms", 10000) / 1000,
            cool_down_s=c.float_parameter("cool_down_ms", 5000) / 1000,
            half_open_probes=c.int_parameter("half_open_probes", 1),
            on_change=lambda state: self.state_gauge.set(cb.STATE_VALUES[state]),
        )
        self.state_gauge.set(cb.STATE_VALUES[cb.CLOSED])

        self.log_stream = None
        if c.parameter("prediction_log", "off") == "redis":
            self.redis = connect(c)
            self.log_stream = c.parameter("prediction_log_stream") or plog.stream_name(c.name)
            self.log_maxlen = c.int_parameter("prediction_log_maxlen", 10000)
            self.log_reference = c.parameter("prediction_log_reference", "")
            self.log_records = Metrics("prediction_log_records_total",
                                       "Prediction log records written (error: the sink was unavailable)",
                                       {"model": c.name})
            for result in ("written", "error"):
                self.log_records.metric(result=result)

    def _shaped(self, outputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """The target's outputs in the config's rank (iris's LABEL comes back as [rows])."""
        shaped = {}
        for spec in self.specs:
            array = outputs[spec.name]
            want = ((rows,) if self.config.batching else ()) + spec.dims
            if array.shape != want and -1 not in spec.dims and array.size == int(np.prod(want)):
                array = array.reshape(want)
            shaped[spec.name] = array
        return shaped

    def _answer(self, outputs, rows: int, reason: str):
        lead = (rows,) if self.config.batching else ()
        if reason:
            outputs = {n: np.broadcast_to(row, lead + row.shape).copy() for n, row in self.defaults.items()}
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
                "target", self.target, inputs, [s.name for s in self.specs], self.version, self.deadline_s,
                queue_timeout_us=self.queue_timeout_us,
            )
        except Exception as exc:
            reason = cb.failure_reason(exc, pb_utils.TritonError.INVALID_ARG)
            self.breaker.release(ticket, ok=reason is None)  # a bad input: the target did answer
            if reason is None:
                raise
            return None, reason
        self.breaker.release(ticket, ok=True)
        return outputs, ""

    async def _one(self, request):
        """(response, prediction-log record or None)."""
        start = time.perf_counter()
        try:
            inputs = read_inputs(request, self.config.inputs)
            rows = next(iter(inputs.values())).shape[0] if self.config.batching else 1
            if self.max_rows and rows > self.max_rows:
                name = self.config.inputs[0].name
                raise InputError(name, f"at most {self.max_rows} rows per request ({self.target}'s limit), got {rows}")
            outputs, reason = await self._call_target(inputs)
            if reason:
                self.fallbacks.increment(reason=reason)
            answer = self._answer(self._shaped(outputs, rows) if outputs else None, rows, reason)
        except Exception as exc:  # noqa: BLE001
            return error_response(exc), None
        record = None
        if self.log_stream:
            record = plog.record(
                self.config.name, self.target, self.version, inputs,
                {k: v for k, v in answer.items() if k not in FLAGS},
                (time.perf_counter() - start) * 1000, bool(reason), reason, reference=self.log_reference,
            )
        return response(answer), record

    def _log(self, records) -> None:
        try:
            written = plog.append(self.redis, self.log_stream, records, self.log_maxlen)
            if written:
                self.log_records.increment(written, result="written")
        except redis.RedisError:
            self.log_records.increment(len(records), result="error")

    async def execute(self, requests):
        results = await asyncio.gather(*(self._one(r) for r in requests))
        records = [record for _, record in results if record is not None]
        if records:
            self._log(records)
        return [resp for resp, _ in results]
