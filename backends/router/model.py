"""Router pattern as a BLS model: rollouts between model versions (canary, A/B, blue-green entry
point), shadow traffic and condition-based routing, chosen by configuration.

parameters:
  mode          split | shadow | condition
  targets       comma list of model[:version], one per arm, e.g. "iris:1,iris:2"
  arms          the arms' names, one per target (default: the targets as written)
  split (canary, A/B, the blue-green entry point):
    weights          one weight per arm (default equal): each request's odds
    sticky_key       request parameter (e.g. user_id) whose value picks the arm through a stable
                     hash: the same key stays on its arm; without it the arm is drawn at random
    sticky_required  "true": a request without the key is refused (INVALID_ARG)
    hash_salt        default: the model name (a new salt reshuffles the keys for a new experiment)
    weights_key      Redis key holding {"arm": weight, ...} that overrides `weights` at run time,
                     re-read every weights_refresh_s (default 5) by a background thread, so weights
                     change without a restart or reload; key absent: the config's weights; Redis
                     down: the last weights read stay (redis_url, redis_timeout_ms as elsewhere)
  shadow: the first target (primary) answers; the request is mirrored to the second (candidate)
    in a thread pool of its own, never awaited before the response:
    shadow_timeout_ms     the candidate's deadline (default 5000)
    shadow_max_in_flight  candidate calls at once (default 2); beyond it a request is not mirrored
                          (counted "skipped"), so a slow candidate never piles up work
    shadow_stream         Redis stream of comparisons (default "shadow:<model>"), trimmed to about
                          shadow_stream_maxlen (default 10000) entries
    compare_output        the output compared for agreement (default LABEL)
  condition:
    route_parameter  request parameter naming an arm for all rows (default "target")
    rules            "INPUT[i] op number -> arm" separated by ";"; each row goes to the first rule it
                     satisfies (op: < <= > >= == !=)
    default_arm      the arm of rows no rule takes (default: the first arm)
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

from pattern_kernel.model_config import parse_model_config
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
from pattern_kernel.triton_glue import (
    call_model,
    call_model_async,
    count_failures,
    error_response,
    read_inputs,
    response,
)

ROUTE_OUTPUTS = ("ARM", "TARGET")
SHADOW_RESULTS = ("agree", "disagree", "timeout", "error", "skipped")


def _strings(values: list[str]) -> np.ndarray:
    return np.array([[v.encode()] for v in values], dtype=object)


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        c = self.config = parse_model_config(args["model_config"])
        if not c.batching:
            raise ValueError(f"model '{c.name}': the router needs max_batch_size > 0 (it routes rows)")
        self.mode = c.parameter("mode", "split")
        self.arms = parse_arms(c.required_parameter("targets"), c.parameter("arms"))
        self.outputs = {s.name: s for s in c.outputs if s.name not in ROUTE_OUTPUTS}
        self.route_outputs = [s.name for s in c.outputs if s.name in ROUTE_OUTPUTS]
        self.stopping = threading.Event()
        # families kept on self: a Metric whose MetricFamily was garbage-collected can't be updated
        self.request_family = pb_utils.MetricFamily(
            name="router_requests_total", description="Requests (or row groups) a router sent to each arm",
            kind=pb_utils.MetricFamily.COUNTER)
        self.requests = [
            self.request_family.Metric(labels={"model": c.name, "arm": a.name, "target": a.target}) for a in self.arms
        ]
        setup = {"split": self._setup_split, "shadow": self._setup_shadow, "condition": self._setup_condition}
        if self.mode not in setup:
            raise ValueError(f"model '{c.name}': mode must be one of {sorted(setup)}, got {self.mode!r}")
        setup[self.mode]()

    # -- set-up per mode

    def _setup_split(self):
        c = self.config
        self.split = Split(
            self.arms, parse_weights(c.parameter("weights"), self.arms), salt=c.parameter("hash_salt") or c.name,
            sticky_key=c.parameter("sticky_key") or None,
            sticky_required=c.parameter("sticky_required", "false").lower() == "true",
        )
        self.weight_family = pb_utils.MetricFamily(
            name="router_weight", description="The weight a router gives each arm now", kind=pb_utils.MetricFamily.GAUGE)
        self.weight_gauges = [self.weight_family.Metric(labels={"model": c.name, "arm": a.name}) for a in self.arms]
        self._set_weights(self.split.config_weights, "config")
        self.weights_key = c.parameter("weights_key", "")
        if self.weights_key:
            self.redis = connect(c)
            self.refresh_s = c.float_parameter("weights_refresh_s", 5.0)
            self._refresh_weights()
            threading.Thread(target=self._poll_weights, name="router-weights", daemon=True).start()
        self._sync_gauges()

    def _setup_shadow(self):
        c = self.config
        if len(self.arms) != 2:
            raise ValueError(f"model '{c.name}': shadow mode needs two targets, the primary and the candidate")
        self.shadow_timeout_s = c.float_parameter("shadow_timeout_ms", 5000) / 1000
        self.max_in_flight = c.int_parameter("shadow_max_in_flight", 2)
        self.in_flight = 0
        # one thread more than calls allowed: the log writes never wait behind a slow candidate
        self.shadow_pool = concurrent.futures.ThreadPoolExecutor(self.max_in_flight + 1, thread_name_prefix="shadow")
        self.background: set = set()
        self.stream = c.parameter("shadow_stream") or f"shadow:{c.name}"
        self.stream_maxlen = c.int_parameter("shadow_stream_maxlen", 10000)
        self.compare = c.parameter("compare_output", "LABEL")
        if self.compare not in self.outputs:
            raise ValueError(f"model '{c.name}': compare_output {self.compare!r} is not one of the outputs")
        self.redis = connect(c)
        family = self.shadow_family = pb_utils.MetricFamily(
            name="shadow_comparisons_total", description="Shadow calls to a candidate by result",
            kind=pb_utils.MetricFamily.COUNTER)
        candidate = self.arms[1].target
        self.shadow_counts = {r: family.Metric(labels={"model": c.name, "candidate": candidate, "result": r})
                              for r in SHADOW_RESULTS}
        self.log_family = pb_utils.MetricFamily(
            name="shadow_log_writes_total", description="Shadow comparisons written to the Redis stream",
            kind=pb_utils.MetricFamily.COUNTER)
        self.log_counts = {r: self.log_family.Metric(labels={"model": c.name, "result": r}) for r in ("ok", "error")}

    def _setup_condition(self):
        c = self.config
        rules = parse_rules(c.parameter("rules"), self.arms, [s.name for s in c.inputs])
        self.conditions = Conditions(self.arms, c.parameter("route_parameter", "target"), rules,
                                     c.parameter("default_arm") or None)

    # -- run-time weights (split)

    def _set_weights(self, weights, source: str):
        """New weights in force; the gauges follow on the next request (see `_sync_gauges`)."""
        self.split.weights = tuple(weights)
        self.gauges_due = True
        shown = ", ".join(f"{a.name}={w:g}" for a, w in zip(self.arms, weights))
        pb_utils.Logger.log_info(f"router '{self.config.name}': weights {shown} (from {source})")

    def _refresh_weights(self):
        try:
            raw = self.redis.get(self.weights_key)
        except redis.RedisError:
            return  # Redis down: keep the weights in force
        try:
            weights = self.split.config_weights if raw is None else weights_from_json(raw, self.arms)
        except ValueError as exc:
            pb_utils.Logger.log_warn(f"router '{self.config.name}': ignoring {self.weights_key}: {exc}")
            return
        if weights != self.split.weights:
            self._set_weights(weights, "config" if raw is None else f"Redis key {self.weights_key}")

    def _poll_weights(self):
        while not self.stopping.wait(self.refresh_s):
            self._refresh_weights()

    def _sync_gauges(self):
        """Metrics are updated from the event loop's thread only: updating one from another thread
        while the loop updates others crashed tritonserver 2.51 (SIGSEGV in libtriton_python)."""
        if self.gauges_due:
            self.gauges_due = False
            for gauge, weight in zip(self.weight_gauges, self.split.weights):
                gauge.set(weight)

    # -- requests

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, request):
        try:
            parameters = json.loads(request.parameters() or "{}")
            inputs = read_inputs(request, self.config.inputs)
            rows = len(next(iter(inputs.values())))
            if self.mode == "shadow":
                return await self._shadow(inputs, parameters, rows)
            if self.mode == "split":
                self._sync_gauges()
                choice = np.full(rows, self.split.choose(parameters), dtype=np.int64)
            else:
                choice = self.conditions.choose(parameters, inputs, rows)
            return response(await self._dispatch(inputs, choice, rows))
        except Exception as exc:  # noqa: BLE001 - this request's error
            return error_response(exc)

    async def _call(self, arm_index: int, inputs, rows: int) -> dict[str, np.ndarray]:
        arm = self.arms[arm_index]
        self.requests[arm_index].increment(1)
        out = await call_model_async(f"arm '{arm.name}'", arm.model, inputs, list(self.outputs), arm.version)
        return {name: out[name].reshape((rows, *self.outputs[name].dims)) for name in self.outputs}

    def _with_route(self, outputs: dict[str, np.ndarray], choice: np.ndarray) -> dict[str, np.ndarray]:
        values = {"ARM": [self.arms[i].name for i in choice], "TARGET": [self.arms[i].target for i in choice]}
        return {**outputs, **{name: _strings(values[name]) for name in self.route_outputs}}

    async def _dispatch(self, inputs, choice: np.ndarray, rows: int) -> dict[str, np.ndarray]:
        """Each group of rows to its arm (at once); the answers put back in row order."""
        arms = sorted(set(choice.tolist()))
        if len(arms) == 1:
            return self._with_route(await self._call(arms[0], inputs, rows), choice)
        masks = [choice == a for a in arms]
        parts = await asyncio.gather(*(
            self._call(a, {k: v[m] for k, v in inputs.items()}, int(m.sum())) for a, m in zip(arms, masks)))
        outputs = {}
        for name, spec in self.outputs.items():
            merged = np.empty((rows, *spec.dims), dtype=parts[0][name].dtype)
            for mask, part in zip(masks, parts):
                merged[mask] = part[name]
            outputs[name] = merged
        return self._with_route(outputs, choice)

    # -- shadow

    async def _shadow(self, inputs, parameters, rows: int):
        """The primary answers; the candidate gets a copy of the inputs in the shadow pool and its
        answer is compared and logged after the response has gone."""
        mirrored = self._mirror(inputs)
        started = time.perf_counter()
        try:
            primary = await self._call(0, inputs, rows)
        except Exception as exc:
            if mirrored is not None:
                self._in_background(self._compare(mirrored, None, str(exc), 0.0, parameters))
            raise
        primary_ms = (time.perf_counter() - started) * 1000
        if mirrored is not None:
            self._in_background(self._compare(mirrored, primary, None, primary_ms, parameters))
        return response(self._with_route(primary, np.zeros(rows, dtype=np.int64)))

    def _mirror(self, inputs):
        if self.in_flight >= self.max_in_flight:
            self.shadow_counts["skipped"].increment(1)
            return None
        copied = {name: np.array(value, copy=True) for name, value in inputs.items()}  # outlives the request
        self.in_flight += 1
        self.requests[1].increment(1)
        future = asyncio.get_running_loop().run_in_executor(self.shadow_pool, self._candidate, copied)
        future.add_done_callback(self._release)
        return future, copied

    def _release(self, _future):
        self.in_flight -= 1

    def _candidate(self, inputs):
        arm = self.arms[1]
        started = time.perf_counter()
        out = call_model("candidate", arm.model, inputs, list(self.outputs), arm.version)
        return out, (time.perf_counter() - started) * 1000

    def _in_background(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)  # a reference until done, or the task may be collected mid-way
        task.add_done_callback(self.background.discard)

    async def _compare(self, mirrored, primary, primary_error, primary_ms, parameters):
        future, inputs = mirrored
        entry = {"id": str(uuid.uuid4()), "ts": time.time(), "model": self.config.name,
                 "primary": self.arms[0].target, "candidate": self.arms[1].target,
                 "primary_ms": round(primary_ms, 2), "input": summarize(inputs), "parameters": parameters}
        try:
            candidate, candidate_ms = await asyncio.wait_for(asyncio.shield(future), self.shadow_timeout_s)
            entry.update(candidate_output=summarize(candidate), candidate_ms=round(candidate_ms, 2))
            if primary is None:
                result = "error"
            else:
                result = "agree" if agree(primary[self.compare], candidate[self.compare]) else "disagree"
        except asyncio.TimeoutError:
            result, entry["error"] = "timeout", f"candidate gave no answer within {self.shadow_timeout_s * 1000:.0f} ms"
        except Exception as exc:  # noqa: BLE001 - the candidate's failure is recorded, never raised
            result, entry["error"] = "error", str(exc)
        if primary is not None:
            entry["primary_output"] = summarize(primary)
        if primary_error is not None:
            entry["error"] = f"primary failed: {primary_error}"
        entry["result"] = result
        self.shadow_counts[result].increment(1)
        written = await asyncio.get_running_loop().run_in_executor(self.shadow_pool, self._log, entry)
        # metrics from the event loop's thread only (see _sync_gauges)
        self.log_counts["ok" if written else "error"].increment(1)

    def _log(self, entry: dict) -> bool:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in entry.items()}
        try:
            self.redis.xadd(self.stream, fields, maxlen=self.stream_maxlen, approximate=True)
            return True
        except redis.RedisError:
            return False

    def finalize(self):
        self.stopping.set()
        if self.mode == "shadow":
            self.shadow_pool.shutdown(wait=False)
