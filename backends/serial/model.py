"""Serial microservice pattern as a BLS model: steps run in order, each step may be routed on
an earlier result, time-boxed, and skipped on error; every error names step, model, version.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
A step without timeout_ms is a synchronous BLS call (cheaper than async_exec).
The pool starts with this model's inputs; this model's outputs are read from the pool at the
end. STEPS (JSON) reports each step: ran, skipped (error), not_taken (routing), with latency
(a failed step is named in the request's error).
The steps' inputs and outputs may be captured, sampled, to the prediction-log stream
(pattern_kernel.capture).
Metrics: pattern_fallbacks_total{model, pattern="serial", reason="step_skipped"} (skip_values used).
"""

from __future__ import annotations

import json
import time

import numpy as np

from pattern_kernel.batching import request_batch_size, to_config_rank
from pattern_kernel.capture import Capturer, StepRecord
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.pipeline import parse_steps, should_run
from pattern_kernel.triton_glue import call_model, call_model_async, fallback_metrics


class TritonPythonModel(PatternModel):

    def setup(self, args):
        self.steps = parse_steps(self.params["steps"])
        self.fallbacks = fallback_metrics(self.config.name, "serial", ("step_skipped",))
        self.alone = True
        p = self.params
        self.capturer = Capturer(self.config.name, p["capture_rate"], p["capture_max_bytes"])
        self.log = self.prediction_log() if p["capture_rate"] > 0 else None

    def execute(self, requests):
        # alone in its batch, a step without a deadline uses `exec`: it saves async_exec's hop
        # through a thread pool; several requests run their steps concurrently with async_exec
        self.alone = len(requests) == 1
        return super().execute(requests)

    async def _run(self, pool: dict[str, np.ndarray], rows: int, report: list, captured: dict | None = None):
        """Runs the steps over `pool`, each reported in `report`; `captured` (when given) gets each
        step's (inputs, outputs) by its index."""
        for i, step in enumerate(self.steps):
            entry = {"step": step.name, "model": step.model, "version": step.version}
            report.append(entry)
            if not should_run(step, pool):
                entry["status"] = "not_taken"
                continue
            start = time.perf_counter()
            inputs, out = {}, {}
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
                    entry.update(status="failed", error=str(exc))
                    raise
                for name, value in step.skip_values.items():
                    pool[name] = np.repeat(np.asarray([value]), rows, axis=0)
                entry.update(status="skipped", error=str(exc))
                self.fallbacks.increment(reason="step_skipped")
            finally:
                entry["ms"] = round((time.perf_counter() - start) * 1000, 1)
                if captured is not None:
                    captured[i] = (inputs, out)
        return pool

    async def answer(self, request, inputs):
        start = time.perf_counter()
        rows = request_batch_size(inputs)
        report, outputs = [], {}
        captured = {} if self.capturer.sampled() else None
        try:
            pool = await self._run(dict(inputs), rows, report, captured)
            missing = [s.name for s in self.model_outputs if s.name not in pool]
            if missing:
                raise RuntimeError(f"no step produced {missing} (all skipped or not taken)")
            outputs = {s.name: to_config_rank(np.asarray(pool[s.name]).astype(s.dtype), s.dims, True)
                       for s in self.model_outputs}
        finally:  # a failed request is captured too, up to its failed step
            if captured is not None:
                self._capture(request, inputs, outputs, report, captured, start)
        outputs["STEPS"] = np.array([json.dumps(report).encode()] * rows, dtype=object).reshape(rows, 1)
        return outputs

    def _capture(self, request, inputs, outputs, report: list, captured: dict, start: float) -> None:
        steps = [StepRecord(info, *captured.get(i, ({}, {}))) for i, info in enumerate(report)]
        skipped = any(e.get("status") == "skipped" for e in report)
        reason = "error" if not outputs else "step_skipped" if skipped else ""
        self.log.add(self.capturer.entry(request.request_id(), inputs, outputs, steps,
                                         (time.perf_counter() - start) * 1000, skipped, reason))

    def batch_done(self) -> None:
        if self.log is not None:
            self.log.flush()
