"""Client SDK: one call per pattern over tritonclient (HTTP or gRPC, sync or asyncio).

    from triton_patterns import PatternClient
    with PatternClient("127.0.0.1:8000") as client:
        p = client.synchronous([6.7, 3.0, 5.2, 2.3], version=1)
        print(p.label, p.scores, p.model, p.version, p.latency_ms)

Values go in as plain Python/NumPy (feature lists, image bytes); results come back as
`Prediction`s that carry the label, class id, scores, the model and version that answered, and
the round-trip latency, plus what the pattern's extra outputs say (`.arm`, `.cache_hit`, ...).
`AsyncPatternClient` has the same methods as coroutines. The per-pattern methods of both are
written out from the pattern table (patterns.py, methods.py) into pattern_methods.py by
`python -m pattern_tools.sdk_gen`: `help(PatternClient.canary)` shows one. Server
errors surface as `PatternError` with the server's message (which names the bad input).

Keys and TLS (credentials.py): every call carries the API key (`api_key`, else
$TRITON_PATTERNS_API_KEY) and the admin key (`admin_key`, else $TRITON_PATTERNS_ADMIN_KEY or the
file $TRITON_PATTERNS_ADMIN_KEY_FILE names) when known, as the headers (gRPC metadata) the
server's restricted APIs check; gRPC goes over TLS with `ssl=True` and/or `root_certificates`
(else $TRITON_PATTERNS_GRPC_ROOT_CERT); HTTP too, through the gateway (Triton 2.51 has no HTTPS of
its own; docs/deploy.md).

Tracing (traceparent.py): with `trace=True` (the client's, or `predict(..., trace=True)` per call)
each request carries a W3C `traceparent`, and its Prediction's `trace_id` names the trace in which
a server tracing in OpenTelemetry mode records it (docs/patterns/monitoring.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import tritonclient.grpc as grpc_sync
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as http_sync
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from triton_patterns.async_jobs import RESULT_MODEL, JobResult, job_result, label_models, wait_for_end
from triton_patterns.contract import UNKNOWN
from triton_patterns.credentials import authorize, client_headers, grpc_client_options, http_client_options
from triton_patterns.endpoints import server_url
from triton_patterns.pattern_methods import AsyncPatternMethods, PatternMethods
from triton_patterns.patterns import PatternSpec, pattern
from triton_patterns.prediction import ModelInfo, Prediction
from triton_patterns.traceparent import HEADER, traceparent

__all__ = ["AsyncPatternClient", "ModelInfo", "PatternClient", "PatternError", "Prediction", "known_job"]

_SYNC = {"http": http_sync, "grpc": grpc_sync}
_ASYNC = {"http": http_aio, "grpc": grpc_aio}


class PatternError(RuntimeError):
    """The server refused or failed a request; `status` is the server's status if it gave one."""

    def __init__(self, model: str, message: str, status: str | None = None):
        self.model, self.status = model, status
        super().__init__(f"{model}: {message}")


def known_job(result: JobResult) -> JobResult:
    """`result`, unless the result model had no such job: then PatternError with its reason
    (so `wait` stops at once rather than waiting out its deadline for a job that does not exist)."""
    if result.status == UNKNOWN:
        raise PatternError(RESULT_MODEL, f"JOB_ID: {result.error}", UNKNOWN)
    return result


def as_batch(spec: PatternSpec, value: Any) -> np.ndarray:
    """The input tensor for one sample or a batch of samples, with the batch dimension first."""
    if spec.datatype == "BYTES":
        items = [value] if isinstance(value, (bytes, bytearray, str)) else list(value)
        encoded = [v.encode() if isinstance(v, str) else bytes(v) for v in items]
        return np.array(encoded, dtype=np.object_).reshape(-1, 1)
    array = np.asarray(value, dtype=np.float32)
    return array.reshape(1, -1) if array.ndim == 1 else array


def _class_names(config: dict[str, Any]) -> tuple[list[str], str | None]:
    """A served config's class names (its `labels`), else the model they come from: its
    `labels_from`, or for an ensemble the step that produces PROBABILITIES (where Triton's
    ensembles take their labels from)."""
    config = config.get("config", config)  # gRPC's JSON wraps the config
    parameters = config.get("parameters", {})
    text = parameters.get("labels", {}).get("string_value", "")
    source = parameters.get("labels_from", {}).get("string_value", "")
    if not text and not source:
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        source = next((s["model_name"] for s in steps if "PROBABILITIES" in s.get("output_map", {}).values()), "")
    return [s.strip() for s in text.split(",") if s.strip()], source or None


def _label_lookup(model: str | None) -> Generator[str, dict[str, Any], list[str]]:
    """Follows `_class_names` from `model`: yields each model whose served config it needs (send
    the config back); returns the names, [] when the chain ends without any."""
    seen: set[str] = set()
    while model and model not in seen:
        seen.add(model)
        names, model = _class_names((yield model))
        if names:
            return names
    return []


def _labels_by(model: str, read: Callable[[str], dict[str, Any]]) -> list[str]:
    """`_label_lookup` with `read(model)` giving each served config."""
    lookup = _label_lookup(model)
    try:
        name = next(lookup)
        while True:
            name = lookup.send(read(name))
    except StopIteration as done:
        return done.value


def _response_meta(result) -> tuple[str, str]:
    response = result.get_response()
    if isinstance(response, dict):
        return response.get("model_name", ""), str(response.get("model_version", ""))
    return response.model_name, str(response.model_version)


def to_predictions(
    spec: PatternSpec, result, labels: Sequence[str], latency_ms: float, trace_id: str | None = None
) -> list[Prediction]:
    model, version = _response_meta(result)
    outputs = {name: result.as_numpy(name) for name in spec.outputs}
    scores = outputs["PROBABILITIES"]
    raw_label = outputs["LABEL"].reshape(len(scores), -1)[:, 0]
    ids = outputs.get("CLASS_ID", raw_label if raw_label.dtype != np.object_ else None)
    predictions = []
    for row in range(len(scores)):
        class_id = int(np.asarray(ids).reshape(-1)[row])
        if raw_label.dtype == np.object_:
            label = raw_label[row].decode() if isinstance(raw_label[row], bytes) else str(raw_label[row])
        else:
            label = labels[class_id] if class_id < len(labels) else str(class_id)
        predictions.append(
            Prediction(
                model=model,
                version=version,
                label=label,
                class_id=class_id,
                scores=np.asarray(scores[row]),
                latency_ms=latency_ms,
                outputs={name: arr[row] for name, arr in outputs.items()},
                trace_id=trace_id,
            )
        )
    return predictions


def _model_infos(index: Any) -> list[ModelInfo]:
    entries = index.get("models", []) if isinstance(index, dict) else index
    return [
        ModelInfo(e.get("name", ""), str(e.get("version", "")), e.get("state", ""), e.get("reason", ""))
        for e in entries
    ]


class _Base:
    """What both clients share; each gets every pattern method of the table from pattern_methods.py
    (blocking, or coroutines)."""

    def __init__(self, url: str | None, protocol: str, modules: dict, api_key: str | None = None,
                 admin_key: str | None = None, ssl: bool | None = None, root_certificates: str | None = None,
                 trace: bool = False):
        if protocol not in modules:
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url, self.protocol = url or server_url(protocol), protocol
        self._mod = modules[protocol]
        self._labels: dict[str, list[str]] = {}
        self._input_specs: dict[str, PatternSpec] = {}
        self._json = {"as_json": True} if protocol == "grpc" else {}
        self.headers = client_headers(api_key, admin_key)
        self.trace = trace
        self._tls = (grpc_client_options(ssl, root_certificates) if protocol == "grpc" else
                     http_client_options(ssl, root_certificates, asynchronous=self._mod.__name__.endswith(".aio")))

    def _new_client(self, **options):
        """A tritonclient client for this url with the keys' headers and TLS options."""
        return authorize(self._mod.InferenceServerClient(self.url, **self._tls, **options), self.headers)

    def _request(self, spec: PatternSpec, value: Any):
        data = as_batch(spec, value)
        tensor = self._mod.InferInput(spec.input, list(data.shape), spec.datatype)
        tensor.set_data_from_numpy(data)
        return [tensor], [self._mod.InferRequestedOutput(n) for n in spec.outputs]

    def _stream_request(self, spec: PatternSpec, value: Any, model: str):
        """A streamed pattern's spec on `model`, its inputs and requested outputs (gRPC only)."""
        if self.protocol != "grpc":
            raise ValueError(f"{spec.name} needs a gRPC client: {type(self).__name__}(url, protocol='grpc')")
        spec = dataclasses.replace(spec, model=model)
        return (spec, *self._request(spec, value))

    def _trace(self, trace: bool | None) -> tuple[dict[str, str] | None, str | None]:
        """A call's extra headers and trace id: a fresh traceparent when tracing (`trace`, else the client's)."""
        if not (self.trace if trace is None else trace):
            return None, None
        header, trace_id = traceparent()
        return {HEADER: header}, trace_id

    @staticmethod
    def _error(spec: PatternSpec, exc: InferenceServerException) -> PatternError:
        return PatternError(spec.model, exc.message(), exc.status())

    # shared by both clients' submit / result (async_jobs.py, backends/async_queue)

    @staticmethod
    def _metadata_spec(model: str, metadata: dict) -> PatternSpec:
        """A one-input model's input name and datatype, from its metadata."""
        first = metadata["inputs"][0]
        return PatternSpec(model, model, first["name"], first["datatype"], (), "", "", "")

    @staticmethod
    def _job_id(result) -> str:
        value = result.as_numpy("JOB_ID").reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    @staticmethod
    def _submit_parameters(target: str | None, idempotency_key: str | None) -> dict | None:
        parameters = {"target": target, "idempotency_key": idempotency_key}
        return {k: v for k, v in parameters.items() if v is not None} or None

    def _job_id_input(self, job_id: str):
        tensor = self._mod.InferInput("JOB_ID", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([job_id.encode()], dtype=np.object_))
        return [tensor]


class PatternClient(_Base, PatternMethods):
    """Blocking client. `protocol` is "http" (port 8000 by default) or "grpc" (8001)."""

    def __init__(self, url: str | None = None, protocol: str = "http", timeout_s: float = 60.0, *,
                 api_key: str | None = None, admin_key: str | None = None, ssl: bool | None = None,
                 root_certificates: str | None = None, trace: bool = False):
        super().__init__(url, protocol, _SYNC, api_key, admin_key, ssl, root_certificates, trace)
        self.client = self._new_client(**({"network_timeout": timeout_s} if protocol == "http" else {}))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> PatternClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def labels(self, model: str) -> list[str]:
        if model not in self._labels:
            self._labels[model] = _labels_by(model, lambda name: self.client.get_model_config(name, **self._json))
        return self._labels[model]

    def models(self) -> list[ModelInfo]:
        return _model_infos(self.client.get_model_repository_index(**self._json))

    def predict(
        self, pattern_name: str, value: Any, version: int | str | None = None, model: str | None = None,
        parameters: dict[str, Any] | None = None, trace: bool | None = None,
    ) -> list[Prediction]:
        """Every pattern through one call: one Prediction per input row. `model` calls another
        model of the same pattern (e.g. a differently configured pipeline); `parameters` are the
        request's parameters (e.g. {"user_id": "u1"} for a router); `trace` sends a traceparent
        (default: the client's `trace`), whose trace id the Predictions carry."""
        spec = pattern(pattern_name, model)
        inputs, outputs = self._request(spec, value)
        headers, trace_id = self._trace(trace)
        start = time.perf_counter()
        try:
            result = self.client.infer(spec.model, inputs, model_version=str(version or ""), outputs=outputs,
                                       parameters=parameters or None, headers=headers)
        except InferenceServerException as exc:
            raise self._error(spec, exc) from None
        latency = (time.perf_counter() - start) * 1000
        return to_predictions(spec, result, self.labels(spec.model), latency, trace_id)

    # -- asynchronous and time-difference patterns (async_jobs.py, backends/async_queue)

    def _input_spec(self, model: str) -> PatternSpec:
        """A one-input model's input name and datatype, from its metadata."""
        if model not in self._input_specs:
            self._input_specs[model] = self._metadata_spec(model, self.client.get_model_metadata(model, **self._json))
        return self._input_specs[model]

    def submit(self, value: Any, model: str = "iris_async_submit", target: str | None = None,
               idempotency_key: str | None = None) -> str:
        """Queue a job (one row or a batch of rows) and return its id at once. `target` picks
        one of the submit model's allowed targets (e.g. "iris_slow", "iris:1").
        `idempotency_key` (your own, e.g. a uuid per logical job) makes a retry safe: a submit
        with a key already used within the job's time-to-live returns that job's id and queues
        nothing (PatternError if the key was used for other inputs)."""
        spec = self._input_spec(model)
        inputs, _ = self._request(spec, value)
        try:
            result = self.client.infer(model, inputs, parameters=self._submit_parameters(target, idempotency_key))
        except InferenceServerException as exc:
            raise self._error(spec, exc) from None
        return self._job_id(result)

    def result(self, job_id: str) -> JobResult:
        """The job's state now: queued, running, done (outputs, model version, timings) or failed (error)."""
        try:
            result = self.client.infer(RESULT_MODEL, self._job_id_input(job_id))
        except InferenceServerException as exc:
            raise PatternError(RESULT_MODEL, exc.message(), exc.status()) from None
        return known_job(job_result(result.as_numpy("RESULT").reshape(-1)[0], self.labels))

    def wait(self, job_id: str, timeout_s: float = 30.0, redis_url: str | None = None) -> JobResult:
        """The job's result once it ended, waiting at most `timeout_s` for the notification on
        its Redis channel (`redis_url`, default $TRITON_PATTERNS_REDIS_URL; without one, the
        result is polled). Check `.finished`: after the deadline the job may still run."""
        return wait_for_end(job_id, lambda: self.result(job_id), timeout_s, redis_url)

    def _stream(self, spec: PatternSpec, value: Any, model: str, timeout_s: float) -> list[Prediction]:
        """A streamed pattern's answers, one request on one gRPC stream: each Prediction's latency
        is the time since the request was sent."""
        spec, inputs, outputs = self._stream_request(spec, value, model)
        answers: queue.Queue = queue.Queue()
        stream = self._new_client()
        start = time.perf_counter()
        stream.start_stream(callback=lambda result, error: answers.put((result, error, time.perf_counter())))
        predictions = []
        try:
            stream.async_stream_infer(spec.model, inputs, outputs=outputs)
            for _ in range(spec.answers):
                result, error, at = answers.get(timeout=timeout_s)
                if error is not None:
                    raise self._error(spec, error)
                predictions += to_predictions(spec, result, self.labels(spec.model), (at - start) * 1000)
        finally:
            stream.stop_stream()
            stream.close()
        return predictions


class AsyncPatternClient(_Base, AsyncPatternMethods):
    """asyncio client with the same calls as PatternClient, as coroutines."""

    def __init__(self, url: str | None = None, protocol: str = "http", *, api_key: str | None = None,
                 admin_key: str | None = None, ssl: bool | None = None, root_certificates: str | None = None,
                 trace: bool = False):
        super().__init__(url, protocol, _ASYNC, api_key, admin_key, ssl, root_certificates, trace)
        self.client = self._new_client()

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> AsyncPatternClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def labels(self, model: str) -> list[str]:
        if model not in self._labels:
            lookup = _label_lookup(model)
            try:
                name = next(lookup)
                while True:
                    name = lookup.send(await self.client.get_model_config(name, **self._json))
            except StopIteration as done:
                self._labels[model] = done.value
        return self._labels[model]

    async def models(self) -> list[ModelInfo]:
        return _model_infos(await self.client.get_model_repository_index(**self._json))

    async def predict(
        self, pattern_name: str, value: Any, version: int | str | None = None, model: str | None = None,
        parameters: dict[str, Any] | None = None, trace: bool | None = None,
    ) -> list[Prediction]:
        spec = pattern(pattern_name, model)
        inputs, outputs = self._request(spec, value)
        headers, trace_id = self._trace(trace)
        start = time.perf_counter()
        try:
            result = await self.client.infer(spec.model, inputs, model_version=str(version or ""), outputs=outputs,
                                             parameters=parameters or None, headers=headers)
        except InferenceServerException as exc:
            raise self._error(spec, exc) from None
        latency = (time.perf_counter() - start) * 1000
        return to_predictions(spec, result, await self.labels(spec.model), latency, trace_id)

    async def submit(self, value: Any, model: str = "iris_async_submit", target: str | None = None,
                     idempotency_key: str | None = None) -> str:
        """`PatternClient.submit` as a coroutine: the job's id, at once."""
        if model not in self._input_specs:
            metadata = await self.client.get_model_metadata(model, **self._json)
            self._input_specs[model] = self._metadata_spec(model, metadata)
        spec = self._input_specs[model]
        inputs, _ = self._request(spec, value)
        try:
            result = await self.client.infer(model, inputs,
                                             parameters=self._submit_parameters(target, idempotency_key))
        except InferenceServerException as exc:
            raise self._error(spec, exc) from None
        return self._job_id(result)

    async def result(self, job_id: str) -> JobResult:
        """`PatternClient.result` as a coroutine."""
        try:
            result = await self.client.infer(RESULT_MODEL, self._job_id_input(job_id))
        except InferenceServerException as exc:
            raise PatternError(RESULT_MODEL, exc.message(), exc.status()) from None
        raw = result.as_numpy("RESULT").reshape(-1)[0]
        for model in label_models(raw):  # job_result reads labels synchronously: fetch them first
            await self.labels(model)
        return known_job(job_result(raw, lambda model: self._labels.get(model, [])))

    async def wait(self, job_id: str, timeout_s: float = 30.0, redis_url: str | None = None) -> JobResult:
        """`PatternClient.wait` as a coroutine: the Redis subscription waits in a worker thread,
        reads go through this client on the running loop; the loop is never blocked."""
        loop = asyncio.get_running_loop()

        def read() -> JobResult:
            return asyncio.run_coroutine_threadsafe(self.result(job_id), loop).result()

        return await asyncio.to_thread(wait_for_end, job_id, read, timeout_s, redis_url)

    async def _stream(self, spec: PatternSpec, value: Any, model: str, timeout_s: float) -> list[Prediction]:
        """`PatternClient._stream` on this client's gRPC connection."""
        spec, inputs, outputs = self._stream_request(spec, value, model)
        sent = asyncio.Event()

        async def request():  # one request; the stream stays open until the answers are in
            yield {"model_name": spec.model, "inputs": inputs, "outputs": outputs}
            await sent.wait()

        start = time.perf_counter()
        answers = self.client.stream_infer(request())
        predictions = []
        try:
            for _ in range(spec.answers):
                result, error = await asyncio.wait_for(anext(answers), timeout_s)
                if error is not None:
                    raise self._error(spec, error)
                latency = (time.perf_counter() - start) * 1000
                predictions += to_predictions(spec, result, await self.labels(spec.model), latency)
        finally:
            sent.set()
            answers.cancel()
        return predictions
