"""Fault injection: forwards each request to a target model, adding latency, failures or a hang.

For tests and demos of deadlines, skips and fallbacks against real slow and failing models.
Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
The fault_key switch lets a test or an operator change the fault at run time: "fail" (error),
"hang" (sleep hang_seconds), a number (that many ms of latency); absent, anything else or Redis
down: no fault.
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
