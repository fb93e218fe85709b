"""Parallel microservice pattern as a BLS model: one request fans out to several models at
once, the answers that arrive in time are aggregated.

parameters:
  targets            comma list of model[:version], e.g. "iris:1,iris:2,iris_slow"
  target_timeout_ms  per-target deadline: one value, or one per target (comma list)
  deadline_ms        global deadline for the whole fan-out
  aggregation        majority | mean | max_confidence | all
  min_answers        answers needed; with fewer, the default answer is returned
  default_label      class id of the default answer (its scores are uniform)
Deadlines are enforced here with asyncio (the BLS `timeout` only bounds queueing in the callee).
Outputs: the config's label and scores outputs, plus REPORT (JSON: which targets answered, timed
out or failed, their latencies, and whether the default was used).
Metrics: pattern_fallbacks_total{model, pattern="parallel", reason="min_answers"} (default answers).
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from pattern_kernel.aggregation import POLICIES, aggregate
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.triton_glue import (
    StepTimeout,
    call_model_async,
    count_failures,
    error_response,
    fallback_metrics,
    read_inputs,
    response,
)
from pattern_kernel.validation import parse_list, parse_targets


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.targets = parse_targets(self.config.required_parameter("targets"))
        timeouts = parse_list(self.config.parameter("target_timeout_ms", "1000"), float)
        if len(timeouts) not in (1, len(self.targets)):
            raise ValueError(f"model '{self.config.name}': target_timeout_ms needs 1 or {len(self.targets)} values")
        self.timeouts_s = [t / 1000 for t in (timeouts * len(self.targets) if len(timeouts) == 1 else timeouts)]
        self.deadline_s = self.config.float_parameter("deadline_ms", 2000) / 1000
        self.policy = self.config.parameter("aggregation", "majority")
        if self.policy not in POLICIES:
            raise ValueError(f"model '{self.config.name}': aggregation must be one of {POLICIES}")
        self.min_answers = self.config.int_parameter("min_answers", 1)
        self.default_label = self.config.int_parameter("default_label", 0)
        self.label_name, self.scores_name = "LABEL", "PROBABILITIES"
        self.fallbacks = fallback_metrics(self.config.name, "parallel", ("min_answers",))

    async def _target(self, index: int, inputs):
        model, version = self.targets[index]
        start = time.perf_counter()
        try:
            out = await call_model_async(
                f"target {index}", model, inputs, [self.scores_name], version, self.timeouts_s[index]
            )
            status, value = "answered", out[self.scores_name]
        except StepTimeout as exc:
            status, value = "timed_out", str(exc)
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            status, value = "failed", str(exc)
        return status, value, round((time.perf_counter() - start) * 1000, 1)

    async def _one(self, request):
        try:
            inputs = read_inputs(request, self.config.inputs)
            rows = next(iter(inputs.values())).shape[0]
            tasks = [asyncio.ensure_future(self._target(i, inputs)) for i in range(len(self.targets))]
            started = time.perf_counter()
            done, _ = await asyncio.wait(tasks, timeout=self.deadline_s)
            report, answers = [], []
            for i, task in enumerate(tasks):
                model, version = self.targets[i]
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
            fallback = len(answers) < self.min_answers
            if fallback:
                self.fallbacks.increment(reason="min_answers")
                k = self.config.outputs[[s.name for s in self.config.outputs].index(self.scores_name)].dims[-1]
                labels = np.full(rows, self.default_label, dtype=np.int64)
                scores = np.full((rows, k), 1.0 / k, dtype=np.float32)
            else:
                labels, scores = aggregate(self.policy, answers)
            summary = {
                "aggregation": self.policy, "answers": len(answers), "min_answers": self.min_answers,
                "fallback": fallback, "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
                "targets": report,
            }
            return response({
                self.label_name: labels.astype(np.int64).reshape(rows, 1),
                self.scores_name: scores.astype(np.float32),
                "REPORT": np.array([json.dumps(summary).encode()] * rows, dtype=object).reshape(rows, 1),
            })
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._one(r) for r in requests)))
