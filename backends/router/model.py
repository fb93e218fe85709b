"""Router pattern as a BLS model: rollouts between model versions (canary, A/B, blue-green entry
point), shadow traffic and condition-based routing, chosen by configuration.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
`mode` picks the strategy (SplitMode, ShadowMode, ConditionMode below), each holding what its
mode needs. split (canary, A/B, the blue-green entry point): a request parameter (sticky_key,
e.g. user_id) picks the arm through a stable hash, so the same key stays on its arm; without it
the arm is drawn at random by weight. Weights may be overridden at run time by a Redis key,
re-read by a background thread, so they change without a restart or reload (key absent: the
config's weights; Redis down: the last weights read stay). shadow: the first target (primary)
answers; the request is mirrored to the second (candidate) in a thread pool of its own, never
awaited before the response; beyond shadow_max_in_flight a request is not mirrored (counted
"skipped"), so a slow candidate never piles up work. condition: each row goes to the first
rule it satisfies (op: < <= > >= == !=).
Outputs: the targets' outputs the config names, plus ARM and TARGET per row (arm name and
model:version that answered; for shadow, the primary). Batching configs only (max_batch_size > 0).
Metrics: router_requests_total{model, arm, target} (for shadow: primary calls and mirrored calls);
router_weight{model, arm} (split);
shadow_comparisons_total{model, candidate, result="agree"|"disagree"|"timeout"|"error"|"skipped"};
shadow_log_writes_total{model, result="ok"|"error"}.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
import uuid

import numpy as np
import redis
import triton_python_backend_utils as pb_utils

from pattern_kernel.batching import request_batch_size, to_config_rank
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.redis_link import connect
from pattern_kernel.routing import (
    Conditions,
    Split,
    agree,
    parse_arms,
    parse_rules,
    parse_weights,
    summarize,
    weights_from_json,
)
from pattern_kernel.triton_glue import call_model, call_model_async

SHADOW_RESULTS = ("agree", "disagree", "timeout", "error", "skipped")


def _strings(values: list[str]) -> np.ndarray:
    return np.array([[v.encode()] for v in values], dtype=object)


class TritonPythonModel(PatternModel):

    def setup(self, args):
        c = self.config
        if not c.batching:
            raise ValueError(f"model '{c.name}': the router needs max_batch_size > 0 (it routes rows)")
        self.arms = parse_arms(self.params["targets"], self.params["arms"])
        self.outputs = {s.name: s for s in self.model_outputs}
        self.route_outputs = [s.name for s in c.outputs if s.name in self.spec.extra_output_names]
        self.requests = self.metrics("router_requests_total", "Requests (or row groups) a router sent to each arm")
        for arm in self.arms:
            self.requests.metric(arm=arm.name, target=arm.target)
        self.strategy = MODES[self.params["mode"]](self)

    async def answer(self, request, inputs):
        parameters = json.loads(request.parameters() or "{}")
        return await self.strategy.answer(parameters, inputs, request_batch_size(inputs))

    def finalize(self):
        self.strategy.close()

    # -- what the strategies share

    async def call(self, arm_index: int, inputs) -> dict[str, np.ndarray]:
        arm = self.arms[arm_index]
        self.requests.increment(arm=arm.name, target=arm.target)
        out = await call_model_async(f"arm '{arm.name}'", arm.model, inputs, list(self.outputs), arm.version)
        return {name: to_config_rank(out[name], spec.dims, True) for name, spec in self.outputs.items()}

    def with_route(self, outputs: dict[str, np.ndarray], choice: np.ndarray) -> dict[str, np.ndarray]:
        values = {"ARM": [self.arms[i].name for i in choice], "TARGET": [self.arms[i].target for i in choice]}
        return {**outputs, **{name: _strings(values[name]) for name in self.route_outputs}}

    async def dispatch(self, inputs, choice: np.ndarray, rows: int) -> dict[str, np.ndarray]:
        """Each group of rows to its arm (at once); the answers put back in row order."""
        arms = sorted(set(choice.tolist()))
        if len(arms) == 1:
            return self.with_route(await self.call(arms[0], inputs), choice)
        masks = [choice == a for a in arms]
        parts = await asyncio.gather(*(
            self.call(a, {k: v[m] for k, v in inputs.items()}) for a, m in zip(arms, masks, strict=True)))
        outputs = {}
        for name, spec in self.outputs.items():
            merged = np.empty((rows, *spec.dims), dtype=parts[0][name].dtype)
            for mask, part in zip(masks, parts, strict=True):
                merged[mask] = part[name]
            outputs[name] = merged
        return self.with_route(outputs, choice)


class ConditionMode:
    """Rows go to arms by the request parameter or by rules on the inputs."""

    def __init__(self, router: TritonPythonModel):
        p = router.params
        self.router = router
        rules = parse_rules(p["rules"], router.arms, [s.name for s in router.config.inputs])
        self.conditions = Conditions(router.arms, p["route_parameter"], rules, p["default_arm"] or None)

    async def answer(self, parameters, inputs, rows: int):
        return await self.router.dispatch(inputs, self.conditions.choose(parameters, inputs, rows), rows)

    def close(self) -> None:
        pass


class SplitMode:
    """Weighted (sticky) choice of an arm per request; weights may change at run time from Redis."""

    def __init__(self, router: TritonPythonModel):
        p, name = router.params, router.config.name
        self.router, self.arms = router, router.arms
        self.split = Split(self.arms, parse_weights(p["weights"], self.arms), salt=p["hash_salt"] or name,
                           sticky_key=p["sticky_key"] or None, sticky_required=p["sticky_required"])
        self.gauges = router.metrics("router_weight", "The weight a router gives each arm now", kind="gauge")
        self.stopping = threading.Event()
        self._set_weights(self.split.config_weights, "config")
        self.weights_key = p["weights_key"]
        if self.weights_key:
            self.redis = connect(router.params)
            self._refresh_weights()
            threading.Thread(target=self._poll_weights, name="router-weights", daemon=True).start()
        self._sync_gauges()

    async def answer(self, parameters, inputs, rows: int):
        self._sync_gauges()
        return await self.router.dispatch(inputs, np.full(rows, self.split.choose(parameters), dtype=np.int64), rows)

    def close(self) -> None:
        self.stopping.set()

    def _set_weights(self, weights, source: str):
        """New weights in force; the gauges follow on the next request (see `_sync_gauges`)."""
        self.split.weights = tuple(weights)
        self.gauges_due = True
        shown = ", ".join(f"{a.name}={w:g}" for a, w in zip(self.arms, weights, strict=True))
        pb_utils.Logger.log_info(f"router '{self.router.config.name}': weights {shown} (from {source})")

    def _refresh_weights(self):
        try:
            raw = self.redis.get(self.weights_key)
        except redis.RedisError:
            return  # Redis down: keep the weights in force
        try:
            weights = self.split.config_weights if raw is None else weights_from_json(raw, self.arms)
        except ValueError as exc:
            pb_utils.Logger.log_warn(f"router '{self.router.config.name}': ignoring {self.weights_key}: {exc}")
            return
        if weights != self.split.weights:
            self._set_weights(weights, "config" if raw is None else f"Redis key {self.weights_key}")

    def _poll_weights(self):
        while not self.stopping.wait(self.router.params["weights_refresh_s"]):
            self._refresh_weights()

    def _sync_gauges(self):
        """Metrics are updated from the event loop's thread only: updating one from another thread
        while the loop updates others crashed tritonserver 2.51 (SIGSEGV in libtriton_python)."""
        if self.gauges_due:
            self.gauges_due = False
            for arm, weight in zip(self.arms, self.split.weights, strict=True):
                self.gauges.set(weight, arm=arm.name)


class ShadowMode:
    """The primary (first arm) answers; the candidate (second) gets a copy of the inputs in a
    thread pool of its own, and its answer is compared and logged after the response has gone."""

    def __init__(self, router: TritonPythonModel):
        p, name = router.params, router.config.name
        self.router, self.arms = router, router.arms
        if len(self.arms) != 2:
            raise ValueError(f"model '{name}': shadow mode needs two targets, the primary and the candidate")
        self.timeout_s = p["shadow_timeout_ms"] / 1000
        self.max_in_flight = p["shadow_max_in_flight"]
        self.in_flight = 0
        # one thread more than calls allowed: the log writes never wait behind a slow candidate
        self.pool = concurrent.futures.ThreadPoolExecutor(self.max_in_flight + 1, thread_name_prefix="shadow")
        self.background: set = set()
        self.stream = p["shadow_stream"] or f"shadow:{name}"
        self.compare = p["compare_output"]
        if self.compare not in router.outputs:
            raise ValueError(f"model '{name}': compare_output {self.compare!r} is not one of the outputs")
        self.redis = connect(router.params)
        self.counts = router.metrics("shadow_comparisons_total", "Shadow calls to a candidate by result",
                                     candidate=self.arms[1].target)
        for result in SHADOW_RESULTS:
            self.counts.metric(result=result)
        self.log_counts = router.metrics("shadow_log_writes_total", "Shadow comparisons written to the Redis stream")
        for result in ("ok", "error"):
            self.log_counts.metric(result=result)

    async def answer(self, parameters, inputs, rows: int):
        mirrored = self._mirror(inputs)
        started = time.perf_counter()
        try:
            primary = await self.router.call(0, inputs)
        except Exception as exc:
            if mirrored is not None:
                self._in_background(self._compare(mirrored, None, str(exc), 0.0, parameters))
            raise
        primary_ms = (time.perf_counter() - started) * 1000
        if mirrored is not None:
            self._in_background(self._compare(mirrored, primary, None, primary_ms, parameters))
        return self.router.with_route(primary, np.zeros(rows, dtype=np.int64))

    def close(self) -> None:
        self.pool.shutdown(wait=False)

    def _mirror(self, inputs):
        if self.in_flight >= self.max_in_flight:
            self.counts.increment(result="skipped")
            return None
        copied = {name: np.array(value, copy=True) for name, value in inputs.items()}  # outlives the request
        self.in_flight += 1
        arm = self.arms[1]
        self.router.requests.increment(arm=arm.name, target=arm.target)
        future = asyncio.get_running_loop().run_in_executor(self.pool, self._candidate, copied)
        future.add_done_callback(self._release)
        return future, copied

    def _release(self, _future):
        self.in_flight -= 1

    def _candidate(self, inputs):
        arm = self.arms[1]
        started = time.perf_counter()
        out = call_model("candidate", arm.model, inputs, list(self.router.outputs), arm.version)
        return out, (time.perf_counter() - started) * 1000

    def _in_background(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)  # a reference until done, or the task may be collected mid-way
        task.add_done_callback(self.background.discard)

    async def _compare(self, mirrored, primary, primary_error, primary_ms, parameters):
        future, inputs = mirrored
        entry = {"id": str(uuid.uuid4()), "ts": time.time(), "model": self.router.config.name,
                 "primary": self.arms[0].target, "candidate": self.arms[1].target,
                 "primary_ms": round(primary_ms, 2), "input": summarize(inputs), "parameters": parameters}
        try:
            candidate, candidate_ms = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
            entry.update(candidate_output=summarize(candidate), candidate_ms=round(candidate_ms, 2))
            if primary is None:
                result = "error"
            else:
                result = "agree" if agree(primary[self.compare], candidate[self.compare]) else "disagree"
        except asyncio.TimeoutError:
            result, entry["error"] = "timeout", f"candidate gave no answer within {self.timeout_s * 1000:.0f} ms"
        except Exception as exc:  # noqa: BLE001 - the candidate's failure is recorded, never raised
            result, entry["error"] = "error", str(exc)
        if primary is not None:
            entry["primary_output"] = summarize(primary)
        if primary_error is not None:
            entry["error"] = f"primary failed: {primary_error}"
        entry["result"] = result
        self.counts.increment(result=result)
        written = await asyncio.get_running_loop().run_in_executor(self.pool, self._log, entry)
        # metrics from the event loop's thread only (see SplitMode._sync_gauges)
        self.log_counts.increment(result="ok" if written else "error")

    def _log(self, entry: dict) -> bool:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in entry.items()}
        try:
            self.redis.xadd(self.stream, fields, maxlen=self.router.params["shadow_stream_maxlen"], approximate=True)
            return True
        except redis.RedisError:
            return False


MODES = {"split": SplitMode, "shadow": ShadowMode, "condition": ConditionMode}
