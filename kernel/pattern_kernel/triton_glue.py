"""The only helper module that touches `triton_python_backend_utils` (available inside Triton).

It reads request inputs into numpy, builds responses and error responses, and wraps BLS calls
so that every failure names the model that failed and every call carries the trace of the
request it is made for (`traced`), so Triton records the callee as a child of that request.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import re
from collections.abc import Iterable, Mapping

import numpy as np
import triton_python_backend_utils as pb_utils

from pattern_kernel.batching import Runner, run_requests
from pattern_kernel.errors import FAILURE_REASONS, FALLBACK, InputError, StepError, StepTimeout, failure_reason
from pattern_kernel.model_config import TensorSpec


def read_inputs(request, specs: Iterable[TensorSpec]) -> dict[str, np.ndarray]:
    """Inputs of one request as numpy arrays; optional inputs that were not sent are left out."""
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        if tensor is None:
            if spec.optional:
                continue
            raise InputError(spec.name, "is required but was not sent")
        arrays[spec.name] = tensor.as_numpy()
    return arrays


def response(outputs: Mapping[str, np.ndarray], parameters: Mapping | None = None):
    tensors = [pb_utils.Tensor(name, np.ascontiguousarray(arr)) for name, arr in outputs.items()]
    if parameters:
        return pb_utils.InferenceResponse(output_tensors=tensors, parameters=dict(parameters))
    return pb_utils.InferenceResponse(output_tensors=tensors)


def error_response(exc: BaseException):
    """A per-request error: INVALID_ARG for bad input; a failed step keeps its callee's code
    (UNAVAILABLE when it has none); anything else is INTERNAL. Counted in this model's
    pattern_request_failures_total (see `count_failures`)."""
    count_failure(failure_reason(exc, pb_utils.TritonError.INVALID_ARG))
    if isinstance(exc, StepError):
        code = exc.code if exc.code is not None else pb_utils.TritonError.UNAVAILABLE
    elif isinstance(exc, InputError):
        code = pb_utils.TritonError.INVALID_ARG
    else:
        code = pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))


# InputError messages start like this; see _callee_code.
_BAD_INPUT = re.compile(r"^(in ensemble '[^']*', )?input '")


def _callee_code(error) -> int:
    """The callee's error code. BLS responses lose it (always INTERNAL, server #7804), so
    an error in the InputError format of the project's backends is taken as INVALID_ARG."""
    code = error.code()
    if code == pb_utils.TritonError.INTERNAL and _BAD_INPUT.match(error.message()):
        return pb_utils.TritonError.INVALID_ARG
    return code


# The trace of the request being answered (`request.trace()`), set by `traced`. Every BLS request
# built while it is set carries it, so Triton spawns the callee's trace as its child. A call made
# where it is not set (a thread pool: run_in_executor does not copy it; after the response) carries
# none, on purpose: python_backend hands the parent's trace over as a raw pointer, which Triton
# frees with the parent request, so a call that may outlive its request must not use it.
_request_trace: contextvars.ContextVar = contextvars.ContextVar("request_trace", default=None)


@contextlib.contextmanager
def traced(request):
    """BLS calls made inside this block (in this thread or task) are children of `request`'s trace."""
    token = _request_trace.set(request.trace())
    try:
        yield
    finally:
        _request_trace.reset(token)


def _bls_request(model, version, inputs, output_names, queue_timeout_us: int = 0):
    # timeout: how long the request may wait in the callee's queue (with allow_timeout_override)
    trace = _request_trace.get()
    return pb_utils.InferenceRequest(
        model_name=model,
        model_version=version,
        inputs=[pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in inputs.items()],
        requested_output_names=output_names,
        timeout=int(queue_timeout_us),
        **({} if trace is None else {"trace": trace}),
    )


def call_model(
    step: str,
    model: str,
    inputs: Mapping[str, np.ndarray],
    output_names: list[str],
    version: int = -1,
) -> dict[str, np.ndarray]:
    """Synchronous BLS call; returns the requested outputs or raises StepError."""
    request = _bls_request(model, version, inputs, output_names)
    return _outputs_or_error(step, model, version, request.exec(), output_names)


def _outputs_or_error(step, model, version, result, output_names) -> dict[str, np.ndarray]:
    if result.has_error():
        error = result.error()
        raise StepError(step, model, version, error.message(), _callee_code(error))
    outputs = {}
    for name in output_names:
        tensor = pb_utils.get_output_tensor_by_name(result, name)
        if tensor is None:
            raise StepError(step, model, version, f"returned no output '{name}'")
        outputs[name] = tensor.as_numpy()
    return outputs


def execute_requests(requests, specs: Iterable[TensorSpec], run: Runner, batching: bool) -> list:
    """The body of a typical `execute`: read inputs, run (merged when batching), respond;
    each failure becomes that request's error response and the others still succeed."""
    specs = list(specs)
    parsed = []
    for request in requests:
        try:
            parsed.append(read_inputs(request, specs))
        except Exception as exc:  # noqa: BLE001
            parsed.append(exc)
    return [
        error_response(r) if isinstance(r, BaseException) else response(r)
        for r in run_requests(parsed, run, batching)
    ]


# Calls given up on at their deadline but still running in the callee, per (model, version).
# A callee that stops answering would otherwise tie up the stub's BLS machinery until every
# call, to any model, waits: beyond `max_abandoned` such calls the callee is not called at all.
_abandoned: collections.Counter = collections.Counter()


async def call_model_async(
    step: str,
    model: str,
    inputs: Mapping[str, np.ndarray],
    output_names: list[str],
    version: int = -1,
    timeout_s: float | None = None,
    max_abandoned: int = 2,
    queue_timeout_us: int = 0,
) -> dict[str, np.ndarray]:
    """`call_model` with `async_exec`, bounded by `timeout_s` (StepTimeout when it passes).
    While `max_abandoned` earlier timed-out calls to the same callee are still running, fails at
    once with StepTimeout instead of piling another call onto it. `queue_timeout_us` (0: the
    callee's own policy) bounds the call's wait in the callee's queue, if the callee allows it."""
    import asyncio

    key = (model, version)
    if _abandoned[key] >= max_abandoned:
        raise StepTimeout(step, model, version, f"not called: {_abandoned[key]} earlier calls are still running "
                                                f"past their deadline")
    call = asyncio.ensure_future(_bls_request(model, version, inputs, output_names, queue_timeout_us).async_exec())
    try:
        # shield: on timeout we stop waiting; the callee's answer is dropped when it comes
        result = await asyncio.wait_for(asyncio.shield(call), timeout_s)
    except asyncio.TimeoutError:
        _abandoned[key] += 1
        call.add_done_callback(lambda _: _abandoned.subtract([key]))
        raise StepTimeout(step, model, version, f"no answer within {timeout_s * 1000:.0f} ms") from None
    return _outputs_or_error(step, model, version, result, output_names)


class Metrics:
    """A custom metric family (pb_utils.MetricFamily) and its metrics, one per label set, made on
    first use. The family is kept here: a Metric whose family was garbage-collected can't be
    updated. `kind` "counter" or "gauge"; `labels` are common to every metric of the family."""

    def __init__(self, name: str, description: str, labels: Mapping[str, str], kind: str = "counter"):
        kinds = {"counter": pb_utils.MetricFamily.COUNTER, "gauge": pb_utils.MetricFamily.GAUGE}
        self.family = pb_utils.MetricFamily(name=name, description=description, kind=kinds[kind])
        self.labels = dict(labels)
        self._metrics: dict = {}

    def metric(self, **labels: str):
        key = tuple(sorted(labels.items()))
        if key not in self._metrics:
            self._metrics[key] = self.family.Metric(labels={**self.labels, **labels})
        return self._metrics[key]

    def increment(self, amount: float = 1.0, **labels: str) -> None:
        self.metric(**labels).increment(amount)

    def set(self, value: float, **labels: str) -> None:
        self.metric(**labels).set(value)


# This model's pattern_request_failures_total; a stub process serves one model instance.
_failures: Metrics | None = None


def count_failures(args: Mapping[str, str]) -> None:
    """Make pattern_request_failures_total{model, version, reason} for the model being
    initialised (`args` of `initialize`), every reason's series at 0. From then on each error
    response (`error_response`) and each default answer (`fallback_metrics`) counts in it.

    Triton 2.51 counts an error response of a Python model in nv_inference_request_success,
    never in nv_inference_request_failure: this count is the one that sees those errors."""
    global _failures
    _failures = Metrics("pattern_request_failures_total",
                        "Requests a Python-based model answered with an error (or a default answer), by reason",
                        {"model": args["model_name"], "version": str(args["model_version"])})
    for reason in FAILURE_REASONS:
        _failures.metric(reason=reason)


def count_failure(reason: str) -> None:
    # From execute's thread or its event loop only: updating metrics from other threads
    # crashed tritonserver 2.51 (see the router backend).
    if _failures is not None:
        _failures.increment(reason=reason)


class _Fallbacks(Metrics):
    def increment(self, amount: float = 1.0, **labels: str) -> None:
        super().increment(amount, **labels)
        count_failure(FALLBACK)


def fallback_metrics(model: str, pattern: str, reasons: Iterable[str]) -> Metrics:
    """pattern_fallbacks_total{model, pattern, reason}: default answers a pattern returned instead
    of a model's, each also counted as a failure with reason "fallback". Every reason's series
    exists from the start (for dashboards and alerts)."""
    metrics = _Fallbacks("pattern_fallbacks_total", "Default answers returned instead of a model's, by reason",
                         {"model": model, "pattern": pattern})
    for reason in reasons:
        metrics.metric(reason=reason)
    return metrics
