"""Time-difference pattern: the fast model answers at once, the slow model's answer follows.

parameters:
  fast_model, fast_version   answers within the request (BLS)
  slow_model, slow_version   the slow answer
  Two forms, chosen by the config's transaction policy:
  - not decoupled (`iris_time_difference`): the slow model runs as a job of the asynchronous
    pattern (`pattern_kernel.job_queue`: namespace, ttl_seconds, redis_url,
    redis_timeout_ms, max_rows as for async_queue); outputs the fast model's outputs plus
    JOB_ID (one per row, the same), whose result the workers store and `async_result` / the SDK's `wait` return. If
    Redis is down the fast answer still comes back, with an empty JOB_ID (metric error).
  - decoupled (`iris_time_difference_stream`, gRPC streaming): two responses on one stream,
    the fast answer then the slow one (BLS, bounded by slow_timeout_ms, default 10000), output
    STAGE ("fast" / "slow") saying which; Triton's native form, no queue, nothing survives a
    dropped connection.
Metric: time_difference_jobs_total{model, result="queued"|"error"}.
"""

from __future__ import annotations

import asyncio

import numpy as np
import redis
import triton_python_backend_utils as pb_utils

from pattern_kernel.job_queue import check_job_inputs, queue_for
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.triton_glue import call_model_async, count_failures, error_response, read_inputs, response

EXTRA = ("JOB_ID", "STAGE")


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        c = self.config = parse_model_config(args["model_config"])
        self.fast = c.required_parameter("fast_model"), c.int_parameter("fast_version", -1)
        self.slow = c.required_parameter("slow_model"), c.int_parameter("slow_version", -1)
        self.outputs = {s.name: s for s in c.outputs if s.name not in EXTRA}
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(c.raw)
        self.max_rows = c.int_parameter("max_rows", 64)
        if self.decoupled:
            self.slow_timeout_s = c.float_parameter("slow_timeout_ms", 10000) / 1000
            return
        self.queue = queue_for(c)
        self.metric_family = pb_utils.MetricFamily(
            name="time_difference_jobs_total",
            description="Slow-model jobs queued by a time-difference model (error: Redis down)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.counters = {
            r: self.metric_family.Metric(labels={"model": c.name, "result": r}) for r in ("queued", "error")
        }

    def _shaped(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs in the config's rank (iris's LABEL comes back as [rows])."""
        return {
            name: array.reshape(len(array), -1) if len(self.outputs[name].dims) == 2 and array.ndim == 1 else array
            for name, array in outputs.items()
        }

    async def _call(self, step: str, target: tuple[str, int], inputs, timeout_s: float | None = None):
        outputs = await call_model_async(step, target[0], inputs, list(self.outputs), target[1], timeout_s)
        return self._shaped(outputs)

    async def _with_job(self, request):
        """Queue the slow job first (its worker starts while the fast model runs), then answer."""
        try:
            inputs = read_inputs(request, self.config.inputs)
            check_job_inputs(inputs, self.max_rows)
            try:
                job_id = self.queue.submit(*self.slow, inputs, self.config.name)
                self.counters["queued"].increment(1)
            except redis.RedisError:
                job_id = ""
                self.counters["error"].increment(1)
            fast = await self._call("fast", self.fast, inputs)
            rows = len(next(iter(fast.values())))
            return response({**fast, "JOB_ID": np.array([[job_id.encode()]] * rows, dtype=object)})
        except Exception as exc:  # noqa: BLE001 - this request's error
            return error_response(exc)

    async def _stream(self, request) -> None:
        """Decoupled: send the fast answer, then the slow one, then close the stream."""
        sender = request.get_response_sender()
        try:
            inputs = read_inputs(request, self.config.inputs)
            check_job_inputs(inputs, self.max_rows)
            slow = asyncio.ensure_future(self._call("slow", self.slow, inputs, self.slow_timeout_s))
            try:
                fast = await self._call("fast", self.fast, inputs)
                sender.send(response({**fast, "STAGE": _stage("fast")}))
            except Exception as exc:  # noqa: BLE001 - the slow answer may still come
                sender.send(error_response(exc))
            sender.send(response({**(await slow), "STAGE": _stage("slow")}),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # noqa: BLE001
            sender.send(error_response(exc), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def execute(self, requests):
        if self.decoupled:
            await asyncio.gather(*(self._stream(r) for r in requests))
            return None
        return list(await asyncio.gather(*(self._with_job(r) for r in requests)))


def _stage(name: str) -> np.ndarray:
    return np.array([name.encode()], dtype=object)
