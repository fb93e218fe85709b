"""Errors a backend turns into a per-request Triton error (the server keeps serving)."""

from __future__ import annotations


class InputError(ValueError):
    """A request's input is unusable. The message names the input and what was expected."""

    def __init__(self, input_name: str, problem: str):
        self.input_name = input_name
        super().__init__(f"input '{input_name}': {problem}")


class StepError(RuntimeError):
    """A model called by an orchestrating backend (BLS) failed; names the step and model."""

    def __init__(
        self, step: str, model: str, version: str | int | None, problem: str, code: int | None = None
    ):
        # code: the callee's Triton error code, so that bad input stays INVALID_ARG upstream
        self.step, self.model, self.version, self.code = step, model, version, code
        where = f"model '{model}'" + (f" version {version}" if version not in (None, "", -1) else "")
        super().__init__(f"step '{step}' ({where}) failed: {problem}")
