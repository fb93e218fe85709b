"""Errors a backend turns into a per-request Triton error (the server keeps serving), and the
classification of a failure for the `reason` label of `pattern_request_failures_total`."""

from __future__ import annotations


class InputError(ValueError):
    """A request is unusable: the client's error, the only one answered INVALID_ARG. The
    message names the input (or, with `kind`, e.g. "request parameter", what else) and what was
    expected. Any other ValueError is this model's own failure (INTERNAL)."""

    def __init__(self, input_name: str, problem: str, kind: str = "input"):
        self.input_name = input_name
        super().__init__(f"{kind} '{input_name}': {problem}")


class StepError(RuntimeError):
    """A model called by an orchestrating backend (BLS) failed; names the step and model."""

    def __init__(
        self, step: str, model: str, version: str | int | None, problem: str, code: int | None = None
    ):
        # code: the callee's Triton error code, so that bad input stays INVALID_ARG upstream
        self.step, self.model, self.version, self.code = step, model, version, code
        where = f"model '{model}'" + (f" version {version}" if version not in (None, "", -1) else "")
        super().__init__(f"step '{step}' ({where}) failed: {problem}")


class StepTimeout(StepError):
    """A called model did not answer within the deadline the orchestrator enforces itself
    (BLS `timeout` only bounds queueing in the callee)."""


# What Triton's dynamic batcher answers when its queue policy sheds a request (max_queue_size,
# or a queue timeout with timeout_action REJECT); BLS may lose the UNAVAILABLE code (server #7804).
_SHED_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired")


def is_shed(message: str) -> bool:
    """Whether an error message is Triton's queue policy refusing the request."""
    return any(m in message for m in _SHED_MESSAGES)


# The `reason` label of pattern_request_failures_total: the first five are error responses,
# FALLBACK a default answer given instead of the model's (a success for the caller).
CLIENT_ERROR = "client_error"  # the request is unusable (INVALID_ARG, HTTP 400), a callee's verdict included
CALLEE_ERROR = "callee_error"  # a model this one called failed
TIMEOUT = "timeout"  # a deadline this model enforces passed
OVERLOAD = "overload"  # a callee's queue policy shed the call
MODEL_ERROR = "model_error"  # this model's own code failed (INTERNAL)
FALLBACK = "fallback"
ERROR_REASONS = (CLIENT_ERROR, CALLEE_ERROR, TIMEOUT, OVERLOAD, MODEL_ERROR)
FAILURE_REASONS = (*ERROR_REASONS, FALLBACK)


def failure_reason(exc: BaseException, invalid_arg_code: int) -> str:
    """Why a request failed, from the exception that became its error response (the same
    split as `triton_glue.error_response`'s codes; `invalid_arg_code`: TritonError.INVALID_ARG)."""
    if isinstance(exc, StepTimeout):
        return TIMEOUT
    if is_shed(str(exc)):
        return OVERLOAD
    if isinstance(exc, StepError):
        return CLIENT_ERROR if exc.code == invalid_arg_code else CALLEE_ERROR
    if isinstance(exc, InputError):
        return CLIENT_ERROR
    return MODEL_ERROR
