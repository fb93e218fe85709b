"""Fault injection: forwards each request to a target model, adding latency, failures or a hang.

For tests and demos of deadlines, skips and fallbacks against real slow and failing models.
Parameters (pattern_kernel.specs.fault_injection):
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

from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.redis_link import connect
from pattern_kernel.triton_glue import call_model_async


class InjectedFault(RuntimeError):
    pass


class TritonPythonModel(PatternModel):

    def setup(self, args):
        p = self.params
        self.delay_s = p["latency_ms"] / 1000 + (p["hang_seconds"] if p["hang"] else 0.0)
        self.random = random.Random(p["seed"])
        self.redis = connect(self.params) if p["fault_key"] else None

    def _switched_fault(self) -> tuple[bool, float]:
        """(fail, extra seconds) from the fault_key switch."""
        if not self.redis:
            return False, 0.0
        try:
            value = (self.redis.get(self.params["fault_key"]) or b"").decode().strip()
        except redis.RedisError:
            return False, 0.0
        if value == "fail":
            return True, 0.0
        if value == "hang":
            return False, self.params["hang_seconds"]
        try:
            return False, max(0.0, float(value)) / 1000
        except ValueError:
            return False, 0.0

    async def answer(self, request, inputs):
        fail, delay_s = self._switched_fault()
        await asyncio.sleep(self.delay_s + delay_s)
        if fail or self.random.random() < self.params["failure_rate"]:
            raise InjectedFault(f"model '{self.config.name}': injected failure")
        p = self.params
        return await call_model_async("forward", p["target_model"], inputs, [s.name for s in self.config.outputs],
                                      p["target_version"])
