"""Parallel microservice pattern as a BLS model: one request fans out to several models at
once, the answers that arrive in time are aggregated.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
Deadlines are enforced here with asyncio (the BLS `timeout` only bounds queueing in the callee).
Outputs: the config's label and scores outputs, plus REPORT.
Metrics: pattern_fallbacks_total{model, pattern="parallel", reason="min_answers"} (default answers).
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from pattern_kernel.aggregation import aggregate
from pattern_kernel.batching import request_batch_size
from pattern_kernel.capture import Capturer, StepRecord
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.triton_glue import StepTimeout, call_model_async, fallback_metrics
from pattern_kernel.validation import parse_list, parse_targets

LABEL, SCORES = "LABEL", "PROBABILITIES"


class TritonPythonModel(PatternModel):

    def setup(self, args):
        self.targets = parse_targets(self.params["targets"])
        timeouts = parse_list(self.params["target_timeout_ms"], float)
        if len(timeouts) not in (1, len(self.targets)):
            raise ValueError(f"model '{self.config.name}': target_timeout_ms needs 1 or {len(self.targets)} values")
        self.timeouts_s = [t / 1000 for t in (timeouts * len(self.targets) if len(timeouts) == 1 else timeouts)]
        self.classes = next(s.dims[-1] for s in self.config.outputs if s.name == SCORES)
        self.fallbacks = fallback_metrics(self.config.name, "parallel", ("min_answers",))
        rate = self.params["capture_rate"]
        self.capturer = Capturer(self.config.name, rate, self.params["capture_max_bytes"])
        self.log = self.prediction_log() if rate > 0 else None

    async def _target(self, index: int, inputs):
        model, version = self.targets[index]
        start = time.perf_counter()
        try:
            out = await call_model_async(f"target {index}", model, inputs, [SCORES], version, self.timeouts_s[index])
            status, value = "answered", out[SCORES]
        except StepTimeout as exc:
            status, value = "timed_out", str(exc)
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            status, value = "failed", str(exc)
        return status, value, round((time.perf_counter() - start) * 1000, 1)

    async def answer(self, request, inputs):
        p = self.params
        rows = request_batch_size(inputs)
        tasks = [asyncio.ensure_future(self._target(i, inputs)) for i in range(len(self.targets))]
        started = time.perf_counter()
        done, _ = await asyncio.wait(tasks, timeout=p["deadline_ms"] / 1000)
        report, answers = [], []
        for (model, version), task in zip(self.targets, tasks, strict=True):
            entry = {"target": model, "version": version}
            if task in done:
                status, value, ms = task.result()
                entry.update(status=status, ms=ms)
                if status == "answered":
                    answers.append(value)
                else:
                    entry["error"] = value
            else:
                entry.update(status="timed_out", error="global deadline passed")
            report.append(entry)
        fallback = len(answers) < p["min_answers"]
        if fallback:
            self.fallbacks.increment(reason="min_answers")
            labels = np.full(rows, p["default_label"], dtype=np.int64)
            scores = np.full((rows, self.classes), 1.0 / self.classes, dtype=np.float32)
        else:
            labels, scores = aggregate(p["aggregation"], answers)
        summary = {
            "aggregation": p["aggregation"], "answers": len(answers), "min_answers": p["min_answers"],
            "fallback": fallback, "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            "targets": report,
        }
        outputs = {LABEL: labels.astype(np.int64).reshape(rows, 1), SCORES: scores.astype(np.float32)}
        if self.capturer.sampled():
            steps = [StepRecord({"step": f"target {i}", "model": e.pop("target"), **e}, inputs,
                                {SCORES: task.result()[1]} if e["status"] == "answered" else {})
                     for i, (e, task) in enumerate(zip([dict(e) for e in report], tasks, strict=True))]
            self.log.add(self.capturer.entry(request.request_id(), inputs, outputs, steps,
                                             (time.perf_counter() - started) * 1000, fallback,
                                             "min_answers" if fallback else ""))
        outputs["REPORT"] = np.array([json.dumps(summary).encode()] * rows, dtype=object).reshape(rows, 1)
        return outputs

    def batch_done(self) -> None:
        if self.log is not None:
            self.log.flush()
