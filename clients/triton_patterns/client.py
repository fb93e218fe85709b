"""Client SDK: one call per pattern over tritonclient (HTTP or gRPC, sync or asyncio).

    from triton_patterns.client import PatternClient
    with PatternClient("127.0.0.1:8000") as client:
        p = client.synchronous([6.7, 3.0, 5.2, 2.3], version=1)
        print(p.label, p.scores, p.model, p.version, p.latency_ms)

Values go in as plain Python/NumPy (feature lists, image bytes); results come back as
`Prediction`s that carry the label, class id, scores, the model and version that answered, and
the round-trip latency. `AsyncPatternClient` has the same methods as coroutines. Server errors
surface as `PatternError` with the server's message (which names the bad input).

Keys and TLS (security.py): every call carries the API key (`api_key`, else
$TRITON_PATTERNS_API_KEY) and the admin key (`admin_key`, else $TRITON_PATTERNS_ADMIN_KEY or the
local key file) when known, as the headers (gRPC metadata) the server's restricted APIs check;
gRPC goes over TLS with `ssl=True` and/or `root_certificates` (else $TRITON_PATTERNS_GRPC_ROOT_CERT).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpc_sync
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as http_sync
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from triton_patterns.async_jobs import RESULT_MODEL, JobResult, job_result, label_models, wait_for_end
from triton_patterns.credentials import authorize, client_headers, grpc_client_options
from triton_patterns.endpoints import server_url
from triton_patterns.patterns import PatternSpec, pattern

_SYNC = {"http": http_sync, "grpc": grpc_sync}
_ASYNC = {"http": http_aio, "grpc": grpc_aio}


class PatternError(RuntimeError):
    """The server refused or failed a request; `status` is the server's status if it gave one."""

    def __init__(self, model: str, message: str, status: str | None = None):
        self.model, self.status = model, status
        super().__init__(f"{model}: {message}")


@dataclass
class Prediction:
    model: str
    version: str
    label: str
    class_id: int
    scores: np.ndarray
    latency_ms: float
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def cache_hit(self) -> bool | None:
        """For cached patterns: whether the answer came from the cache."""
        return self._flag("CACHE_HIT")

    def _flag(self, name: str) -> bool | None:
        """A one-boolean output as bool, or None when the model has no such output."""
        return bool(np.asarray(self.outputs[name]).reshape(-1)[0]) if name in self.outputs else None

    def _text(self, name: str) -> str | None:
        """A one-string output as str, or None when the model has no such output."""
        if name not in self.outputs:
            return None
        value = np.asarray(self.outputs[name]).reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    @property
    def source(self) -> str | None:
        """For the data cache: where the record's data came from ("redis" or "store")."""
        return self._text("SOURCE")

    @property
    def job_id(self) -> str | None:
        """For the time-difference pattern: the job that will carry the slow model's answer."""
        return self._text("JOB_ID")

    @property
    def fallback(self) -> bool | None:
        """For the circuit breaker: whether this is the configured default answer, not the model's."""
        return self._flag("FALLBACK")

    @property
    def fallback_reason(self) -> str | None:
        """Why the default answered: forced, open, deadline, overloaded, target_error ("" if not)."""
        return self._text("FALLBACK_REASON")

    @property
    def arm(self) -> str | None:
        """For router models (canary, A/B, shadow, condition): the arm that answered."""
        return self._text("ARM")

    @property
    def target(self) -> str | None:
        """For router models: the model:version that answered."""
        return self._text("TARGET")

    @property
    def report(self) -> Any:
        """What an orchestrating model reported (STEPS of serial, REPORT of parallel), or None."""
        for name in ("STEPS", "REPORT"):
            if name in self.outputs:
                value = np.asarray(self.outputs[name]).reshape(-1)[0]
                return json.loads(value.decode() if isinstance(value, bytes) else value)
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "label": self.label,
            "class_id": self.class_id,
            "scores": [round(float(s), 4) for s in self.scores],
            "latency_ms": round(self.latency_ms, 2),
            **({"report": self.report} if self.report is not None else {}),
            **({"cache_hit": self.cache_hit} if self.cache_hit is not None else {}),
            **({"source": self.source} if self.source is not None else {}),
            **({"job_id": self.job_id} if self.job_id is not None else {}),
            **({"arm": self.arm, "target": self.target} if self.arm is not None else {}),
            **({"fallback": self.fallback, "fallback_reason": self.fallback_reason} if self.fallback is not None else {}),
        }


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    state: str
    reason: str = ""


def as_batch(spec: PatternSpec, value: Any) -> np.ndarray:
    """The input tensor for one sample or a batch of samples, with the batch dimension first."""
    if spec.datatype == "BYTES":
        items = [value] if isinstance(value, (bytes, bytearray, str)) else list(value)
        encoded = [v.encode() if isinstance(v, str) else bytes(v) for v in items]
        return np.array(encoded, dtype=np.object_).reshape(-1, 1)
    array = np.asarray(value, dtype=np.float32)
    return array.reshape(1, -1) if array.ndim == 1 else array


def _labels_from_config(config: dict[str, Any]) -> list[str]:
    config = config.get("config", config)  # gRPC's JSON wraps the config
    text = config.get("parameters", {}).get("labels", {}).get("string_value", "")
    return [s.strip() for s in text.split(",") if s.strip()]


def _response_meta(result) -> tuple[str, str]:
    response = result.get_response()
    if isinstance(response, dict):
        return response.get("model_name", ""), str(response.get("model_version", ""))
    return response.model_name, str(response.model_version)


def to_predictions(
    spec: PatternSpec, result, labels: Sequence[str], latency_ms: float
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
            )
        )
    return predictions


def _user(user_id: str | None) -> dict[str, str] | None:
    return {"user_id": str(user_id)} if user_id is not None else None


def _model_infos(index: Any) -> list[ModelInfo]:
    entries = index.get("models", []) if isinstance(index, dict) else index
    return [
        ModelInfo(e.get("name", ""), str(e.get("version", "")), e.get("state", ""), e.get("reason", ""))
        for e in entries
    ]


class _Base:
    def __init__(self, url: str | None, protocol: str, modules: dict, api_key: str | None = None,
                 admin_key: str | None = None, ssl: bool | None = None, root_certificates: str | None = None):
        if protocol not in modules:
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url, self.protocol = url or server_url(protocol), protocol
        self._mod = modules[protocol]
        self._labels: dict[str, list[str]] = {}
        self._input_specs: dict[str, PatternSpec] = {}
        self._json = {"as_json": True} if protocol == "grpc" else {}
        self.headers = client_headers(api_key, admin_key)
        self._tls = grpc_client_options(ssl, root_certificates) if protocol == "grpc" else {}
        if protocol == "http" and ssl:
            raise ValueError("Triton 2.51 serves HTTP without TLS (put a TLS proxy in front); TLS is for gRPC")

    def _new_client(self, **options):
        """A tritonclient client for this url with the keys' headers and TLS options."""
        return authorize(self._mod.InferenceServerClient(self.url, **self._tls, **options), self.headers)

    def _request(self, spec: PatternSpec, value: Any):
        data = as_batch(spec, value)
        tensor = self._mod.InferInput(spec.input, list(data.shape), spec.datatype)
        tensor.set_data_from_numpy(data)
        return [tensor], [self._mod.InferRequestedOutput(n) for n in spec.outputs]

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

    def _job_id_input(self, job_id: str):
        tensor = self._mod.InferInput("JOB_ID", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([job_id.encode()], dtype=np.object_))
        return [tensor]


class PatternClient(_Base):
    """Blocking client. `protocol` is "http" (port 8000 by default) or "grpc" (8001)."""

    def __init__(self, url: str | None = None, protocol: str = "http", timeout_s: float = 60.0, *,
                 api_key: str | None = None, admin_key: str | None = None, ssl: bool | None = None,
                 root_certificates: str | None = None):
        super().__init__(url, protocol, _SYNC, api_key, admin_key, ssl, root_certificates)
        self.client = self._new_client(**({"network_timeout": timeout_s} if protocol == "http" else {}))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> PatternClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def labels(self, model: str) -> list[str]:
        if model not in self._labels:
            self._labels[model] = _labels_from_config(self.client.get_model_config(model, **self._json))
        return self._labels[model]

    def models(self) -> list[ModelInfo]:
        return _model_infos(self.client.get_model_repository_index(**self._json))

    def predict(
        self, pattern_name: str, value: Any, version: int | str | None = None, model: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> list[Prediction]:
        """Every pattern through one call: one Prediction per input row. `model` calls another
        model of the same pattern (e.g. a differently configured pipeline); `parameters` are the
        request's parameters (e.g. {"user_id": "u1"} for a router)."""
        spec = pattern(pattern_name, model)
        inputs, outputs = self._request(spec, value)
        start = time.perf_counter()
        try:
            result = self.client.infer(spec.model, inputs, model_version=str(version or ""), outputs=outputs,
                                       parameters=parameters or None)
        except InferenceServerException as exc:
            raise self._error(spec, exc) from None
        latency = (time.perf_counter() - start) * 1000
        return to_predictions(spec, result, self.labels(spec.model), latency)

    def web_single(self, features: Sequence[float]) -> Prediction:
        return self.predict("web_single", features)[0]

    def synchronous(self, features: Sequence[float], version: int | None = None) -> Prediction:
        return self.predict("synchronous", features, version)[0]

    def prep_pred(self, image: bytes, form: str = "ensemble") -> Prediction:
        """`form` "ensemble" (model `digits`) or "bls" (model `digits_bls`)."""
        return self.predict("prep_pred" if form == "ensemble" else "prep_pred_bls", image)[0]

    def serial(self, text: str) -> Prediction:
        """Topic of a text through tokenizer -> encoder -> classifier (ensemble `text_classify`)."""
        return self.predict("serial", text)[0]

    def prediction_cache(self, text: str, model: str = "text_classify_cached") -> Prediction:
        """The text pipeline behind the Redis prediction cache; `.cache_hit` says which answered."""
        return self.predict("prediction_cache", text, model=model)[0]

    def data_cache(self, record_id: str, model: str = "digits_by_id") -> Prediction:
        """Classify a stored record by id; `.source` says whether Redis or the store served it."""
        return self.predict("data_cache", record_id, model=model)[0]

    def serial_bls(self, features: Sequence[float], model: str = "iris_cascade") -> Prediction:
        """A BLS serial pipeline (routing, timeouts, skips); `.report` lists the steps."""
        return self.predict("serial_bls", features, model=model)[0]

    def parallel(self, features: Sequence[float], model: str = "iris_parallel") -> Prediction:
        """A parallel fan-out; `.report` says which targets answered, timed out or failed."""
        return self.predict("parallel", features, model=model)[0]

    # -- rollouts (backends/router): `.arm` and `.target` say which arm and model:version answered

    def canary(self, features: Sequence[float], user_id: str | None = None, model: str = "iris_canary") -> Prediction:
        """Weighted split between versions; sticky per `user_id`, random without one."""
        return self.predict("canary", features, model=model, parameters=_user(user_id))[0]

    def ab_test(self, features: Sequence[float], user_id: str | None = None, model: str = "iris_ab") -> Prediction:
        """A/B arms assigned per `user_id` by a stable hash; `.arm` is "A" or "B"."""
        return self.predict("ab_test", features, model=model, parameters=_user(user_id))[0]

    def shadow(self, features: Sequence[float], model: str = "iris_shadow") -> Prediction:
        """The primary's answer; the candidate's is compared and logged (triton-patterns shadow-log)."""
        return self.predict("shadow", features, model=model)[0]

    def route(self, features: Sequence[float], target: str | None = None, model: str = "iris_route") -> Prediction:
        """Condition-based: `target` names the arm ("v1", "v2"), else the config's rules decide."""
        return self.predict("route", features, model=model, parameters={"target": target} if target else None)[0]

    def circuit_breaker(self, features: Sequence[float], model: str = "iris_breaker") -> Prediction:
        """The target's answer, or the default at once when it fails, is late, is overloaded or the
        circuit is open: check `.fallback` and `.fallback_reason`."""
        return self.predict("circuit_breaker", features, model=model)[0]

    # -- asynchronous and time-difference patterns (async_jobs.py, backends/async_queue)

    def _input_spec(self, model: str) -> PatternSpec:
        """A one-input model's input name and datatype, from its metadata."""
        if model not in self._input_specs:
            self._input_specs[model] = self._metadata_spec(model, self.client.get_model_metadata(model, **self._json))
        return self._input_specs[model]

    def submit(self, value: Any, model: str = "iris_async_submit", target: str | None = None) -> str:
        """Queue a job (one row or a batch of rows) and return its id at once. `target` picks
        one of the submit model's allowed targets (e.g. "iris_slow", "iris:1")."""
        spec = self._input_spec(model)
        inputs, _ = self._request(spec, value)
        try:
            result = self.client.infer(model, inputs, parameters={"target": target} if target else None)
        except InferenceServerException as exc:
            raise self._error(spec, exc) from None
        return self._job_id(result)

    def result(self, job_id: str) -> JobResult:
        """The job's state now: queued, running, done (outputs, model version, timings) or failed (error)."""
        try:
            result = self.client.infer(RESULT_MODEL, self._job_id_input(job_id))
        except InferenceServerException as exc:
            raise PatternError(RESULT_MODEL, exc.message(), exc.status()) from None
        return job_result(result.as_numpy("RESULT").reshape(-1)[0], self.labels)

    def wait(self, job_id: str, timeout_s: float = 30.0, redis_url: str | None = None) -> JobResult:
        """The job's result once it ended, waiting at most `timeout_s` for the notification on
        its Redis channel (`redis_url`, default $TRITON_PATTERNS_REDIS_URL; without one, the
        result is polled). Check `.finished`: after the deadline the job may still run."""
        return wait_for_end(job_id, lambda: self.result(job_id), timeout_s, redis_url)

    def time_difference(self, features: Sequence[float], model: str = "iris_time_difference") -> Prediction:
        """The fast model's answer now; `.job_id` is the job carrying the slow model's (`wait` for it)."""
        return self.predict("time_difference", features, model=model)[0]

    def time_difference_stream(
        self, features: Sequence[float], model: str = "iris_time_difference_stream", timeout_s: float = 30.0
    ) -> list[Prediction]:
        """Triton's native form: one gRPC stream, two answers (fast, then slow; `.outputs["STAGE"]`);
        each Prediction's latency is the time since the request was sent. Needs protocol "grpc"."""
        if self.protocol != "grpc":
            raise ValueError("time_difference_stream needs a gRPC client: PatternClient(url, protocol='grpc')")
        import queue as queue_module

        spec = PatternSpec(model, model, "FEATURES", "FP32", ("LABEL", "PROBABILITIES", "STAGE"), "", "", "")
        inputs, outputs = self._request(spec, features)
        answers: queue_module.Queue = queue_module.Queue()
        stream = self._new_client()
        start = time.perf_counter()
        stream.start_stream(callback=lambda result, error: answers.put((result, error, time.perf_counter())))
        predictions = []
        try:
            stream.async_stream_infer(model, inputs, outputs=outputs)
            for _ in range(2):
                result, error, at = answers.get(timeout=timeout_s)
                if error is not None:
                    raise self._error(spec, error)
                predictions += to_predictions(spec, result, self.labels(model), (at - start) * 1000)
        finally:
            stream.stop_stream()
            stream.close()
        return predictions


class AsyncPatternClient(_Base):
    """asyncio client with the same calls as PatternClient, as coroutines."""

    def __init__(self, url: str | None = None, protocol: str = "http", *, api_key: str | None = None,
                 admin_key: str | None = None, ssl: bool | None = None, root_certificates: str | None = None):
        super().__init__(url, protocol, _ASYNC, api_key, admin_key, ssl, root_certificates)
        self.client = self._new_client()

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> AsyncPatternClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def labels(self, model: str) -> list[str]:
        if model not in self._labels:
            config = await self.client.get_model_config(model, **self._json)
            self._labels[model] = _labels_from_config(config)
        return self._labels[model]

    async def models(self) -> list[ModelInfo]:
        return _model_infos(await self.client.get_model_repository_index(**self._json))

    async def predict(
        self, pattern_name: str, value: Any, version: int | str | None = None, model: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> list[Prediction]:
        spec = pattern(pattern_name, model)
        inputs, outputs = self._request(spec, value)
        start = time.perf_counter()
        try:
            result = await self.client.infer(spec.model, inputs, model_version=str(version or ""), outputs=outputs,
                                             parameters=parameters or None)
        except InferenceServerException as exc:
            raise self._error(spec, exc) from None
        latency = (time.perf_counter() - start) * 1000
        return to_predictions(spec, result, await self.labels(spec.model), latency)

    async def web_single(self, features: Sequence[float]) -> Prediction:
        return (await self.predict("web_single", features))[0]

    async def submit(self, value: Any, model: str = "iris_async_submit", target: str | None = None) -> str:
        """`PatternClient.submit` as a coroutine: the job's id, at once."""
        if model not in self._input_specs:
            metadata = await self.client.get_model_metadata(model, **self._json)
            self._input_specs[model] = self._metadata_spec(model, metadata)
        spec = self._input_specs[model]
        inputs, _ = self._request(spec, value)
        try:
            result = await self.client.infer(model, inputs, parameters={"target": target} if target else None)
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
        return job_result(raw, lambda model: self._labels.get(model, []))

    async def wait(self, job_id: str, timeout_s: float = 30.0, redis_url: str | None = None) -> JobResult:
        """`PatternClient.wait` as a coroutine: the Redis subscription waits in a worker thread,
        reads go through this client on the running loop; the loop is never blocked."""
        loop = asyncio.get_running_loop()

        def read() -> JobResult:
            return asyncio.run_coroutine_threadsafe(self.result(job_id), loop).result()

        return await asyncio.to_thread(wait_for_end, job_id, read, timeout_s, redis_url)

    async def synchronous(self, features: Sequence[float], version: int | None = None) -> Prediction:
        return (await self.predict("synchronous", features, version))[0]

    async def prep_pred(self, image: bytes, form: str = "ensemble") -> Prediction:
        return (await self.predict("prep_pred" if form == "ensemble" else "prep_pred_bls", image))[0]

    async def serial(self, text: str) -> Prediction:
        return (await self.predict("serial", text))[0]

    async def prediction_cache(self, text: str, model: str = "text_classify_cached") -> Prediction:
        return (await self.predict("prediction_cache", text, model=model))[0]

    async def data_cache(self, record_id: str, model: str = "digits_by_id") -> Prediction:
        return (await self.predict("data_cache", record_id, model=model))[0]

    async def serial_bls(self, features: Sequence[float], model: str = "iris_cascade") -> Prediction:
        return (await self.predict("serial_bls", features, model=model))[0]

    async def parallel(self, features: Sequence[float], model: str = "iris_parallel") -> Prediction:
        return (await self.predict("parallel", features, model=model))[0]

    async def canary(self, features: Sequence[float], user_id: str | None = None, model: str = "iris_canary") -> Prediction:
        return (await self.predict("canary", features, model=model, parameters=_user(user_id)))[0]

    async def ab_test(self, features: Sequence[float], user_id: str | None = None, model: str = "iris_ab") -> Prediction:
        return (await self.predict("ab_test", features, model=model, parameters=_user(user_id)))[0]

    async def shadow(self, features: Sequence[float], model: str = "iris_shadow") -> Prediction:
        return (await self.predict("shadow", features, model=model))[0]

    async def route(self, features: Sequence[float], target: str | None = None, model: str = "iris_route") -> Prediction:
        return (await self.predict("route", features, model=model, parameters={"target": target} if target else None))[0]

    async def circuit_breaker(self, features: Sequence[float], model: str = "iris_breaker") -> Prediction:
        return (await self.predict("circuit_breaker", features, model=model))[0]
