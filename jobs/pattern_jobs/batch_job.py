"""Batch pattern: a scheduled job that predicts over stored records through Triton.

    triton-patterns batch seed --db sqlite:///build/batch.sqlite
    triton-patterns batch run --db sqlite:///build/batch.sqlite --url 127.0.0.1:8001 --model iris \
        --retry failed --shard 0/2

A run resolves the model's current version (the latest READY version in the server's
repository index) and pins it, selects its shard's records without a prediction from that
model+version (`batch_store.pending`), sends them in chunks of `chunk_size` rows with at most
`concurrency` requests in flight, and writes each chunk's predictions together with the
records' status in one transaction (`batch_store.save`). A run killed half-way loses only the
chunks in flight: the next run selects what has no prediction yet, and the unique constraint on
(record, model, version) keeps a record from being predicted twice.

Retry policies, the seeds' three:
  all     all-or-nothing: the set's predictions are committed together at the end; any failure
          discards them and re-runs the whole set, up to `max_attempts` passes
  failed  only the failed records are retried, one record per request (so a bad record does not
          fail its chunk-mates again), up to `max_attempts` attempts in all
  none    failures are recorded and left for the next run
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine
from tqdm import tqdm
from tritonclient.utils import InferenceServerException

from pattern_jobs import batch_store as store
from pattern_jobs.batch_store import Outcome, Record
from pattern_runtime.paths import BUILD
from triton_patterns.client import AsyncPatternClient, Prediction
from triton_patterns.patterns import PATTERNS, PatternSpec, pattern

POLICIES = ("all", "failed", "none")
DB_ENV = "TRITON_PATTERNS_BATCH_DB"

# (payloads of one chunk) -> one Prediction per payload, in order; raises on failure
Predict = Callable[[list[Any]], Awaitable[list[Prediction]]]


def default_db() -> str:
    return os.environ.get(DB_ENV) or f"sqlite:///{BUILD / 'batch.sqlite'}"


class BatchError(RuntimeError):
    pass


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n), with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise BatchError(f"--shard must be i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise BatchError(f"--shard {text}: need 0 <= i < n")
    return index, count


@dataclass(frozen=True)
class Target:
    model: str
    version: str
    kind: str  # which records: "iris" (feature rows) or "text"


@dataclass
class Summary:
    model: str
    version: str
    policy: str
    shard: str
    selected: int = 0
    predicted: int = 0
    failed: int = 0  # records left without a prediction by this run
    duplicates: int = 0  # predicted by another job meanwhile
    passes: int = 0
    failed_requests: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # the first few distinct errors

    @property
    def rows_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (
            f"{self.model} v{self.version} shard {self.shard}, retry={self.policy}: {self.selected} selected, "
            f"{self.predicted} predicted, {self.failed} failed, {self.duplicates} already predicted elsewhere; "
            f"{self.passes} pass(es), {self.failed_requests} failed request(s); "
            f"{self.seconds:.2f} s, {self.rows_per_s:.0f} rows/s"
        )
        return text + "".join(f"\n  error: {e}" for e in self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": round(self.rows_per_s, 1)}


def _chunks(items: Sequence[Record], size: int) -> list[Sequence[Record]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _outcomes(chunk: Sequence[Record], predictions: list[Prediction]) -> list[Outcome]:
    if len(predictions) != len(chunk):
        raise BatchError(f"{len(chunk)} rows sent, {len(predictions)} predictions back")
    return [
        Outcome(r.id, p.label, p.class_id, tuple(float(s) for s in p.scores))
        for r, p in zip(chunk, predictions, strict=True)
    ]


async def _pass(
    records: Sequence[Record],
    predict: Predict,
    chunk_size: int,
    concurrency: int,
    on_chunk: Callable[[list[Outcome]], None],
) -> None:
    """Every chunk through `predict`, at most `concurrency` at once; each chunk's outcomes (all
    predictions, or the chunk's error on every record) go to `on_chunk` as soon as they are in."""
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: Sequence[Record]) -> None:
        async with gate:
            try:
                outcomes = _outcomes(chunk, await predict([r.payload for r in chunk]))
            except Exception as exc:  # noqa: BLE001 - the chunk's failure, recorded per record
                outcomes = [Outcome(r.id, error=str(exc) or type(exc).__name__) for r in chunk]
        on_chunk(outcomes)

    await asyncio.gather(*(one(c) for c in _chunks(records, chunk_size)))


async def run_job(
    engine: Engine,
    predict: Predict,
    target: Target,
    *,
    policy: str = "failed",
    max_attempts: int = 3,
    chunk_size: int = 64,
    concurrency: int = 4,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    retry_delay: float = 0.5,
    progress: bool = True,
) -> Summary:
    """One run of the job over the store behind `engine`, calling `predict` per chunk."""
    if policy not in POLICIES:
        raise BatchError(f"retry policy must be one of {POLICIES}, got {policy!r}")
    summary = Summary(target.model, target.version, policy, f"{shard[0]}/{shard[1]}")
    run_id = uuid.uuid4().hex
    records = store.pending(engine, target.model, target.version, target.kind, shard, limit)
    summary.selected = len(records)
    bar = tqdm(total=len(records), unit="row", desc=f"{target.model} v{target.version}", disable=not progress)
    start = time.perf_counter()
    todo: Sequence[Record] = records
    failed_ids: set[int] = set()  # this pass's failed records
    held: list[Outcome] = []  # policy "all": this pass's outcomes, committed only if none failed

    def on_chunk(outcomes: list[Outcome]) -> None:
        failed = [o for o in outcomes if o.error is not None]
        summary.failed_requests += bool(failed)
        failed_ids.update(o.record_id for o in failed)
        for o in failed:
            if o.error not in summary.errors and len(summary.errors) < 3:
                summary.errors.append(o.error)
        if policy == "all":
            held.extend(outcomes)
        else:
            summary.duplicates += store.save(engine, target.model, target.version, run_id, outcomes)
        bar.update(len(outcomes) - len(failed))
        bar.set_postfix(failed=len(failed_ids))

    attempts = 1 if policy == "none" else max(1, max_attempts)
    while todo and summary.passes < attempts:
        if summary.passes:
            await asyncio.sleep(retry_delay)
            if policy == "all":
                bar.reset()
        summary.passes += 1
        failed_ids.clear()
        held.clear()
        retrying_alone = policy == "failed" and summary.passes > 1
        await _pass(todo, predict, 1 if retrying_alone else chunk_size, concurrency, on_chunk)
        if policy == "all":
            # all-or-nothing: commit the whole set, or only the failures' status and run it again
            kept = [o for o in held if o.error is not None] if failed_ids else held
            summary.duplicates += store.save(engine, target.model, target.version, run_id, kept)
            todo = records if failed_ids else []
        else:
            todo = [r for r in todo if r.id in failed_ids]
    bar.close()
    summary.seconds = time.perf_counter() - start
    summary.failed = len(todo)
    summary.predicted = summary.selected - summary.failed - summary.duplicates
    return summary


def spec_for(model: str, text_input: bool) -> PatternSpec:
    """The SDK's pattern for `model`: its own if the catalogue has it, otherwise the synchronous
    (feature rows) or serial (text) pattern pointed at it."""
    for spec in PATTERNS.values():
        if spec.model == model:
            break
    else:
        spec = pattern("serial" if text_input else "synchronous", model)
    if spec.argument not in ("numbers", "text"):
        raise BatchError(f"model {model}: the batch job predicts over feature rows and texts, not {spec.argument}s")
    return spec


def latest_ready(index: Sequence[Any], model: str, version: str | None = None) -> str:
    """The model's latest READY version in a repository index (or `version`, checked ready)."""
    ready = sorted(int(m.version) for m in index if m.name == model and m.state == "READY" and m.version.isdigit())
    if version is not None:
        if int(version) not in ready:
            raise BatchError(f"model {model} version {version} is not ready (ready: {ready or 'none'})")
        return str(version)
    if not ready:
        raise BatchError(f"model {model} has no ready version on the server")
    return str(ready[-1])


async def run(
    url: str, db: str, model: str = "iris", version: str | None = None, protocol: str = "grpc", **options: Any
) -> Summary:
    """The job against the server at `url` and the store at SQLAlchemy URL `db`; `options` are
    run_job's (policy, max_attempts, chunk_size, concurrency, shard, limit, retry_delay, progress)."""
    engine = store.connect(db)
    try:
        async with AsyncPatternClient(url, protocol) as client:
            try:
                version = latest_ready(await client.models(), model, version)
                config = await client.client.get_model_config(model, version, **client._json)
            except InferenceServerException as exc:
                raise BatchError(f"server {url}: {exc.message()}") from None
            config = config.get("config", config)  # gRPC's JSON wraps it
            if int(config.get("max_batch_size", 0)) < 1:
                raise BatchError(f"model {model} does not take batches (max_batch_size 0)")
            options["chunk_size"] = min(options.get("chunk_size", 64), int(config["max_batch_size"]))
            spec = spec_for(model, config["input"][0]["data_type"] == "TYPE_STRING")
            target = Target(model, version, "text" if spec.datatype == "BYTES" else "iris")

            async def predict(payloads: list[Any]) -> list[Prediction]:
                return await client.predict(spec.name, payloads, version, model)

            return await run_job(engine, predict, target, **options)
    finally:
        engine.dispose()


@contextlib.contextmanager
def grpc_server(url: str | None) -> Iterator[str]:
    """`url`, or when None a tritonserver (and Redis) started as the demo does: its gRPC
    address, and both stopped on exit."""
    if url is not None:
        yield url
        return
    from pattern_runtime.stack import running_stack

    with running_stack() as (triton, _redis):
        yield triton.grpc_url


def main(args: Any) -> int:
    """`triton-patterns batch seed|run` (arguments in cli.py). `run` without --url starts
    tritonserver and Redis as the demo does and stops them after. Exit status: 0 done, 1 records
    left failed (under retry policy "none" that is expected: 0), 2 the job could not run."""
    args.db = args.db or default_db()
    if args.action == "seed":
        engine = store.connect(args.db)
        added = {kind: store.seed(engine, kind, args.repeat)
                 for kind in (store.KINDS if args.kind == "all" else (args.kind,))}
        print(f"seeded {args.db}: " + ", ".join(f"{n} new {kind} records" for kind, n in added.items()))
        return 0
    options = {"policy": args.retry, "max_attempts": args.max_attempts, "chunk_size": args.chunk_size,
               "concurrency": args.concurrency, "limit": args.limit, "retry_delay": args.retry_delay,
               "progress": not args.no_progress}
    try:
        shard = parse_shard(args.shard)
        with grpc_server(args.url) as url:
            summary = asyncio.run(run(url, args.db, args.model, args.model_version, shard=shard, **options))
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict()) if args.json else summary.line(), flush=True)
    return 1 if summary.failed and args.retry != "none" else 0
