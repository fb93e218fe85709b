"""`PatternModel`: the `TritonPythonModel` boilerplate every pattern backend shares.

A model config's `backend: "router"` makes Triton load `<backend directory>/router/model.py`,
whose `TritonPythonModel` subclasses this class; the backend's spec is `spec.py` beside it (the
registry `pattern_kernel.specs`), found by the config's `backend`. `auto_complete_config` adds
the extra outputs the spec declares that the config leaves out (`BackendSpec.completed_outputs`).
`initialize` counts failures (`triton_glue.count_failures`), parses the model config and reads
the backend's declared parameters into `self.params` (`BackendSpec.read`), then calls
`setup(args)`. `execute` answers each request with outputs or an error response of its own;
a backend defines one of:

- `run(inputs)`: the inputs of a whole dynamic batch merged into one call when the model
  batches (a failing merged call is retried request by request);
- `handle(request, inputs)`: one request at a time;
- `handle_batch(items)`: the (request, inputs) pairs of a batch in one call, returning one
  outputs dict or exception per item (e.g. one round trip to a store for a whole batch);
- `async answer(request, inputs)`: the requests of a batch concurrently on asyncio.

Each returns the response's outputs ({name: array}). `batch_done()` runs after each batch.
`prediction_log()` opens the model's prediction-log stream (`prediction_log.Writer`).
BLS calls made while answering a request carry its trace (`triton_glue.traced`); those made for
a whole batch (`run`, `handle_batch`) carry the batch's first request's.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

from pattern_kernel import prediction_log as plog
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.spec import BackendSpec
from pattern_kernel.specs import load_spec
from pattern_kernel.triton_glue import (
    Metrics,
    count_failures,
    error_response,
    execute_requests,
    read_inputs,
    response,
    traced,
)


class PatternModel:
    @classmethod
    def backends_root(cls) -> Path:
        """The folder of the backend folders: the one holding this model.py's folder."""
        return Path(inspect.getfile(cls)).parent.parent

    @classmethod
    def backend_spec(cls, backend: str) -> BackendSpec:
        """The spec of the config's `backend`."""
        return load_spec(cls.backends_root() / backend)

    @classmethod
    def auto_complete_config(cls, auto_complete_model_config):
        """Triton's auto-complete (on unless tritonserver runs with --disable-auto-complete-config):
        the spec's extra outputs that apply to this config and that it does not declare."""
        config = auto_complete_model_config.as_dict()
        for output in cls.backend_spec(config["backend"]).completed_outputs(config):
            auto_complete_model_config.add_output(output)
        return auto_complete_model_config

    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.spec = self.backend_spec(self.config.backend)
        self.params = self.spec.read(self.config.name, self.config.parameters)
        # this model's own outputs: the config's, less those the backend adds (FALLBACK, ARM...)
        self.model_outputs = [s for s in self.config.outputs if s.name not in self.spec.extra_output_names]
        self.setup(args)

    def setup(self, args) -> None:
        """The backend's own initialisation (`self.config`, `self.params` are set)."""

    def required(self, name: str):
        """A parameter the spec leaves optional but this configuration needs (e.g. per mode)."""
        value = self.params[name]
        if value is None or value == "":
            raise ValueError(f"model '{self.config.name}': config parameter '{name}' is required")
        return value

    def metrics(self, name: str, description: str, kind: str = "counter", **labels: str) -> Metrics:
        """A metric family labelled with this model (plus `labels`)."""
        return Metrics(name, description, {"model": self.config.name, **labels}, kind=kind)

    def prediction_log(self) -> plog.Writer:
        """This model's prediction-log stream (parameters `spec.PREDICTION_LOG` and `spec.REDIS`),
        its records counted in prediction_log_records_total{model, result}."""
        from pattern_kernel.redis_link import connect  # redis: the kernel's optional extra

        counter = self.metrics("prediction_log_records_total",
                               "Prediction log records written (error: the sink was unavailable)")
        stream = self.params["prediction_log_stream"] or plog.stream_name(self.config.name)
        return plog.Writer(connect(self.params), stream, self.params["prediction_log_maxlen"], counter)

    def batch_done(self) -> None:
        """Called after each batch of requests has been answered."""

    # -- execute

    def execute(self, requests):
        if hasattr(self, "answer"):
            return self._answer_all(requests)  # a coroutine: the stub runs it on its event loop
        if hasattr(self, "run"):
            with traced(requests[0]):
                responses = execute_requests(requests, self.config.inputs, self.run, self.config.batching)
        elif hasattr(self, "handle_batch"):
            with traced(requests[0]):
                responses = self._handle_batch(requests)
        else:
            responses = [self._handle_one(r) for r in requests]
        self.batch_done()
        return responses

    def _handle_one(self, request):
        try:
            with traced(request):
                return response(self.handle(request, read_inputs(request, self.config.inputs)))
        except Exception as exc:  # noqa: BLE001 - this request's error; the others still succeed
            return error_response(exc)

    def _handle_batch(self, requests) -> list:
        read = []
        for request in requests:
            try:
                read.append(read_inputs(request, self.config.inputs))
            except Exception as exc:  # noqa: BLE001 - this request's error
                read.append(exc)
        readable = [(r, i) for r, i in zip(requests, read, strict=True) if not isinstance(i, Exception)]
        try:
            answers = iter(self.handle_batch(readable) if readable else [])
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: each request says why
            answers = iter([exc] * len(readable))
        outcomes = [i if isinstance(i, Exception) else next(answers) for i in read]
        return [error_response(o) if isinstance(o, Exception) else response(o) for o in outcomes]

    async def _answer_one(self, request):
        try:
            with traced(request):
                return response(await self.answer(request, read_inputs(request, self.config.inputs)))
        except Exception as exc:  # noqa: BLE001 - this request's error; the others still succeed
            return error_response(exc)

    async def _answer_all(self, requests) -> list:
        responses = list(await asyncio.gather(*(self._answer_one(r) for r in requests)))
        self.batch_done()
        return responses
