"""`make bench`: every serving setup and its peers measured side by side in one run.

Starts what it measures on free 127.0.0.1 ports (one tritonserver over a temporary copy of the
project's repository with benchmark variants, and the FastAPI peer with 1 and 2 workers), drives
each setup with a closed-loop load at several concurrencies (`loadtest.loadgen`), then writes
`results.json`, PNG plots under `reports/bench/` and, in full mode, `BENCHMARKS.md` with the
ratios against the project's targets (loadtest/bench_report.py).

    python -m loadtest.bench                # full: c=1,8,32, 8 s per point after 2 s warm-up
    python -m loadtest.bench --quick        # CI: c=1,8, ~1 s per point, no BENCHMARKS.md
    python -m loadtest.bench --setups 'digits|cache' --duration 3

Benchmark variants live only in the temporary repository (committed configs are untouched):
`iris_nobatch` and `heavy_mlp_nobatch` (no dynamic batching), `heavy_mlp_t2` (2 intra-op
threads), `heavy_mlp_cache` (`response_cache { enable: true }`), `iris_parallel_vote` (the
parallel BLS on the `iris_vote` ensemble's pipeline), `iris_redis_cache` (long TTL) and
`digits_by_id_store` (data cache off); the tracing cost's copies of `text_classify` and
`iris_parallel_vote` (TRACED: traced through the trace API, triton mode, to the server's trace
file, at one request in 1000 and at every request). perf_analyzer measures a few of the same models on the
same server as a cross-check of the harness's own load generator. The report is written by
`loadtest.bench_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import requests
import tritonclient.grpc.aio as grpc_aio
from tritonclient.grpc import InferInput

from loadtest.script import run_script
from pattern_runtime import paths
from pattern_runtime.processes import ManagedProcess, free_port, http_status, wait_for
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.stack import Stack

from . import async_bench, batch_bench, loadgen, perf
from .bench_report import BENCHMARKS_MD, OUT_DIR, fmt, write_reports
from .bench_setup import LoadOptions, Outcome, Setup
from .loadgen import Point

REPO = paths.MODEL_REPOSITORY
BENCH_MODELS = ("iris", "heavy_mlp", "digits", "digits_bls", "digits_preprocess", "digits_classifier",
                "iris_vote", "iris_vote_aggregate", "text_tokenizer", "text_encoder", "text_classifier",
                "text_classify", "text_classify_bls", "text_classify_cached", "digits_by_id", "iris_async_submit",
                "async_result")
ONNX = {"iris": REPO / "iris/2/model.onnx", "heavy_mlp": paths.model_folder("heavy_mlp") / "1/model.onnx",
        "digits_classifier": REPO / "digits_classifier/1/model.onnx"}
FEATURE_INPUT = {"iris": "FEATURES", "heavy_mlp": "INPUT"}
INPUT_NAME = {**FEATURE_INPUT, "digits": "IMAGE", "text": "TEXT"}
TEXT_LABELS = ("sports", "technology", "food", "weather")
# perf_analyzer runs on these models, mirroring the own-loadgen setup on the same model
PERF_MIRRORS = {"iris": "triton_iris_grpc", "heavy_mlp": "triton_heavy_grpc", "digits": "digits_ensemble_grpc",
                "digits_bls": "digits_bls_grpc"}


# --------------------------------------------------------------------------- inputs and answers


@dataclass
class Data:
    """Fixed inputs and the in-process reference answers every setup is checked against."""

    iris: np.ndarray = field(init=False)
    heavy: np.ndarray = field(init=False)
    pngs: list[bytes] = field(init=False)
    digit_pixels: np.ndarray = field(init=False)
    text: np.ndarray = field(init=False)  # one text of the demo's samples, whose topic the pipeline gets right
    text_label: int = field(init=False)

    def __post_init__(self) -> None:
        from pattern_runtime.datasets import digits as digits_export
        from pattern_runtime.datasets import iris as iris_export
        from pattern_tools.demo import TEXT_SAMPLES

        self.text = np.array([[TEXT_SAMPLES[0][0].encode()]], dtype=object)
        self.text_label = TEXT_LABELS.index(TEXT_SAMPLES[0][1])
        self.iris = iris_export.load_split()[1][:1].astype(np.float32)
        self.heavy = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
        x, _ = digits_export.load_test_split()
        self.digit_pixels = x[:1].astype(np.float32)
        self.pngs = [digits_export.encode_digit_png(x[0])]
        self.sessions = {name: session(path, 1) for name, path in ONNX.items()}

    def rows(self, model: str) -> np.ndarray:
        return self.iris if model == "iris" else self.heavy

    def expected(self, model: str) -> np.ndarray:
        """iris: label; heavy_mlp: OUTPUT; digits: label (of the original pixels); text: its topic."""
        if model == "text":
            return np.array([self.text_label])
        if model == "digits":
            return self.sessions["digits_classifier"].run(["LABEL"], {"PIXELS": self.digit_pixels})[0].reshape(-1)
        out = self.sessions[model].run(None, {FEATURE_INPUT[model]: self.rows(model)})
        return out[0].reshape(-1) if model == "iris" else out[0]


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def same(model: str, got, expected) -> bool:
    got = np.asarray(got)
    if model == "heavy_mlp":
        return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=1e-3, atol=1e-4))
    return np.array_equal(got.reshape(-1).astype(np.int64), np.asarray(expected).reshape(-1).astype(np.int64))


# --------------------------------------------------------------------------- setups


def inprocess_setups(data: Data, load: LoadOptions) -> list[Setup]:
    setups = []
    batches = [1, 32] if load.quick else [1, 8, 32]
    for model in ("iris", "heavy_mlp"):
        for threads in (1, 2):
            sess = session(ONNX[model], threads)
            name = FEATURE_INPUT[model]

            def measure(batch, sess=sess, name=name, model=model, threads=threads):
                x = np.repeat(data.rows(model), batch, axis=0)
                return loadgen.inprocess_load(f"ort_{model}_t{threads}", lambda: sess.run(None, {name: x}), batch,
                                              load.duration, load.warmup)

            def check(sess=sess, name=name, model=model):
                out = sess.run(None, {name: data.rows(model)})
                return same(model, out[0], data.expected(model))

            setups.append(Setup(f"ort_{model}_t{threads}", "limit", model,
                                f"in-process onnxruntime session.run, {threads} intra-op thread(s)",
                                measure, check, batches))
    return setups


def _infer_input(name: str, array: np.ndarray) -> InferInput:
    item = InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "FP32")
    item.set_data_from_numpy(array)
    return item


def grpc_setup(name: str, what: str, url: str, model: str, data: Data,
               call_factory: Callable[[grpc_aio.InferenceServerClient], Callable], load: LoadOptions) -> Setup:
    """A Triton setup driven by tritonclient's gRPC asyncio client; `call_factory(client)` gives
    the coroutine function for one request, which returns the answer to check."""

    async def run(concurrency: int | None):
        client = grpc_aio.InferenceServerClient(url)
        try:
            call = call_factory(client)
            if concurrency is None:
                return await call()
            return await loadgen.async_load(name, call, concurrency, load.duration, load.warmup)
        finally:
            await client.close()

    return Setup(name, "triton", model, what, lambda c: asyncio.run(run(c)),
                 lambda: same(model, asyncio.run(run(None)), data.expected(model)), server="triton")


def _model_call(model: str, version_name: str, array_fn: Callable[[], np.ndarray], input_name: str = ""):
    """One request to `version_name` with `array_fn()`; `model` says how to check the answer."""
    input_name = input_name or INPUT_NAME[model]
    out_name = "OUTPUT" if model == "heavy_mlp" else "LABEL"

    def factory(client):
        async def call():
            result = await client.infer(version_name, [_infer_input(input_name, array_fn())])
            answer = result.as_numpy(out_name)
            if answer is None or answer.shape[0] != 1:
                raise ValueError(f"{version_name}: bad answer shape {None if answer is None else answer.shape}")
            return answer
        return call
    return factory


def triton_setups(url: str, http: str, data: Data, load: LoadOptions) -> list[Setup]:
    """The Triton setups against the gRPC `url` and the HTTP base `http` (nothing connects yet)."""
    png = np.array([data.pngs], dtype=object)
    counter = iter(range(1, 1 << 62))

    def unique_heavy() -> np.ndarray:  # a new input every request: always a cache miss
        x = data.heavy.copy()
        x[0, 0] = next(counter)
        return x

    def unique_iris() -> np.ndarray:  # a new input every request: always a Redis cache miss
        x = data.iris.copy()
        x[0, 0] += next(counter) * 1e-6
        return x

    def unique_text() -> np.ndarray:  # a new text every request (a trailing number): a Redis cache miss
        return np.array([[data.text[0, 0] + f" {next(counter)}".encode()]], dtype=object)

    record = np.array([[b"digit-0"]], dtype=object)  # seeded from the first held-out digit, as data.pngs[0]

    def digits_steps(client):
        async def call():
            pixels = (await client.infer("digits_preprocess", [_infer_input("IMAGE", png)])).as_numpy("PIXELS")
            result = await client.infer("digits_classifier", [_infer_input("PIXELS", pixels)])
            return result.as_numpy("LABEL")
        return call

    def fixed(model):
        rows = data.rows(model)
        return lambda: rows

    setups = [
        grpc_setup("triton_iris_grpc", "iris, dynamic batching (500 us), gRPC", url, "iris", data,
                   _model_call("iris", "iris", fixed("iris")), load),
        http_setup("triton_iris_http", "iris, dynamic batching, HTTP JSON (wrk)", "triton", "iris", data,
                   f"{http}/v2/models/iris/infer", triton_json("iris", data), load),
        grpc_setup("triton_iris_nobatch_grpc", "iris without dynamic batching, gRPC", url, "iris", data,
                   _model_call("iris", "iris_nobatch", fixed("iris")), load),
        grpc_setup("triton_heavy_grpc", "heavy_mlp, dynamic batching (2 ms), 1 thread, gRPC", url, "heavy_mlp", data,
                   _model_call("heavy_mlp", "heavy_mlp", fixed("heavy_mlp")), load),
        http_setup("triton_heavy_http", "heavy_mlp, dynamic batching, HTTP JSON (wrk)", "triton", "heavy_mlp", data,
                   f"{http}/v2/models/heavy_mlp/infer", triton_json("heavy_mlp", data), load),
        grpc_setup("triton_heavy_t2_grpc", "heavy_mlp, dynamic batching, 2 intra-op threads, gRPC", url,
                   "heavy_mlp", data, _model_call("heavy_mlp", "heavy_mlp_t2", fixed("heavy_mlp")), load),
        grpc_setup("triton_heavy_t2_b32_grpc", "heavy_mlp, 2 threads, preferred batch 32 (wait <= 20 ms), gRPC", url,
                   "heavy_mlp", data, _model_call("heavy_mlp", "heavy_mlp_t2_b32", fixed("heavy_mlp")), load),
        grpc_setup("triton_heavy_i2_grpc", "heavy_mlp, 2 instances x 1 thread, preferred batch 16, gRPC", url,
                   "heavy_mlp", data, _model_call("heavy_mlp", "heavy_mlp_i2", fixed("heavy_mlp")), load),
        grpc_setup("triton_heavy_nobatch_grpc", "heavy_mlp without dynamic batching, gRPC", url, "heavy_mlp", data,
                   _model_call("heavy_mlp", "heavy_mlp_nobatch", fixed("heavy_mlp")), load),
        grpc_setup("cache_hit_grpc", "heavy_mlp + response cache, the same input every time", url, "heavy_mlp",
                   data, _model_call("heavy_mlp", "heavy_mlp_cache", fixed("heavy_mlp")), load),
        grpc_setup("cache_miss_grpc", "heavy_mlp + response cache, a new input every time", url, "heavy_mlp",
                   data, _model_call("heavy_mlp", "heavy_mlp_cache", unique_heavy), load),
        grpc_setup("digits_ensemble_grpc", "prep-pred ensemble `digits` (PNG in), gRPC", url, "digits", data,
                   _model_call("digits", "digits", lambda: png), load),
        grpc_setup("digits_bls_grpc", "prep-pred BLS `digits_bls` (PNG in), gRPC", url, "digits", data,
                   _model_call("digits", "digits_bls", lambda: png), load),
        grpc_setup("parallel_ensemble_grpc", "parallel ensemble `iris_vote` (v1 + v2, mean)", url, "iris", data,
                   _model_call("iris", "iris_vote", fixed("iris")), load),
        grpc_setup("parallel_bls_grpc", "parallel BLS on the same pipeline (v1 + v2, mean)", url, "iris", data,
                   _model_call("iris", "iris_parallel_vote", fixed("iris")), load),
        grpc_setup("redis_cache_hit_grpc", "Redis prediction cache on iris v2, the same input", url, "iris", data,
                   _model_call("iris", "iris_redis_cache", fixed("iris")), load),
        grpc_setup("redis_cache_miss_grpc", "Redis prediction cache on iris v2, a new input each time", url,
                   "iris", data, _model_call("iris", "iris_redis_cache", unique_iris), load),
        grpc_setup("digits_steps_grpc", "digits_preprocess then digits_classifier, called by the client", url,
                   "digits", data, digits_steps, load),
        grpc_setup("text_ensemble_grpc", "serial ensemble `text_classify` (tokenizer, MiniLM, head)", url, "text",
                   data, _model_call("text", "text_classify", lambda: data.text), load),
        grpc_setup("text_bls_grpc", "serial BLS `text_classify_bls` on the same three steps", url, "text", data,
                   _model_call("text", "text_classify_bls", lambda: data.text), load),
        *(grpc_setup(f"text_trace{rate}_grpc", f"`text_classify` traced, one request in {rate} (trace API, to a file)",
                     url, "text", data, _model_call("text", f"text_classify_trace{rate}", lambda: data.text),
                     load)
          for rate in (1000, 1)),
        *(grpc_setup(f"parallel_trace{rate}_grpc", f"parallel BLS (v1 + v2) traced, one request in {rate}, callees "
                     "as children", url, "iris", data,
                     _model_call("iris", f"iris_parallel_vote_trace{rate}", fixed("iris")), load)
          for rate in (1000, 1)),
        grpc_setup("text_redis_hit_grpc", "Redis prediction cache on the text pipeline, the same text", url, "text",
                   data, _model_call("text", "text_classify_cached", lambda: data.text), load),
        grpc_setup("text_redis_miss_grpc", "Redis prediction cache on the text pipeline, a new text each time", url,
                   "text", data, _model_call("text", "text_classify_cached", unique_text), load),
        grpc_setup("data_cache_redis_grpc", "data cache `digits_by_id`: the record's PNG from Redis (hit)", url,
                   "digits", data, _model_call("digits", "digits_by_id", lambda: record, "ID"), load),
        grpc_setup("data_cache_store_grpc", "data cache with the cache off: the PNG from the SQLite store", url,
                   "digits", data, _model_call("digits", "digits_by_id_store", lambda: record, "ID"), load),
    ]
    # the miss setup's check must not warm the cache for the hit setup: it uses a unique input
    miss = next(s for s in setups if s.name == "cache_miss_grpc")
    miss.check = lambda: asyncio.run(_check_unique_miss(url, unique_heavy, data))
    return setups


async def _check_unique_miss(url: str, make: Callable[[], np.ndarray], data: Data) -> bool:
    x = make()
    async with contextlib.AsyncExitStack() as stack:
        client = grpc_aio.InferenceServerClient(url)
        stack.push_async_callback(client.close)
        got = (await client.infer("heavy_mlp_cache", [_infer_input("INPUT", x)])).as_numpy("OUTPUT")
    return same("heavy_mlp", got, data.sessions["heavy_mlp"].run(None, {"INPUT": x})[0])


def triton_json(model: str, data: Data) -> bytes:
    rows = data.rows(model)
    return json.dumps({"inputs": [{"name": FEATURE_INPUT[model], "shape": list(rows.shape), "datatype": "FP32",
                                   "data": rows.reshape(-1).tolist()}]}).encode()


GATEWAYS = {"gateway_iris_http": "iris through the nginx gateway, HTTP JSON (wrk)",
            "gateway_proxy_iris_http": "iris through the gateway's nginx without the njs shape check (its cost)",
            "gateway_tls_iris_http": "iris through the nginx gateway over TLS, HTTPS JSON (wrk)"}


@contextlib.contextmanager
def bench_gateways(stack, tmp: Path):
    """The nginx gateway in front of the bench's tritonserver, plain and with TLS (a self-signed
    certificate), the rate limit out of the way: what it costs over direct HTTP JSON. Yields
    {setup name: (the gateway's base URL, the certificate its check trusts)}."""
    from pattern_runtime.gateway import TEMPLATE, Gateway, self_signed_certificate

    limits = {"rate": "1000000r/s", "burst": 1000000}
    tls = self_signed_certificate(tmp)
    proxy_only = tmp / "proxy-only.conf.template"
    proxy_only.write_text(TEMPLATE.read_text().replace("js_content gateway.infer;", "proxy_pass http://triton_http;"))
    with Gateway(stack.http_url, stack.grpc_url, **limits) as plain, \
            Gateway(stack.http_url, stack.grpc_url, template=proxy_only, **limits) as proxy, \
            Gateway(stack.http_url, stack.grpc_url, tls=tls, **limits) as secure:
        yield {"gateway_iris_http": (plain.http_url, True), "gateway_proxy_iris_http": (proxy.http_url, True),
               "gateway_tls_iris_http": (secure.http_url, str(tls.cert))}


def gateway_setups(urls: dict[str, tuple[str, bool | str]], data: Data, load: LoadOptions) -> list[Setup]:
    """{setup name: (base URL, how the check verifies its certificate)}: one HTTP JSON setup each."""
    return [http_setup(name, GATEWAYS[name], "triton", "iris", data, f"{url}/v2/models/iris/infer",
                       triton_json("iris", data), load, verify=verify) for name, (url, verify) in urls.items()]


def peer_json(model: str, data: Data) -> bytes:
    return json.dumps({"inputs": data.rows(model).tolist()}).encode()


def _http_answer(kind: str, model: str, answer: dict):
    if kind == "triton":
        outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
        return outputs["OUTPUT" if model == "heavy_mlp" else "LABEL"]
    return answer["outputs"] if model == "heavy_mlp" else answer["label"]


def http_setup(name: str, what: str, kind: str, model: str, data: Data, url: str, body: bytes,
               load: LoadOptions, verify: bool | str = True) -> Setup:
    """An HTTP JSON setup driven by wrk (POST `body` to `url`; https: wrk does not verify the
    certificate, the check trusts `verify`, a CA file)."""

    def check() -> bool:
        reply = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30, verify=verify)
        reply.raise_for_status()
        return same(model, np.asarray(_http_answer(kind, model, reply.json()), dtype=np.float32),
                    data.expected(model))

    return Setup(name, "peer" if kind != "triton" else "triton", model, what,
                 lambda c: loadgen.wrk_load(name, url, body, c, load.duration, load.warmup), check,
                 server=kind)


def peer_setups(workers: int, port: int, data: Data, load: LoadOptions) -> list[Setup]:
    base = f"http://127.0.0.1:{port}/predict"
    return [http_setup(f"fastapi_{model.split('_')[0]}_w{workers}",
                       f"FastAPI+uvicorn+onnxruntime web single, {workers} worker(s), {model}, HTTP JSON (wrk)",
                       f"fastapi-{workers}", model, data, f"{base}/{model}", peer_json(model, data), load)
            for model in ("iris", "heavy_mlp")]


# --------------------------------------------------------------------------- what is started


def _variant(tmp: Path, source: str, name: str, edit: Callable[[str], str]) -> None:
    src, dest = paths.model_folder(source), tmp / name
    dest.mkdir()
    for entry in src.iterdir():  # the version folders and the model's files (labels.txt)
        if entry.name != "config.pbtxt":
            (dest / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    config = (src / "config.pbtxt").read_text().replace(f'name: "{source}"', f'name: "{name}"')
    (dest / "config.pbtxt").write_text(edit(config))


def _parallel_vote(config: str) -> str:
    return config.replace('"iris:1,iris:2,iris_slow,iris_failing"', '"iris:1,iris:2"').replace(
        'string_value: "majority"', 'string_value: "mean"')


# the cost of tracing: copies traced at one request in N (their own trace settings, set
# through the trace API once the server runs: triton mode, to the server's trace file)
TRACED = {f"{name}_trace{rate}": (source, rate) for name, source in (
    ("text_classify", "text_classify"), ("iris_parallel_vote", "iris_parallel")) for rate in (1000, 1)}


TRACE_EVERY_REQUEST = ("text_trace1_grpc", "parallel_trace1_grpc")


def trace_variants(http_url: str) -> None:
    """Turn tracing on for the TRACED copies, each at its rate, written 100 traces to a file."""
    import tritonclient.http as httpclient

    from triton_patterns.credentials import authorize

    client = authorize(httpclient.InferenceServerClient(http_url))
    try:
        for name, (_, rate) in TRACED.items():
            client.update_trace_settings(name, {"trace_level": ["TIMESTAMPS"], "trace_rate": str(rate),
                                                "trace_count": "-1", "log_frequency": "100"})
    finally:
        client.close()


def bench_repository(tmp: Path) -> Path:
    """A temporary repository: the benchmarked models (version folders symlinked) and variants."""
    no_batching = lambda text: re.sub(r"(?m)^dynamic_batching\s*\{[^}]*\}\s*$", "", text)  # noqa: E731
    for model in BENCH_MODELS:
        _variant(tmp, model, model, lambda text: text)
    _variant(tmp, "iris", "iris_nobatch", no_batching)
    _variant(tmp, "heavy_mlp", "heavy_mlp_nobatch", no_batching)
    _variant(tmp, "heavy_mlp", "heavy_mlp_t2", lambda t: t.replace(
        'key: "intra_op_thread_count", value: { string_value: "1" }',
        'key: "intra_op_thread_count", value: { string_value: "2" }'))
    # full batches: wait (up to 20 ms) for 32 rows, so a closed loop of 32 does not split in two cohorts of 16
    _variant(tmp, "heavy_mlp", "heavy_mlp_t2_b32", lambda t: t.replace(
        'key: "intra_op_thread_count", value: { string_value: "1" }',
        'key: "intra_op_thread_count", value: { string_value: "2" }').replace(
        "dynamic_batching { max_queue_delay_microseconds: 2000 }",
        "dynamic_batching { preferred_batch_size: [ 32 ] max_queue_delay_microseconds: 20000 }"))
    # two instances with one thread each: one instance's Python work overlaps the other's compute
    _variant(tmp, "heavy_mlp", "heavy_mlp_i2", lambda t: t.replace(
        "instance_group [ { count: 1, kind: KIND_CPU } ]", "instance_group [ { count: 2, kind: KIND_CPU } ]").replace(
        "dynamic_batching { max_queue_delay_microseconds: 2000 }",
        "dynamic_batching { preferred_batch_size: [ 16 ] max_queue_delay_microseconds: 20000 }"))
    _variant(tmp, "heavy_mlp", "heavy_mlp_cache", lambda t: t + "response_cache { enable: true }\n")
    # the parallel BLS on the same pipeline as the `iris_vote` ensemble: v1 and v2, mean of scores
    _variant(tmp, "iris_parallel", "iris_parallel_vote", _parallel_vote)
    for name, (source, _) in TRACED.items():
        _variant(tmp, source, name, _parallel_vote if source == "iris_parallel" else lambda t: t)
    # the Redis prediction cache on iris v2, with a TTL longer than a run
    _variant(tmp, "iris_cached_v2", "iris_redis_cache", lambda t: t.replace(
        'key: "ttl_seconds", value: { string_value: "2" }', 'key: "ttl_seconds", value: { string_value: "600" }'))
    # the data cache with its cache off (ttl 0): every read goes to the store
    _variant(tmp, "digits_by_id", "digits_by_id_store", lambda t: t.replace(
        'key: "ttl_seconds", value: { string_value: "300" }', 'key: "ttl_seconds", value: { string_value: "0" }'))
    return tmp


@contextlib.contextmanager
def bench_stack(log_dir: Path) -> Iterator[Stack]:
    """The stack on the bench repository (store seeded with one digit), logs under `log_dir`."""
    with tempfile.TemporaryDirectory(prefix="bench-repo-") as tmp:
        repo = bench_repository(Path(tmp))
        with Stack(store=repo / "data_store.sqlite", seed_digits=1,
                   server=ServerSettings(model_repository=repo, log_dir=log_dir)) as stack:
            yield stack


def batch_job_setup(url: str, load: LoadOptions) -> Setup:
    """The batch job over iris records in SQLite; `c` = chunks in flight. Its point's
    `extra` carries the same job with in-process onnxruntime and inference alone, for the ratio."""

    def measure(level: int) -> Point:
        result = batch_bench.measure(url, rows=900 if load.quick else 9000, concurrency=level)
        seconds = result.rows / result.triton_rows_per_s
        return Point("batch_job", level, result.chunk_size, result.rows // result.chunk_size, 0, seconds,
                     result.triton_rows_per_s, extra={"inprocess_rows_per_s": result.onnxruntime_rows_per_s,
                                                      "inference_only_rows_per_s": result.inference_only_rows_per_s})

    return Setup("batch_job", "triton", "iris", "batch job: iris records in SQLite -> Triton gRPC -> predictions, "
                 "chunks of 64 (c = chunks in flight)", measure,
                 lambda: batch_bench.measure(url, rows=90, concurrency=2).agree, server="triton")


def async_setup(url: str, redis_url: str, load: LoadOptions) -> Setup:
    """The asynchronous pattern: one-row iris jobs submitted through
    `iris_async_submit` over gRPC at the run's top concurrency, a Redis Stream and batched worker
    processes; `c` = workers. The point is the drain rate (queue filled first); its `extra` has
    the live rate (submitted while running), the synchronous iris gRPC rate measured just before
    on the same rows and concurrency, and (2 workers) the submit -> end notification latency at c=1."""

    def measure(workers: int) -> Point:
        report = async_bench.measure_async(
            url, redis_url, (workers,), jobs=60 if load.quick else 4000, concurrency=load.top,
            reference_s=load.duration, latency_jobs=(10 if load.quick else 300) if workers == 2 else 0,
            latency_workers=workers)
        drain, live = (next(r for r in report["async"] if r["mode"] == m) for m in ("drain", "live"))
        latency = report["latency"] or {}
        return Point("async_jobs", workers, 1, drain["done"], drain["jobs"] - drain["done"] + drain["wrong"],
                     drain["jobs"] / drain["jobs_per_s"] if drain["jobs_per_s"] else 0.0, drain["jobs_per_s"],
                     latency.get("p50_ms", float("nan")), float("nan"), latency.get("p99_ms", float("nan")),
                     extra={"live_jobs_per_s": live["jobs_per_s"],
                            "live_wrong": live["wrong"] + live["jobs"] - live["done"],
                            "sync_rows_per_s": report["sync_rows_per_s"], "concurrency": report["concurrency"],
                            "mean_batch_jobs": drain["mean_batch_jobs"], "latency": latency})

    def check() -> bool:
        report = async_bench.measure_async(url, redis_url, (1,), jobs=8, concurrency=2, reference_s=0.5,
                                           latency_jobs=2, latency_workers=1)
        return (all(r["done"] == r["jobs"] and not r["wrong"] for r in report["async"])
                and not report["latency"]["wrong"])

    return Setup("async_jobs", "triton", "iris", "asynchronous: iris jobs via Redis Stream + batched workers "
                 "(c = worker processes; rows/s = jobs/s draining; p50/p99 = submit to end notification at c=1, "
                 "2 workers)", measure, check, concurrencies=[2] if load.quick else [1, 2, 4], server="triton")


def perf_setups(url: str, data: Data, inputs: dict[str, Path], load: LoadOptions) -> list[Setup]:
    """perf_analyzer over the models in PERF_MIRRORS, checked by the setup it mirrors."""
    own = {s.name: s for s in triton_setups(url, "", data, load)}
    return [Setup(f"perf_analyzer_{model}", "perf_analyzer", own[mirror].model,
                  f"perf_analyzer on `{model}` (cross-check of {mirror})",
                  lambda c, model=model: perf.perf_analyzer_point(f"perf_analyzer_{model}", model, url, inputs[model],
                                                                  c, load.duration, quick=load.quick),
                  own[mirror].check, server="triton", mirrors=mirror)
            for model, mirror in PERF_MIRRORS.items()]


@contextlib.contextmanager
def fastapi_peer(workers: int, log_dir: Path):
    """uvicorn with `workers` processes serving loadtest.peers.fastapi_web_single; stopped by pid."""
    port = free_port()
    env = {**os.environ, "PEER_MODELS": f"iris={ONNX['iris']},heavy_mlp={ONNX['heavy_mlp']}", "PEER_THREADS": "1",
           "PYTHONPATH": str(paths.PROJECT_ROOT)}
    proc = ManagedProcess([sys.executable, "-m", "uvicorn", "loadtest.peers.fastapi_web_single:app",
                           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                           "--log-level", "warning", "--no-access-log"],
                          log_dir / f"fastapi-w{workers}-{port}.log", env=env, cwd=paths.PROJECT_ROOT)
    try:
        if not wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, 60,
                        abort=lambda: not proc.is_running()):
            raise RuntimeError(f"FastAPI peer did not start:\n{proc.log_tail()}")
        if workers > 1:  # every worker answers once before measuring
            for _ in range(4 * workers):
                http_status(f"http://127.0.0.1:{port}/health")
        yield port
    finally:
        proc.terminate(timeout=15)


# --------------------------------------------------------------------------- running


def run_setups(setups: list[Setup], concurrencies: list[int], progress, task) -> list[Outcome]:
    outcomes = []
    for setup in setups:
        outcome = Outcome(setup)
        outcomes.append(outcome)
        levels = setup.concurrencies or concurrencies
        progress.update(task, description=f"{setup.name} check")
        try:
            outcome.correct = bool(setup.check())
            if not outcome.correct:
                outcome.error = "wrong answer"
        except Exception as exc:  # noqa: BLE001 - reported per setup, the run goes on
            outcome.error = f"{type(exc).__name__}: {exc}"[:500]
        for level in levels:
            if outcome.error:
                progress.advance(task)
                continue
            progress.update(task, description=f"{setup.name} {'b' if setup.group == 'limit' else 'c'}={level}")
            try:
                outcome.points.append(setup.measure(level))
            except Exception as exc:  # noqa: BLE001
                outcome.error = f"{type(exc).__name__}: {exc}"[:500]
            progress.advance(task)
    return outcomes


def select(setups: list[Setup], pattern: str | None) -> list[Setup]:
    return [s for s in setups if not pattern or re.search(pattern, s.name)]


def run(args) -> list[Outcome]:
    """Start everything, measure every selected setup, stop everything."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    load = LoadOptions(args.duration, args.warmup, args.quick, max(args.concurrency))
    data = Data()
    log_dir = args.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    phases = [("limit", None), ("triton", None), ("fastapi", 1), ("fastapi", 2)]
    limit = select(inprocess_setups(data, load), args.setups)
    perf_models = {m: PERF_MIRRORS[m] for m in (["iris"] if args.quick else PERF_MIRRORS)}
    probe = triton_setups("", "", data, load) + gateway_setups(dict.fromkeys(GATEWAYS, ("", True)), data, load) + [
        batch_job_setup("", load), async_setup("", "", load)] + [
        s for s in perf_setups("", data, {}, load) if s.mirrors in perf_models.values()]
    n_triton = len(select(probe, args.setups))
    n_peer = len(select(peer_setups(1, 0, data, load) + peer_setups(2, 0, data, load), args.setups))
    total = sum(len(s.concurrencies or []) for s in limit) + (n_triton + n_peer) * len(args.concurrency)
    with Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=args.no_progress) as progress:
        task = progress.add_task("starting", total=total)
        for phase, workers in phases:
            if phase == "limit":
                outcomes += run_setups(limit, args.concurrency, progress, task)
            elif phase == "triton":
                if not n_triton:
                    continue
                progress.update(task, description="starting tritonserver")
                with bench_stack(log_dir) as stack, tempfile.TemporaryDirectory(prefix="bench-tls-") as tls_dir, \
                        bench_gateways(stack, Path(tls_dir)) as gateways:
                    trace_variants(stack.http_url)
                    inputs = perf.write_inputs(args.out / "perf-inputs", tuple(perf_models))
                    chosen = triton_setups(stack.grpc_url, f"http://{stack.http_url}", data, load) + gateway_setups(
                        gateways, data, load) + [
                        batch_job_setup(stack.grpc_url, load),
                        async_setup(stack.grpc_url, stack.redis_url, load)] + [
                        s for s in perf_setups(stack.grpc_url, data, inputs, load) if s.mirrors in perf_models.values()]
                    # tracing every request under load crashed the 2.51 server here (server #7795, fixed in 2.57):
                    # those rows run last, so a crash costs no other row
                    chosen.sort(key=lambda s: s.name in TRACE_EVERY_REQUEST)
                    outcomes += run_setups(select(chosen, args.setups), args.concurrency, progress, task)
            else:
                chosen = select(peer_setups(workers, 0, data, load), args.setups)
                if not chosen:
                    continue
                progress.update(task, description=f"starting FastAPI peer w={workers}")
                with fastapi_peer(workers, log_dir) as port:
                    outcomes += run_setups(select(peer_setups(workers, port, data, load), args.setups),
                                           args.concurrency, progress, task)
        progress.update(task, description="done", completed=progress.tasks[0].total)
    return outcomes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI mode: c=1,8, ~1 s per point, no BENCHMARKS.md")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="comma list (default 1,8,32; quick 1,8)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per point (default 8; quick 1)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per point (default 2; quick 0.3)")
    parser.add_argument("--setups", default=None, help="regex: only setups whose name matches")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default reports/bench[-quick])")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or ([1, 8] if args.quick else [1, 8, 32])
    args.duration = args.duration if args.duration is not None else (1.0 if args.quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 2.0)
    args.out = args.out or (paths.REPORTS / "bench-quick" if args.quick else OUT_DIR)
    args.write_md = not args.quick and args.out == OUT_DIR and not args.setups
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    outcomes = run(args)
    found, made = write_reports(outcomes, args)
    from rich.console import Console
    from rich.table import Table

    table = Table("setup", "c/batch", "rows/s", "p50 ms", "p99 ms", "err", "loadgen CPU", title="bench")
    for o in outcomes:
        if o.error and not o.points:
            table.add_row(o.setup.name, "-", "FAILED", o.error[:60], "", "", "")
        for p in o.points:
            table.add_row(o.setup.name, str(p.batch if o.setup.group == "limit" else p.concurrency),
                          fmt(p.rows_per_s, 0), fmt(p.p50_ms, 2), fmt(p.p99_ms, 2), str(p.errors),
                          "-" if o.setup.group == "limit" else f"{p.loadgen_cpu:.0%}")
    console = Console()
    console.print(table)
    for t in found:
        verdict = "PASS" if t.passed else "MISS" if t.passed is not None else "n/a"
        console.print(f"{verdict:4} {t.name}: {fmt(t.value, 2)} (goal {t.goal}) - {t.detail}")
    console.print(f"reports: {args.out}" + (f", {BENCHMARKS_MD}" if args.write_md else ""))
    failed = [o.setup.name for o in outcomes if not o.ok]
    if failed:
        console.print(f"[red]setups that did not answer correctly: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_script(main)
