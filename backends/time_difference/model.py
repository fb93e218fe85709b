"""Time-difference pattern: the fast model answers at once, the slow model's answer follows.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
Two forms, chosen by the config's transaction policy:
  - not decoupled (`iris_time_difference`): the slow model runs as a job of the asynchronous
    pattern (`pattern_kernel.job_queue`); outputs the fast model's outputs plus
    JOB_ID (one per row, the same), whose result the workers store and `async_result` / the SDK's `wait` return. If
    Redis is down the fast answer still comes back, with an empty JOB_ID (metric error).
  - decoupled (`iris_time_difference_stream`, gRPC streaming): two responses on one stream,
    the fast answer then the slow one (BLS, bounded by slow_timeout_ms), output
    STAGE ("fast" / "slow") saying which; Triton's native form, no queue, nothing survives a
    dropped connection.
Metric: time_difference_jobs_total{model, result="queued"|"error"}.
"""

from __future__ import annotations

import asyncio

import numpy as np
import redis
import triton_python_backend_utils as pb_utils

from pattern_kernel.batching import request_batch_size, to_config_rank
from pattern_kernel.job_queue import check_job_inputs, queue_for
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.triton_glue import call_model_async, error_response, read_inputs, response, traced


class TritonPythonModel(PatternModel):

    def setup(self, args):
        p = self.params
        self.fast = p["fast_model"], p["fast_version"]
        self.slow = p["slow_model"], p["slow_version"]
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(self.config.raw)
        if self.decoupled:
            return
        self.queue = queue_for(self.params)
        self.jobs = self.metrics("time_difference_jobs_total",
                                 "Slow-model jobs queued by a time-difference model (error: Redis down)")
        for result in ("queued", "error"):
            self.jobs.metric(result=result)

    async def _call(self, step: str, target: tuple[str, int], inputs, timeout_s: float | None = None):
        outputs = await call_model_async(step, target[0], inputs, [s.name for s in self.model_outputs], target[1],
                                         timeout_s)
        return {s.name: to_config_rank(outputs[s.name], s.dims, self.config.batching) for s in self.model_outputs}

    async def answer(self, request, inputs):
        """Queue the slow job first (its worker starts while the fast model runs), then answer."""
        check_job_inputs(inputs, self.params["max_rows"])
        try:
            job_id = self.queue.submit(*self.slow, inputs, self.config.name)
            self.jobs.increment(result="queued")
        except redis.RedisError:
            job_id = ""
            self.jobs.increment(result="error")
        fast = await self._call("fast", self.fast, inputs)
        return {**fast, "JOB_ID": np.array([[job_id.encode()]] * request_batch_size(inputs), dtype=object)}

    async def _stream(self, request) -> None:
        """Decoupled: send the fast answer, then the slow one, then close the stream."""
        with traced(request):  # both calls end before the final response: the request (and its trace) lives on
            await self._stream_answers(request)

    async def _stream_answers(self, request) -> None:
        sender = request.get_response_sender()
        try:
            inputs = read_inputs(request, self.config.inputs)
            check_job_inputs(inputs, self.params["max_rows"])
            slow = asyncio.ensure_future(self._call("slow", self.slow, inputs, self.params["slow_timeout_ms"] / 1000))
            try:
                fast = await self._call("fast", self.fast, inputs)
                sender.send(response({**fast, "STAGE": _stage("fast")}))
            except Exception as exc:  # noqa: BLE001 - the slow answer may still come
                sender.send(error_response(exc))
            sender.send(response({**(await slow), "STAGE": _stage("slow")}),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # noqa: BLE001
            sender.send(error_response(exc), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def execute(self, requests):
        if self.decoupled:
            return self._stream_all(requests)
        return super().execute(requests)

    async def _stream_all(self, requests) -> None:
        await asyncio.gather(*(self._stream(r) for r in requests))


def _stage(name: str) -> np.ndarray:
    return np.array([name.encode()], dtype=object)
