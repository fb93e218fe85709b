"""Fault injection: forwards each request to a target model, adding latency, failures or a hang.

For tests and demos of deadlines, skips and fallbacks against real slow and failing models.
parameters:
  target_model, target_version   the model that answers (its inputs/outputs = this model's)
  latency_ms      added before forwarding (default 0)
  failure_rate    0..1: fraction of requests answered with an UNAVAILABLE error (default 0)
  hang            "true": never answer within any sane deadline (sleeps hang_seconds, 600)
  seed            for the failure draws (default 0)
  fault_key       a Redis key read on every request, so a test or an operator can switch the
                  fault at run time: "fail" (error), "hang" (sleep hang_seconds), a number (that
                  many ms of latency); absent, anything else or Redis down: no fault. redis_url
                  and redis_timeout_ms as for the caches (env TRITON_PATTERNS_REDIS_URL wins)
"""

from __future__ import annotations

import asyncio
import random

import redis

from pattern_kernel.model_config import parse_model_config
from pattern_kernel.redis_link import connect
from pattern_kernel.triton_glue import call_model_async, count_failures, error_response, read_inputs, response


class InjectedFault(RuntimeError):
    pass


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.target = self.config.required_parameter("target_model")
        self.version = self.config.int_parameter("target_version", -1)
        self.latency_s = self.config.float_parameter("latency_ms", 0.0) / 1000
        self.failure_rate = self.config.float_parameter("failure_rate", 0.0)
        self.hang_s = (
            self.config.float_parameter("hang_seconds", 600.0)
            if self.config.parameter("hang", "false").lower() == "true"
            else 0.0
        )
        self.random = random.Random(self.config.int_parameter("seed", 0))
        self.outputs = [s.name for s in self.config.outputs]
        self.fault_key = self.config.parameter("fault_key")
        self.redis = connect(self.config) if self.fault_key else None

    def _switched_fault(self) -> tuple[bool, float]:
        """(fail, extra seconds) from the fault_key switch."""
        if not self.redis:
            return False, 0.0
        try:
            value = (self.redis.get(self.fault_key) or b"").decode().strip()
        except redis.RedisError:
            return False, 0.0
        if value == "fail":
            return True, 0.0
        if value == "hang":
            return False, self.config.float_parameter("hang_seconds", 600.0)
        try:
            return False, max(0.0, float(value)) / 1000
        except ValueError:
            return False, 0.0

    async def _one(self, request):
        try:
            inputs = read_inputs(request, self.config.inputs)
            fail, delay_s = self._switched_fault()
            await asyncio.sleep(self.latency_s + self.hang_s + delay_s)
            if fail or self.random.random() < self.failure_rate:
                raise InjectedFault(f"model '{self.config.name}': injected failure")
            return response(
                await call_model_async("forward", self.target, inputs, self.outputs, self.version)
            )
        except Exception as exc:  # noqa: BLE001 - this request's error
            return error_response(exc)

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._one(r) for r in requests)))
