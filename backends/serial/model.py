"""Serial microservice pattern as a BLS model: steps run in order, each step may be routed on
an earlier result, time-boxed, and skipped on error; every error names step, model, version.

parameters:
  steps   JSON list; each step: name, model, version (-1 latest), inputs {callee: pool},
          outputs {callee: pool}, timeout_ms (none: no deadline, a synchronous BLS call, which
          is cheaper than async_exec), on_error "fail"|"skip", skip_values
          {pool: value}, when {"tensor": pool, "max_below"|"max_at_least"|"argmax_in"|"equals": v}
The pool starts with this model's inputs; this model's outputs are read from the pool at the
end. STEPS (JSON) reports each step: ran, skipped (error), not_taken (routing), with latency.
Metrics: pattern_fallbacks_total{model, pattern="serial", reason="step_skipped"} (skip_values used).
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from pattern_kernel.model_config import parse_model_config
from pattern_kernel.pipeline import parse_steps, should_run
from pattern_kernel.triton_glue import (
    call_model,
    call_model_async,
    count_failures,
    error_response,
    fallback_metrics,
    read_inputs,
    response,
)


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.steps = parse_steps(self.config.required_parameter("steps"))
        self.outputs = [s.name for s in self.config.outputs if s.name != "STEPS"]
        self.fallbacks = fallback_metrics(self.config.name, "serial", ("step_skipped",))

    async def _run(self, pool: dict[str, np.ndarray], alone: bool):
        report = []
        for step in self.steps:
            entry = {"step": step.name, "model": step.model, "version": step.version}
            report.append(entry)
            if not should_run(step, pool):
                entry["status"] = "not_taken"
                continue
            start = time.perf_counter()
            try:
                inputs = {callee: pool[name] for callee, name in step.inputs.items()}
                # alone in its batch, a step without a deadline uses `exec`: it saves async_exec's hop
                # through a thread pool; several requests run their steps concurrently with async_exec
                if step.timeout_ms is None and alone:
                    out = call_model(step.name, step.model, inputs, list(step.outputs), step.version)
                else:
                    out = await call_model_async(
                        step.name, step.model, inputs, list(step.outputs), step.version,
                        None if step.timeout_ms is None else step.timeout_ms / 1000,
                    )
                pool.update({step.outputs[k]: v for k, v in out.items()})
                entry["status"] = "ran"
            except Exception as exc:
                if step.on_error == "fail":
                    raise
                rows = next(iter(pool.values())).shape[0]
                for name, value in step.skip_values.items():
                    pool[name] = np.repeat(np.asarray([value]), rows, axis=0)
                entry.update(status="skipped", error=str(exc))
                self.fallbacks.increment(reason="step_skipped")
            entry["ms"] = round((time.perf_counter() - start) * 1000, 1)
        return pool, report

    async def _one(self, request, alone: bool = True):
        try:
            pool, report = await self._run(read_inputs(request, self.config.inputs), alone)
            missing = [n for n in self.outputs if n not in pool]
            if missing:
                raise RuntimeError(f"no step produced {missing} (all skipped or not taken)")
            rows = pool[self.outputs[0]].shape[0]
            outputs = {
                s.name: np.asarray(pool[s.name]).astype(s.dtype).reshape((rows, *s.dims))
                for s in self.config.outputs
                if s.name != "STEPS"
            }
            outputs["STEPS"] = np.array([json.dumps(report).encode()] * rows, dtype=object).reshape(rows, 1)
            return response(outputs)
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._one(r, len(requests) == 1) for r in requests)))
