"""`make bench`: every serving setup and its peers measured side by side in one run.

Starts what it measures on free 127.0.0.1 ports (one tritonserver over a temporary copy of the
project's repository with benchmark variants, and the FastAPI peer with 1 and 2 workers), drives
each setup with a closed-loop load at several concurrencies (`loadtest.loadgen`), then writes
`results.json`, PNG plots under `reports/bench/` and, in full mode, `BENCHMARKS.md` with the
ratios against the targets of issue 3.

    python -m loadtest.bench                # full: c=1,8,32, 8 s per point after 2 s warm-up
    python -m loadtest.bench --quick        # CI: c=1,8, ~1 s per point, no BENCHMARKS.md
    python -m loadtest.bench --setups 'digits|cache' --duration 3

Benchmark variants live only in the temporary repository (committed configs are untouched):
`iris_nobatch` and `heavy_mlp_nobatch` (no dynamic batching), `heavy_mlp_t2` (2 intra-op
threads), `heavy_mlp_cache` (`response_cache { enable: true }`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import requests
import tritonclient.grpc.aio as grpc_aio
from tritonclient.grpc import InferInput

from triton_patterns import paths
from triton_patterns.launcher import TritonServer
from triton_patterns.redis_server import REDIS_URL_ENV, RedisServer
from triton_patterns.processes import ManagedProcess, free_port, http_status, wait_for

from . import loadgen
from .loadgen import Point

REPO = paths.MODEL_REPOSITORY
OUT_DIR = paths.REPORTS / "bench"
DOCS_DIR = paths.PROJECT_ROOT / "docs" / "bench"
BENCHMARKS_MD = paths.PROJECT_ROOT / "BENCHMARKS.md"
BENCH_MODELS = ("iris", "heavy_mlp", "digits", "digits_bls", "digits_preprocess", "digits_classifier",
                "iris_vote", "iris_vote_aggregate")
ONNX = {"iris": REPO / "iris/2/model.onnx", "heavy_mlp": REPO / "heavy_mlp/1/model.onnx",
        "digits_classifier": REPO / "digits_classifier/1/model.onnx"}
FEATURE_INPUT = {"iris": "FEATURES", "heavy_mlp": "INPUT"}


# --------------------------------------------------------------------------- inputs and answers


@dataclass
class Data:
    """Fixed inputs and the in-process reference answers every setup is checked against."""

    iris: np.ndarray = field(init=False)
    heavy: np.ndarray = field(init=False)
    pngs: list[bytes] = field(init=False)
    digit_pixels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        from export import digits as digits_export
        from export import iris as iris_export

        self.iris = iris_export.load_split()[1][:1].astype(np.float32)
        self.heavy = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
        x, _ = digits_export.load_test_split()
        self.digit_pixels = x[:1].astype(np.float32)
        self.pngs = [digits_export.encode_digit_png(x[0])]
        self.sessions = {name: session(path, 1) for name, path in ONNX.items()}

    def rows(self, model: str) -> np.ndarray:
        return self.iris if model == "iris" else self.heavy

    def expected(self, model: str) -> np.ndarray:
        """iris: label; heavy_mlp: OUTPUT; digits: label (of the original pixels)."""
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


@dataclass
class Setup:
    """One thing measured: `measure(concurrency)` gives a Point, `check()` one correct answer."""

    name: str
    group: str  # "limit", "peer", "triton"
    model: str
    what: str
    measure: Callable[[int], Point]
    check: Callable[[], bool]
    concurrencies: list[int] | None = None  # None: the run's list; in-process: the batch sizes
    server: str = ""  # "triton", "fastapi-1", "fastapi-2" or "" (in-process)


def inprocess_setups(data: Data, args) -> list[Setup]:
    setups = []
    batches = [1, 32] if args.quick else [1, 8, 32]
    for model in ("iris", "heavy_mlp"):
        for threads in (1, 2):
            sess = session(ONNX[model], threads)
            name = FEATURE_INPUT[model]

            def measure(batch, sess=sess, name=name, model=model, threads=threads):
                x = np.repeat(data.rows(model), batch, axis=0)
                return loadgen.inprocess_load(f"ort_{model}_t{threads}", lambda: sess.run(None, {name: x}), batch,
                                              args.duration, args.warmup)

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


def _grpc_answer(result, model: str):
    return result.as_numpy("OUTPUT") if model == "heavy_mlp" else result.as_numpy("LABEL")


def grpc_setup(name: str, what: str, url: str, model: str, data: Data,
               call_factory: Callable[[grpc_aio.InferenceServerClient], Callable]) -> Setup:
    """A Triton setup driven by tritonclient's gRPC asyncio client; `call_factory(client)` gives
    the coroutine function for one request, which returns the answer to check."""

    async def run(concurrency: int | None):
        client = grpc_aio.InferenceServerClient(url)
        try:
            call = call_factory(client)
            if concurrency is None:
                return await call()
            return await loadgen.async_load(name, call, concurrency, ARGS.duration, ARGS.warmup)
        finally:
            await client.close()

    return Setup(name, "triton", model, what, lambda c: asyncio.run(run(c)),
                 lambda: same(model, asyncio.run(run(None)), data.expected(model)), server="triton")


def _model_call(model: str, version_name: str, array_fn: Callable[[], np.ndarray]):
    input_name = "IMAGE" if model == "digits" else FEATURE_INPUT[model]
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


def triton_setups(server: TritonServer, data: Data) -> list[Setup]:
    url, http = server.grpc_url, f"http://{server.http_url}"
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
                   _model_call("iris", "iris", fixed("iris"))),
        http_setup("triton_iris_http", "iris, dynamic batching, HTTP JSON (wrk)", "triton", "iris", data,
                   f"{http}/v2/models/iris/infer", triton_json("iris", data)),
        grpc_setup("triton_iris_nobatch_grpc", "iris without dynamic batching, gRPC", url, "iris", data,
                   _model_call("iris", "iris_nobatch", fixed("iris"))),
        grpc_setup("triton_heavy_grpc", "heavy_mlp, dynamic batching (2 ms), 1 thread, gRPC", url, "heavy_mlp", data,
                   _model_call("heavy_mlp", "heavy_mlp", fixed("heavy_mlp"))),
        http_setup("triton_heavy_http", "heavy_mlp, dynamic batching, HTTP JSON (wrk)", "triton", "heavy_mlp", data,
                   f"{http}/v2/models/heavy_mlp/infer", triton_json("heavy_mlp", data)),
        grpc_setup("triton_heavy_t2_grpc", "heavy_mlp, dynamic batching, 2 intra-op threads, gRPC", url,
                   "heavy_mlp", data, _model_call("heavy_mlp", "heavy_mlp_t2", fixed("heavy_mlp"))),
        grpc_setup("triton_heavy_nobatch_grpc", "heavy_mlp without dynamic batching, gRPC", url, "heavy_mlp", data,
                   _model_call("heavy_mlp", "heavy_mlp_nobatch", fixed("heavy_mlp"))),
        grpc_setup("cache_hit_grpc", "heavy_mlp + response cache, the same input every time", url, "heavy_mlp",
                   data, _model_call("heavy_mlp", "heavy_mlp_cache", fixed("heavy_mlp"))),
        grpc_setup("cache_miss_grpc", "heavy_mlp + response cache, a new input every time", url, "heavy_mlp",
                   data, _model_call("heavy_mlp", "heavy_mlp_cache", unique_heavy)),
        grpc_setup("digits_ensemble_grpc", "prep-pred ensemble `digits` (PNG in), gRPC", url, "digits", data,
                   _model_call("digits", "digits", lambda: png)),
        grpc_setup("digits_bls_grpc", "prep-pred BLS `digits_bls` (PNG in), gRPC", url, "digits", data,
                   _model_call("digits", "digits_bls", lambda: png)),
        grpc_setup("parallel_ensemble_grpc", "parallel ensemble `iris_vote` (v1 + v2, mean)", url, "iris", data,
                   _model_call("iris", "iris_vote", fixed("iris"))),
        grpc_setup("parallel_bls_grpc", "parallel BLS on the same pipeline (v1 + v2, mean)", url, "iris", data,
                   _model_call("iris", "iris_parallel_vote", fixed("iris"))),
        grpc_setup("redis_cache_hit_grpc", "Redis prediction cache on iris v2, the same input", url, "iris", data,
                   _model_call("iris", "iris_redis_cache", fixed("iris"))),
        grpc_setup("redis_cache_miss_grpc", "Redis prediction cache on iris v2, a new input each time", url,
                   "iris", data, _model_call("iris", "iris_redis_cache", unique_iris)),
        grpc_setup("digits_steps_grpc", "digits_preprocess then digits_classifier, called by the client", url,
                   "digits", data, digits_steps),
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


def peer_json(model: str, data: Data) -> bytes:
    return json.dumps({"inputs": data.rows(model).tolist()}).encode()


def _http_answer(kind: str, model: str, answer: dict):
    if kind == "triton":
        outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
        return outputs["OUTPUT" if model == "heavy_mlp" else "LABEL"]
    return answer["outputs"] if model == "heavy_mlp" else answer["label"]


def http_setup(name: str, what: str, kind: str, model: str, data: Data, url: str, body: bytes) -> Setup:
    """An HTTP JSON setup driven by wrk (POST `body` to `url`)."""

    def check() -> bool:
        reply = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        reply.raise_for_status()
        return same(model, np.asarray(_http_answer(kind, model, reply.json()), dtype=np.float32),
                    data.expected(model))

    return Setup(name, "peer" if kind != "triton" else "triton", model, what,
                 lambda c: loadgen.wrk_load(name, url, body, c, ARGS.duration, ARGS.warmup), check,
                 server=kind)


def peer_setups(workers: int, port: int, data: Data) -> list[Setup]:
    base = f"http://127.0.0.1:{port}/predict"
    return [http_setup(f"fastapi_{model.split('_')[0]}_w{workers}",
                       f"FastAPI+uvicorn+onnxruntime web single, {workers} worker(s), {model}, HTTP JSON (wrk)",
                       f"fastapi-{workers}", model, data, f"{base}/{model}", peer_json(model, data))
            for model in ("iris", "heavy_mlp")]


# --------------------------------------------------------------------------- what is started


def _variant(tmp: Path, source: str, name: str, edit: Callable[[str], str]) -> None:
    src, dest = REPO / source, tmp / name
    dest.mkdir()
    for version in src.iterdir():
        if version.is_dir():
            (dest / version.name).symlink_to(version.resolve(), target_is_directory=True)
    config = (src / "config.pbtxt").read_text().replace(f'name: "{source}"', f'name: "{name}"')
    (dest / "config.pbtxt").write_text(edit(config))


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
    _variant(tmp, "heavy_mlp", "heavy_mlp_cache", lambda t: t + "response_cache { enable: true }\n")
    # the parallel BLS on the same pipeline as the `iris_vote` ensemble: v1 and v2, mean of scores
    _variant(tmp, "iris_parallel", "iris_parallel_vote", lambda t: t.replace(
        '"iris:1,iris:2,iris_slow,iris_failing"', '"iris:1,iris:2"').replace(
        'string_value: "majority"', 'string_value: "mean"'))
    # the Redis prediction cache on iris v2, with a TTL longer than a run
    _variant(tmp, "iris_cached_v2", "iris_redis_cache", lambda t: t.replace(
        'key: "ttl_seconds", value: { string_value: "2" }', 'key: "ttl_seconds", value: { string_value: "600" }'))
    return tmp


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


@dataclass
class Outcome:
    setup: Setup
    correct: bool = False
    error: str = ""
    points: list[Point] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.correct and not self.error and all(p.requests > 0 and p.errors == 0 for p in self.points)


ARGS = argparse.Namespace(duration=8.0, warmup=2.0, quick=False)


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

    ARGS.duration, ARGS.warmup, ARGS.quick = args.duration, args.warmup, args.quick
    data = Data()
    log_dir = args.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    phases = [("limit", None), ("triton", None), ("fastapi", 1), ("fastapi", 2)]
    limit = select(inprocess_setups(data, args), args.setups)
    n_triton = len(select(triton_names_probe(), args.setups))
    n_peer = len(select(peer_setups(1, 0, data) + peer_setups(2, 0, data), args.setups))
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
                with tempfile.TemporaryDirectory(prefix="bench-repo-") as tmp:
                    with RedisServer(maxmemory="64mb", maxmemory_policy="allkeys-lru") as redis, TritonServer(
                        model_repository=bench_repository(Path(tmp)), log_dir=log_dir,
                        env={REDIS_URL_ENV: redis.url},
                    ) as server:
                        outcomes += run_setups(select(triton_setups(server, data), args.setups), args.concurrency,
                                               progress, task)
            else:
                chosen = select(peer_setups(workers, 0, data), args.setups)
                if not chosen:
                    continue
                progress.update(task, description=f"starting FastAPI peer w={workers}")
                with fastapi_peer(workers, log_dir) as port:
                    outcomes += run_setups(select(peer_setups(workers, port, data), args.setups),
                                           args.concurrency, progress, task)
        progress.update(task, description="done", completed=progress.tasks[0].total)
    return outcomes


def triton_names_probe() -> list[Setup]:
    names = ["triton_iris_grpc", "triton_iris_http", "triton_iris_nobatch_grpc", "triton_heavy_grpc",
             "triton_heavy_http", "triton_heavy_t2_grpc", "triton_heavy_nobatch_grpc", "cache_hit_grpc",
             "cache_miss_grpc", "digits_ensemble_grpc", "digits_bls_grpc", "digits_steps_grpc"]
    return [Setup(n, "triton", "", "", lambda c: None, lambda: True) for n in names]


# --------------------------------------------------------------------------- ratios and report


def _points(outcomes: list[Outcome], name: str) -> list[Point]:
    return next((o.points for o in outcomes if o.setup.name == name), [])


def _at(outcomes, name: str, concurrency: int) -> Point | None:
    return next((p for p in _points(outcomes, name) if p.concurrency == concurrency), None)


def _best(points: list[Point]) -> Point | None:
    points = [p for p in points if p is not None and p.requests]
    return max(points, key=lambda p: p.rows_per_s) if points else None


@dataclass
class Target:
    name: str
    goal: str
    value: float | None
    passed: bool | None
    detail: str


def targets(outcomes: list[Outcome], top: int, low: int = 1) -> list[Target]:
    """The ratios of issue 3, from this run's points (None when a setup was not measured)."""
    found = []

    def add(name, goal, value, passed, detail):
        found.append(Target(name, goal, value, passed if value is not None and not math.isnan(value) else None,
                            detail))

    for model, short, goal in (("iris", "iris", 3.0), ("heavy_mlp", "heavy", 3.5)):
        peer = _best([_at(outcomes, f"fastapi_{short}_w{w}", top) for w in (1, 2)])
        triton = _best([_at(outcomes, f"triton_{short}_{p}", top) for p in ("grpc", "http")])
        if peer and triton:
            ratio, p99 = triton.rows_per_s / peer.rows_per_s, triton.p99_ms / peer.p99_ms
            add(f"Triton sync vs FastAPI, {model}, c={top}: throughput", f">= {goal}x", ratio, ratio >= goal,
                f"{triton.setup} {triton.rows_per_s:,.0f}/s vs {peer.setup} {peer.rows_per_s:,.0f}/s")
            add(f"Triton sync vs FastAPI, {model}, c={top}: p99", "<= 0.3x", p99, p99 <= 0.3,
                f"{triton.setup} {triton.p99_ms:.1f} ms vs {peer.setup} {peer.p99_ms:.1f} ms")
        else:
            add(f"Triton sync vs FastAPI, {model}", f">= {goal}x", None, None, "not measured")
    heavy = _best([p for n in ("triton_heavy_grpc", "triton_heavy_http", "triton_heavy_t2_grpc",
                               "triton_heavy_nobatch_grpc") for p in _points(outcomes, n)])
    limit = _best([p for t in (1, 2) for p in _points(outcomes, f"ort_heavy_mlp_t{t}")])
    add("heavy_mlp through Triton vs in-process best", ">= 0.8x",
        heavy.rows_per_s / limit.rows_per_s if heavy and limit else None,
        bool(heavy and limit and heavy.rows_per_s / limit.rows_per_s >= 0.8),
        f"{heavy.setup} c={heavy.concurrency} {heavy.rows_per_s:,.0f} rows/s vs {limit.setup} batch {limit.batch} "
        f"{limit.rows_per_s:,.0f} rows/s" if heavy and limit else "not measured")
    ens, steps, bls = (_at(outcomes, n, low) for n in ("digits_ensemble_grpc", "digits_steps_grpc", "digits_bls_grpc"))
    add(f"prep-pred ensemble minus sum of steps, p50, c={low}", "<= 1 ms",
        ens.p50_ms - steps.p50_ms if ens and steps else None,
        bool(ens and steps and ens.p50_ms - steps.p50_ms <= 1.0),
        f"ensemble {ens.p50_ms:.2f} ms, steps called directly {steps.p50_ms:.2f} ms" if ens and steps else "not measured")
    add(f"BLS vs ensemble, p50, c={low}", "<= 1.3x", bls.p50_ms / ens.p50_ms if bls and ens else None,
        bool(bls and ens and bls.p50_ms / ens.p50_ms <= 1.3),
        f"BLS {bls.p50_ms:.2f} ms, ensemble {ens.p50_ms:.2f} ms" if bls and ens else "not measured")
    par_ens, par_bls = _at(outcomes, "parallel_ensemble_grpc", low), _at(outcomes, "parallel_bls_grpc", low)
    add(f"parallel BLS vs ensemble (iris v1 + v2), p50, c={low}", "<= 1.3x",
        par_bls.p50_ms / par_ens.p50_ms if par_bls and par_ens else None,
        bool(par_bls and par_ens and par_bls.p50_ms / par_ens.p50_ms <= 1.3),
        f"BLS {par_bls.p50_ms:.2f} ms, ensemble {par_ens.p50_ms:.2f} ms" if par_bls and par_ens else "not measured")
    rhit, rmiss = (_at(outcomes, n, top) for n in ("redis_cache_hit_grpc", "redis_cache_miss_grpc"))
    add(f"Redis prediction cache hit vs miss, iris, throughput, c={top} (reported, no goal)", "-",
        rhit.rows_per_s / rmiss.rows_per_s if rhit and rmiss else None, None,
        f"hit {rhit.rows_per_s:,.0f}/s p50 {rhit.p50_ms:.2f} ms, miss {rmiss.rows_per_s:,.0f}/s "
        f"p50 {rmiss.p50_ms:.2f} ms" if rhit and rmiss else "not measured")
    hit, miss = _at(outcomes, "cache_hit_grpc", low), _at(outcomes, "cache_miss_grpc", low)
    add(f"response cache hit vs miss, heavy_mlp, p50, c={low}", "<= 0.1x",
        hit.p50_ms / miss.p50_ms if hit and miss else None, bool(hit and miss and hit.p50_ms / miss.p50_ms <= 0.1),
        f"hit {hit.p50_ms:.2f} ms, miss {miss.p50_ms:.2f} ms" if hit and miss else "not measured")
    return found


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    wrk = "-"
    if loadgen.wrk_available():
        import subprocess
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (out.stdout + out.stderr).split("[")[0].replace("wrk", "").strip() or "-"
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "tritonserver": "2.51.0 (nvidia-pytriton " + _version("nvidia-pytriton") + ")",
            **{d: _version(d) for d in ("tritonclient", "onnxruntime", "numpy", "fastapi", "uvicorn", "uvloop")},
            "wrk": wrk}


def plots(outcomes: list[Outcome], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    served = [o for o in outcomes if o.setup.group != "limit" and o.points]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, models in zip(axes, (("iris",), ("heavy_mlp", "digits"))):
        for o in served:
            if o.setup.model in models:
                ax.plot([p.concurrency for p in o.points], [p.rows_per_s for p in o.points], marker="o",
                        label=o.setup.name, linestyle="--" if o.setup.group == "peer" else "-")
        for o in outcomes:  # the limit as horizontal lines: its best batch
            if o.setup.group == "limit" and o.setup.model in models and o.points:
                best = _best(o.points)
                ax.axhline(best.rows_per_s, color="grey", linewidth=0.8, linestyle=":")
                ax.annotate(f"{o.setup.name} b{best.batch}", (1, best.rows_per_s), fontsize=7, color="grey")
        ax.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="rows/s", title=" / ".join(models))
        ax.legend(fontsize=7)
    fig.tight_layout()
    made.append(out / "throughput.png")
    fig.savefig(made[-1], dpi=90)
    plt.close(fig)

    levels = sorted({p.concurrency for o in served for p in o.points})
    fig, axes = plt.subplots(1, len(levels), figsize=(6 * len(levels), 6), squeeze=False)
    for ax, level in zip(axes[0], levels):
        rows = [(o.setup.name, _at(outcomes, o.setup.name, level)) for o in served]
        rows = [(n, p) for n, p in rows if p]
        y = np.arange(len(rows))
        for i, (key, color) in enumerate((("p50_ms", "C0"), ("p90_ms", "C1"), ("p99_ms", "C3"))):
            ax.barh(y + (i - 1) * 0.27, [getattr(p, key) for _, p in rows], 0.27, label=key[:3], color=color)
        ax.set(yticks=y, yticklabels=[n for n, _ in rows], xscale="log", xlabel="ms", title=f"latency, c={level}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    made.append(out / "latency.png")
    fig.savefig(made[-1], dpi=90)
    plt.close(fig)
    return made


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def markdown(outcomes: list[Outcome], found: list[Target], info: dict, args, plot_dir: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m loadtest.bench`) on {time.strftime('%Y-%m-%d %H:%M')}; "
        f"{args.duration:g} s per point after {args.warmup:g} s of warm-up, closed loop. Do not edit by hand: "
        "rerun `make bench`. Numbers are from one run on a shared, noisy machine; compare ratios, not absolutes.",
        "",
        "## Machine and versions",
        "",
        "| | |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Targets (issue 3), from this run",
        "",
        "| target | goal | this run | result | from |", "|---|---|---|---|---|",
        *[f"| {t.name} | {t.goal} | {_fmt(t.value, 2)} | "
          f"{'PASS' if t.passed else 'MISS' if t.passed is not None else 'n/a'} | {t.detail} |" for t in found],
        "",
        "## All points",
        "",
        "`c` is the number of concurrent closed-loop clients (connections for wrk); for in-process rows it is 1 and "
        "`batch` rows go into each `session.run`. `rows/s` = answered rows per second; `loadgen CPU` is the load "
        "generator's own CPU time over (wall time x cores): how much of the machine it took from the server.",
        "",
        "| setup | what | c | batch | rows/s | p50 ms | p90 ms | p99 ms | errors | loadgen CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error and not o.points:
            lines.append(f"| {o.setup.name} | {o.setup.what} | - | - | - | - | - | - | FAILED: {o.error} | - |")
        for p in o.points:
            lines.append(f"| {o.setup.name} | {o.setup.what} | {p.concurrency} | {p.batch} | {_fmt(p.rows_per_s, 0)} | "
                         f"{_fmt(p.p50_ms, 2)} | {_fmt(p.p90_ms, 2)} | {_fmt(p.p99_ms, 2)} | {p.errors} | "
                         f"{'-' if o.setup.group == 'limit' else f'{p.loadgen_cpu:.0%}'} |")
    lines += ["", "## Plots", "", f"![throughput]({plot_dir}/throughput.png)", "",
              f"![latency]({plot_dir}/latency.png)", ""]
    return "\n".join(lines)


def write_reports(outcomes: list[Outcome], args) -> tuple[list[Target], list[Path]]:
    args.out.mkdir(parents=True, exist_ok=True)
    top = max(args.concurrency)
    found = targets(outcomes, top, min(args.concurrency))
    info = machine()
    (args.out / "results.json").write_text(json.dumps({
        "machine": info, "duration": args.duration, "warmup": args.warmup,
        "setups": [{"name": o.setup.name, "what": o.setup.what, "correct": o.correct, "ok": o.ok, "error": o.error,
                    "points": [p.as_dict() for p in o.points]} for o in outcomes],
        "targets": [t.__dict__ for t in found],
    }, indent=1))
    made = plots(outcomes, args.out)
    if args.write_md:
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        for path in made:
            shutil.copy(path, DOCS_DIR / path.name)
        BENCHMARKS_MD.write_text(markdown(outcomes, found, info, args, "docs/bench"))
    else:
        (args.out / "BENCHMARKS.md").write_text(markdown(outcomes, found, info, args, "."))
    return found, made


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
                          _fmt(p.rows_per_s, 0), _fmt(p.p50_ms, 2), _fmt(p.p99_ms, 2), str(p.errors),
                          "-" if o.setup.group == "limit" else f"{p.loadgen_cpu:.0%}")
    console = Console()
    console.print(table)
    for t in found:
        verdict = "PASS" if t.passed else "MISS" if t.passed is not None else "n/a"
        console.print(f"{verdict:4} {t.name}: {_fmt(t.value, 2)} (goal {t.goal}) - {t.detail}")
    console.print(f"reports: {args.out}" + (f", {BENCHMARKS_MD}" if args.write_md else ""))
    failed = [o.setup.name for o in outcomes if not o.ok]
    if failed:
        console.print(f"[red]setups that did not answer correctly: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
