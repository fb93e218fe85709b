"""Serial microservice pattern as a BLS model: steps run in order, each step may be routed on
an earlier result, time-boxed, and skipped on error; every error names step, model, version.

Parameters (pattern_kernel.specs.serial):
  steps   JSON list; each step: name, model, version (-1 latest), inputs {callee: pool},
          outputs {callee: pool}, timeout_ms (none: no deadline, a synchronous BLS call, which
          is cheaper than async_exec), on_error "fail"|"skip", skip_values
          {pool: value}, when {"tensor": pool, "max_below"|"max_at_least"|"argmax_in"|"equals": v}
The pool starts with this model's inputs; this model's outputs are read from the pool at the
end. STEPS (JSON) reports each step: ran, skipped (error), not_taken (routing), with latency.
Metrics: pattern_fallbacks_total{model, pattern="serial", reason="step_skipped"} (skip_values used).
"""

from __future__ import annotations

import json
import time

import numpy as np

from pattern_kernel.batching import request_batch_size, to_config_rank
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.pipeline import parse_steps, should_run
from pattern_kernel.triton_glue import call_model, call_model_async, fallback_metrics


class TritonPythonModel(PatternModel):
    BACKEND = "serial"

    def setup(self, args):
        self.steps = parse_steps(self.params["steps"])
        self.fallbacks = fallback_metrics(self.config.name, "serial", ("step_skipped",))
        self.alone = True

    def execute(self, requests):
        # alone in its batch, a step without a deadline uses `exec`: it saves async_exec's hop
        # through a thread pool; several requests run their steps concurrently with async_exec
        self.alone = len(requests) == 1
        return super().execute(requests)

    async def _run(self, pool: dict[str, np.ndarray], rows: int):
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
                if step.timeout_ms is None and self.alone:
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
                for name, value in step.skip_values.items():
                    pool[name] = np.repeat(np.asarray([value]), rows, axis=0)
                entry.update(status="skipped", error=str(exc))
                self.fallbacks.increment(reason="step_skipped")
            entry["ms"] = round((time.perf_counter() - start) * 1000, 1)
        return pool, report

    async def answer(self, request, inputs):
        rows = request_batch_size(inputs)
        pool, report = await self._run(dict(inputs), rows)
        missing = [s.name for s in self.model_outputs if s.name not in pool]
        if missing:
            raise RuntimeError(f"no step produced {missing} (all skipped or not taken)")
        outputs = {s.name: to_config_rank(np.asarray(pool[s.name]).astype(s.dtype), s.dims, True)
                   for s in self.model_outputs}
        outputs["STEPS"] = np.array([json.dumps(report).encode()] * rows, dtype=object).reshape(rows, 1)
        return outputs
