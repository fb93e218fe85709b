"""The asynchronous pattern's job queue over Redis, shared by the submit/result backends (inside
Triton), the workers and the SDK.

Keys, under a namespace (default "async"):
  <ns>:jobs        a Stream with the consumer group "workers": one entry per job (job id,
                   target model and version, input tensors, creation time)
  <ns>:job:<id>    a hash per job (state, result, timings, error), expiring `ttl` seconds after
                   its last change; the same name is the pub/sub channel on which the job's end
                   (done or failed) is announced
  <ns>:dead        the dead-letter stream: jobs that failed for good, with their last error and
                   inputs (enough to inspect or replay them)
  <ns>:idem:<submitter>:<key>  a client's idempotency key: the first job's id and a fingerprint
                   of its request, for `ttl` seconds; a second submit with the key gets that id
A job id is 32 hex digits: its creation time in milliseconds (12) and 80 random bits, so a
missing record can be told apart: younger than `ttl` it was lost (the store lost its data), older
it expired (`missing_job`).
States: queued -> running -> done | failed. A retryable failure puts a job back to queued with
its error; it stays in the stream's pending list and is reclaimed (XAUTOCLAIM) after the idle
timeout, like the job of a worker that died. The end of a job (result, dead letter, XACK, XDEL
and notification) is one Lua script that does nothing but acknowledge once the job has ended,
so a job completes exactly once in the result store however often it was delivered.
Submits, starts and ends of many jobs go to Redis in one pipelined round trip each
(`submit_many`, `start_many`, and `pipeline()` passed to `complete`/`fail`/`retry_later`): the
workers run what they read as batches.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from pattern_kernel.batching import request_batch_size
from pattern_kernel.cache_codec import cache_key, decode_outputs, encode_outputs
from pattern_kernel.errors import InputError
from pattern_kernel.validation import check_finite

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
ENDED = (DONE, FAILED)
UNKNOWN = "unknown"  # the result model's status of an id with no job (never queued, or expired)
GROUP = "workers"
TIMING_FIELDS = ("queue_ms", "infer_ms", "total_ms")

# KEYS: job hash, jobs stream, [idempotency key]. ARGV: ttl, the key's value (job id and
# fingerprint), job id, model, version, submitted by, rows, created, encoded inputs. Returns the
# key's value when the key names a job already (nothing written), else 0.
_SUBMIT = """
if #KEYS == 3 then
  local first = redis.call('GET', KEYS[3])
  if first then return first end
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[1])
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'model', ARGV[4], 'submitted_by', ARGV[6],
           'requested_version', ARGV[5], 'rows', ARGV[7], 'created', ARGV[8], 'attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[3], 'model', ARGV[4], 'version', ARGV[5], 'created', ARGV[8],
           'inputs', ARGV[9])
return 0
"""

# A job accepted must be able to end when the Redis is full (maxmemory, noeviction: only submits
# are refused then), so the scripts that start and end jobs may write past maxmemory. Script flags
# are Redis 7.0's: an older Redis cannot compile them (the workers refuse it at start).
_ALLOW_OOM = "#!lua flags=allow-oom\n"
MIN_REDIS_VERSION = (7, 0)


class UnsupportedRedis(RuntimeError):
    """The queue's Redis is older than MIN_REDIS_VERSION."""


def check_redis_version(version: str, where: str) -> None:
    """UnsupportedRedis naming `where` and its `version` (INFO's redis_version) when it is too old."""
    found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if found < MIN_REDIS_VERSION:
        raise UnsupportedRedis(
            f"the job queue needs Redis {'.'.join(map(str, MIN_REDIS_VERSION))} or newer (the scripts that "
            f"start and end jobs carry script flags), but {where} runs Redis {version}")


# KEYS[1] job hash. ARGV: ttl, then field/value pairs. Returns 0 when the job already ended.
_START = _ALLOW_OOM + """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'done' or s == 'failed' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: job hash, jobs stream, dead-letter stream. ARGV: group, entry id, ttl, message, n (the
# number of hash field/value arguments), the n hash arguments, then the dead-letter entry's
# field/value pairs (none: no dead letter). Writes the end once; always acknowledges the entry.
_FINISH = _ALLOW_OOM + """
local s = redis.call('HGET', KEYS[1], 'status')
local wrote = 0
if s ~= 'done' and s ~= 'failed' then
  local n = tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + n))
  redis.call('HINCRBY', KEYS[1], 'completions', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  if #ARGV > 5 + n then redis.call('XADD', KEYS[3], '*', unpack(ARGV, 6 + n)) end
  redis.call('PUBLISH', KEYS[1], ARGV[4])
  wrote = 1
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return wrote
"""


ID_TIME_DIGITS = 12


def new_job_id(now: float | None = None) -> str:
    """Creation time in ms (12 hex digits) then 80 random bits (20 hex digits)."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:0{ID_TIME_DIGITS}x}{secrets.token_hex(10)}"


def job_created(job_id: str) -> float | None:
    """When a job id of `new_job_id` was made (epoch seconds); None for any other text."""
    if len(job_id) != 32 or any(c not in "0123456789abcdef" for c in job_id):
        return None
    return int(job_id[:ID_TIME_DIGITS], 16) / 1000


CLOCK_SKEW_S = 60.0  # an id from a host whose clock is ahead by less than this is still believed


def missing_job(job_id: str, ttl_seconds: int, now: float | None = None) -> str:
    """What to say of a job id without a record: lost (created within `ttl_seconds`: the job
    store lost it), expired (created longer ago), or unknown (no id this queue makes)."""
    created = job_created(job_id)
    age = (time.time() if now is None else now) - created if created is not None else None
    if age is None or age < -CLOCK_SKEW_S:
        return f"no job {job_id!r}: unknown (not an id this queue made)"
    if age < ttl_seconds:
        return (f"job {job_id!r} was lost: created {max(age, 0):.0f} s ago, within ttl_seconds ({ttl_seconds}), "
                f"but its record is gone (the job store lost its data)")
    return f"no job {job_id!r}: expired (created {age:.0f} s ago; a job is kept ttl_seconds ({ttl_seconds}) " \
           f"after its last change)"


@dataclass(frozen=True)
class Job:
    """One stream entry as a worker sees it; `deliveries` counts attempts (XREADGROUP/XAUTOCLAIM)."""

    entry_id: str
    job_id: str
    model: str
    version: int
    inputs: dict[str, np.ndarray]
    created: float
    deliveries: int = 1


@dataclass(frozen=True)
class Submission:
    """A job to queue: its target, inputs, the model that queues it and the client's optional
    idempotency key (a retry with the same key gets the first job's id)."""

    model: str
    version: int
    inputs: Mapping[str, np.ndarray]
    submitted_by: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True)
class Submitted:
    """A submit's answer: the job id; `created` False when the idempotency key had a job."""

    job_id: str
    created: bool = True


@dataclass
class JobState:
    """A job's hash, decoded: what `async_result` and the SDK return."""

    job_id: str
    status: str
    model: str = ""
    submitted_by: str = ""
    requested_version: int = -1
    model_version: str = ""
    attempts: int = 0
    completions: int = 0
    error: str = ""
    worker: str = ""
    created: float = 0.0
    batch_jobs: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "model": self.model,
            "submitted_by": self.submitted_by,
            "requested_version": self.requested_version,
            "model_version": self.model_version,
            "attempts": self.attempts,
            "completions": self.completions,
            "error": self.error,
            "worker": self.worker,
            "created": self.created,
            "batch_jobs": self.batch_jobs,
            "timings": self.timings,
            "outputs": {name: tensor_json(a) for name, a in self.outputs.items()},
        }


def tensor_json(array: np.ndarray) -> dict:
    array = np.asarray(array)
    if array.dtype == np.object_:
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        return {"dtype": "bytes", "shape": list(array.shape), "data": data}
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.reshape(-1).tolist()}


def tensor_from_json(entry: Mapping) -> np.ndarray:
    if entry["dtype"] == "bytes":
        return np.array([s.encode() for s in entry["data"]], dtype=np.object_).reshape(entry["shape"])
    return np.array(entry["data"], dtype=entry["dtype"]).reshape(entry["shape"])


def state_from_json(raw: Mapping) -> JobState:
    """The inverse of `JobState.as_json` (the SDK reads the result model's RESULT with it)."""
    values = dict(raw)
    values["outputs"] = {n: tensor_from_json(t) for n, t in values.get("outputs", {}).items()}
    return JobState(**values)


def check_job_inputs(inputs: Mapping[str, np.ndarray], max_rows: int) -> int:
    """A job's inputs before they are queued (a bad job should fail now, not in a worker):
    1..max_rows rows, the same in every input, finite numbers, non-empty strings. Returns rows."""
    rows = None
    for name, array in inputs.items():
        if array.ndim == 0 or not 1 <= len(array) <= max_rows:
            raise InputError(name, f"expected 1 to {max_rows} rows per job, got shape {list(array.shape)}")
        if rows is not None and len(array) != rows:
            raise InputError(name, f"has {len(array)} rows, the other inputs {rows}")
        rows = len(array)
        if array.dtype == np.object_:
            empty = [i for i, v in enumerate(array.reshape(-1)) if len(v) == 0]
            if empty:
                raise InputError(name, f"element {empty[0]} is empty")
        elif array.dtype.kind == "f":
            check_finite(name, array)
    return rows or 0


IDEMPOTENCY_KEY_MAX = 200


def check_idempotency_key(key) -> str:
    """A client's idempotency key: 1 to 200 printable characters, no white space."""
    if not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable() or any(
        c.isspace() for c in key
    ):
        raise InputError("idempotency_key", f"expected 1 to {IDEMPOTENCY_KEY_MAX} printable characters without "
                                            f"white space, got {key!r:.60}", kind="request parameter")
    return key


def decide(deliveries: int, max_attempts: int, retryable: bool) -> str:
    """After a failed attempt: "retry" (left pending, reclaimed after the idle timeout) or
    "dead" (failed for good: the dead-letter stream)."""
    return "retry" if retryable and deliveries < max_attempts else "dead"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ScriptBatch:
    """Lua script calls sent in one pipelined round trip (EVALSHA; redis-py's own script
    pipelining asks SCRIPT EXISTS first: a second round trip every time). When Redis has lost
    the scripts (a restart), they are loaded and the calls sent again: none of them ran."""

    def __init__(self, client: redis.Redis, scripts: tuple):
        self.client, self.scripts, self.calls = client, scripts, []

    def script(self, script, keys: list, args: list) -> None:
        self.calls.append((script.sha, keys, args))

    def execute(self) -> list:
        if not self.calls:
            return []
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for sha, keys, args in self.calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                for script in self.scripts:
                    self.client.script_load(script.script)
        raise AssertionError("unreachable")


class JobQueue:
    """The job store and queue under one namespace, over one `redis.Redis`."""

    def __init__(self, client: redis.Redis, namespace: str = "async", ttl_seconds: int = 3600):
        self.redis = client
        self.namespace = namespace
        self.ttl = int(ttl_seconds)
        self.stream = f"{namespace}:jobs"
        self.dead = f"{namespace}:dead"
        self._submit = client.register_script(_SUBMIT)
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)

    def key(self, job_id: str) -> str:
        """The job's hash, and the pub/sub channel that announces its end."""
        return f"{self.namespace}:job:{job_id}"

    channel = key

    # -- producer side (the submit backend)

    def ensure_group(self) -> None:
        """The consumer group, from the stream's start (so jobs added before it are not missed)."""
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def submit(self, model: str, version: int, inputs: Mapping[str, np.ndarray], submitted_by: str = "") -> str:
        """One job queued (state `queued` and its stream entry); returns its id.
        `submitted_by`: the model that queued it (the SDK takes class names from its config)."""
        return self.submit_many([Submission(model, version, inputs, submitted_by)])[0].job_id

    def submit_many(self, jobs: Iterable[Submission]) -> list[Submitted | InputError]:
        """Jobs queued in one pipelined round trip, each atomically (one script: the key, the
        state, the entry). Per job: its Submitted, or an InputError when its idempotency key
        was used for a different request."""
        jobs = list(jobs)
        pipe = self.pipeline()
        fingerprints = []
        for job in jobs:
            job_id = new_job_id()
            rows = request_batch_size(job.inputs)
            keys = [self.key(job_id), self.stream]
            fingerprint = ""
            if job.idempotency_key:
                keys.append(f"{self.namespace}:idem:{job.submitted_by}:{job.idempotency_key}")
                fingerprint = cache_key("", job.model, job.version, job.inputs).rsplit(":", 1)[-1]
            fingerprints.append((job_id, fingerprint))
            pipe.script(self._submit, keys, [self.ttl, f"{job_id} {fingerprint}", job_id, job.model, job.version,
                                             job.submitted_by, rows, repr(time.time()), encode_outputs(job.inputs)])
        answers = []
        for job, (job_id, fingerprint), first in zip(jobs, fingerprints, pipe.execute(), strict=True):
            if not first:
                answers.append(Submitted(job_id))
                continue
            first_id, _, first_fingerprint = _text(first).partition(" ")
            if first_fingerprint != fingerprint:
                answers.append(InputError("idempotency_key", f"{job.idempotency_key!r} was used for another "
                                                             f"request (job {first_id})", kind="request parameter"))
            else:
                answers.append(Submitted(first_id, created=False))
        return answers

    # -- reading states (the result backend, the SDK, tests)

    def state(self, job_id: str) -> JobState | None:
        return self._decode(job_id, self.redis.hgetall(self.key(job_id)))

    def states(self, job_ids: list[str]) -> list[JobState | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.key(job_id))
        return [self._decode(j, raw) for j, raw in zip(job_ids, pipe.execute(), strict=True)]

    @staticmethod
    def _decode(job_id: str, raw: Mapping) -> JobState | None:
        if not raw:
            return None
        h = {_text(k): v for k, v in raw.items()}
        get = lambda name, default="": _text(h[name]) if name in h else default  # noqa: E731
        return JobState(
            job_id=job_id,
            status=get("status"),
            model=get("model"),
            submitted_by=get("submitted_by"),
            requested_version=int(get("requested_version", "-1")),
            model_version=get("model_version"),
            attempts=int(get("attempts", "0")),
            completions=int(get("completions", "0")),
            error=get("error"),
            worker=get("worker"),
            created=float(get("created", "0")),
            batch_jobs=int(get("batch_jobs", "0")),
            timings={name: float(get(name)) for name in TIMING_FIELDS if name in h},
            outputs=decode_outputs(h["outputs"]) if "outputs" in h else {},
        )

    # -- consumer side (the workers)

    def _job(self, entry_id, fields, deliveries: int = 1) -> Job:
        f = {_text(k): v for k, v in fields.items()}
        return Job(
            entry_id=_text(entry_id),
            job_id=_text(f["job_id"]),
            model=_text(f["model"]),
            version=int(_text(f["version"])),
            inputs=decode_outputs(f["inputs"]),
            created=float(_text(f["created"])),
            deliveries=deliveries,
        )

    def check_server(self) -> None:
        """UnsupportedRedis when the Redis is too old for the scripts that start and end jobs."""
        connection = self.redis.connection_pool.connection_kwargs  # a unix socket has a path, no host
        where = connection.get("path") or f"{connection.get('host')}:{connection.get('port')}"
        check_redis_version(str(self.redis.info("server")["redis_version"]), where)

    def register(self, consumer: str) -> None:
        """Make the consumer visible in XINFO CONSUMERS before it has read anything. A Redis full
        under `noeviction` refuses that; its first read (which Redis allows) then creates it."""
        try:
            self.ensure_group()
            self.redis.xgroup_createconsumer(self.stream, GROUP, consumer)
        except redis.exceptions.OutOfMemoryError:
            pass

    def consumers(self) -> set[str]:
        """The group's consumers (workers register at start), empty before the group exists."""
        try:
            return {_text(c["name"]) for c in self.redis.xinfo_consumers(self.stream, GROUP)}
        except redis.ResponseError:
            return set()

    def forget_idle_consumers(self, names: list[str]) -> None:
        """Remove these consumers if they hold no job (a stopped worker's name stays in the group:
        a new worker of that name is then seen joining). One holding jobs is kept: they are
        reclaimed after the idle timeout."""
        try:
            found = self.redis.xinfo_consumers(self.stream, GROUP)
        except redis.ResponseError:
            return
        for consumer in found:
            if _text(consumer["name"]) in names and int(consumer["pending"]) == 0:
                self.redis.xgroup_delconsumer(self.stream, GROUP, consumer["name"])

    def read(self, consumer: str, count: int = 1, block_ms: int = 1000) -> list[Job]:
        """New jobs for this consumer (XREADGROUP >); they stay pending until `finish`."""
        try:
            reply = self.redis.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()  # the stream was deleted (e.g. FLUSHDB): start again
            return []
        return [self._job(eid, fields) for _, entries in (reply or []) for eid, fields in entries if fields]

    def reclaim(self, consumer: str, idle_ms: int, count: int = 1) -> list[Job]:
        """Jobs pending longer than `idle_ms` (their worker died, or a retry is due), taken over
        by `consumer` with XAUTOCLAIM; each with its delivery count."""
        try:
            reply = self.redis.xautoclaim(self.stream, GROUP, consumer, idle_ms, "0-0", count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        entries = [(eid, fields) for eid, fields in reply[1] if fields]
        pipe = self.redis.pipeline(transaction=False)
        for eid, _ in entries:
            pipe.xpending_range(self.stream, GROUP, eid, eid, 1)
        counts = [int(p[0]["times_delivered"]) if p else 1 for p in pipe.execute()] if entries else []
        return [self._job(eid, fields, n) for (eid, fields), n in zip(entries, counts, strict=True)]

    def deliveries(self, entry_id) -> int:
        pending = self.redis.xpending_range(self.stream, GROUP, entry_id, entry_id, 1)
        return int(pending[0]["times_delivered"]) if pending else 1

    def touch(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of jobs in hand (XCLAIM JUSTID: no delivery counted), so a job
        that takes longer than the idle timeout is not taken over while its worker is alive."""
        if entry_ids:
            self.redis.xclaim(self.stream, GROUP, consumer, 0, entry_ids, justid=True)

    def pipeline(self) -> ScriptBatch:
        """For many starts or ends in one round trip: pass it as `pipe`, then `execute()` it
        (one answer per call, in order)."""
        return ScriptBatch(self.redis, (self._submit, self._start, self._finish))

    def _script(self, script, keys: list, args: list, pipe: ScriptBatch | None) -> bool | None:
        if pipe is None:
            one = self.pipeline()
            one.script(script, keys, args)
            return bool(one.execute()[0])
        pipe.script(script, keys, args)
        return None

    def start(self, job: Job, worker: str, batch_jobs: int = 1, pipe=None) -> bool | None:
        """State `running`; False when the job already ended (a duplicate delivery).
        `batch_jobs`: how many jobs share its request to the model."""
        return self._script(self._start, [self.key(job.job_id)], [
            self.ttl, "status", RUNNING, "worker", worker, "attempts", job.deliveries,
            "started", repr(time.time()), "error", "", "batch_jobs", batch_jobs,
        ], pipe)

    def start_many(self, jobs: list[Job], worker: str) -> list[bool]:
        """`start` for jobs that go to the model in one request, in one round trip."""
        pipe = self.pipeline()
        for job in jobs:
            self.start(job, worker, len(jobs), pipe)
        return [bool(x) for x in pipe.execute()]

    def retry_later(self, job: Job, error: str, pipe=None) -> bool | None:
        """Back to `queued` with the attempt's error; the entry stays pending for a reclaim."""
        return self._script(self._start, [self.key(job.job_id)], [self.ttl, "status", QUEUED, "error", error], pipe)

    def finish(self, job: Job, fields: Mapping[str, object], dead_letter: Mapping[str, object] | None = None,
               pipe=None) -> bool | None:
        """End the job once (state, optional dead letter, notification) and acknowledge it.
        Returns False when it had already ended (nothing written, still acknowledged)."""
        flat = [x for kv in fields.items() for x in kv]
        dead = [x for kv in (dead_letter or {}).items() for x in kv]
        message = json.dumps({"job_id": job.job_id, "status": fields.get("status")})
        return self._script(self._finish, [self.key(job.job_id), self.stream, self.dead],
                            [GROUP, job.entry_id, self.ttl, message, len(flat), *flat, *dead], pipe)

    def complete(self, job: Job, outputs: Mapping[str, np.ndarray], model_version: str, timings: Mapping[str, float],
                 pipe=None) -> bool | None:
        return self.finish(job, {
            "status": DONE, "outputs": encode_outputs(outputs), "model_version": model_version,
            "error": "", "finished": repr(time.time()), **{k: round(v, 3) for k, v in timings.items()},
        }, pipe=pipe)

    def fail(self, job: Job, error: str, timings: Mapping[str, float] | None = None, attempts: int | None = None,
             pipe=None) -> bool | None:
        """State `failed` and a dead letter with the error, attempts (default: deliveries) and inputs."""
        now = time.time()
        attempts = job.deliveries if attempts is None else attempts
        return self.finish(
            job,
            {"status": FAILED, "error": error, "attempts": attempts, "finished": repr(now),
             **{k: round(v, 3) for k, v in (timings or {}).items()}},
            dead_letter={"job_id": job.job_id, "model": job.model, "version": job.version, "error": error,
                         "attempts": attempts, "failed_at": repr(now), "inputs": encode_outputs(job.inputs)},
            pipe=pipe,
        )

    def acknowledge(self, jobs: list[Job]) -> None:
        """Drop the entries of jobs that already ended (duplicate deliveries)."""
        pipe = self.redis.pipeline(transaction=True)
        for job in jobs:
            pipe.xack(self.stream, GROUP, job.entry_id)
            pipe.xdel(self.stream, job.entry_id)
        pipe.execute()

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The dead-letter stream's entries (newest last), inputs decoded."""
        letters = []
        for entry_id, fields in self.redis.xrange(self.dead, count=count):
            f = {_text(k): v for k, v in fields.items()}
            letter = {k: _text(v) for k, v in f.items() if k != "inputs"}
            letter["entry_id"] = _text(entry_id)
            letter["inputs"] = decode_outputs(f["inputs"]) if "inputs" in f else {}
            letters.append(letter)
        return letters

    def depth(self) -> dict[str, int]:
        """Queue depth: entries in the stream (waiting or pending) and pending (in some worker's
        hands or waiting for a retry), for monitoring."""
        length = self.redis.xlen(self.stream)
        try:
            pending = self.redis.xpending(self.stream, GROUP)["pending"]
        except redis.ResponseError:
            pending = 0
        return {"stream": int(length), "pending": int(pending), "dead": int(self.redis.xlen(self.dead))}


def queue_for(params: Mapping[str, Any]) -> JobQueue:
    """The queue a backend's parameters name (`spec.job_queue_parameters`, read by its spec:
    `namespace`, `ttl_seconds`, `redis_url`, `redis_timeout_ms`), its consumer group created when
    Redis is up."""
    from pattern_kernel.redis_link import connect

    queue = JobQueue(connect(params), params["namespace"], params["ttl_seconds"])
    try:
        queue.ensure_group()
    except redis.RedisError:
        pass  # Redis not up yet: the workers create the group, and submit works without it
    return queue
