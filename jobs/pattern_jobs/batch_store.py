"""The batch job's store: records to predict and their predictions, in any SQLAlchemy database
(SQLite by default; PostgreSQL and the others SQLAlchemy speaks work unchanged).

Three tables, created on first use:
  records        id, key (unique), kind ("iris" | "text"), payload (JSON: features or a text),
                 truth (the known label, if any), created_at
  predictions    one row per (record, model, model_version), a unique constraint: label,
                 class id, scores, the run that wrote it and when
  record_status  the job's bookkeeping per (record, model, model_version): "done" or
                 "failed", attempts so far, the last error, when
A record's prediction and its status are written in one transaction, so a job killed at any
point leaves every record either predicted and done, or unpredicted and picked by the next run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

KINDS = ("iris", "text")

metadata = MetaData()

records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False, index=True),
    Column("payload", JSON, nullable=False),
    Column("truth", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("record_id", ForeignKey("records.id"), nullable=False),
    Column("model", String(128), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("label", String(64), nullable=False),
    Column("class_id", Integer, nullable=False),
    Column("scores", JSON, nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("predicted_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("record_id", "model", "model_version", name="one_prediction_per_version"),
)

record_status = Table(
    "record_status",
    metadata,
    Column("record_id", ForeignKey("records.id"), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("model_version", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Record:
    id: int
    payload: Any


@dataclass(frozen=True)
class Outcome:
    """What one attempt at one record gave: a prediction (label, class id, scores) or an error."""

    record_id: int
    label: str = ""
    class_id: int = -1
    scores: tuple[float, ...] = ()
    error: str | None = None


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _sqlite_wal(dbapi_connection, _record) -> None:
    """Write-ahead log: readers do not block the writer (parallel shards may share one file)."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def connect(url: str) -> Engine:
    """An engine on `url` with the tables created. SQLite waits up to 30 s for another job's lock."""
    options = {}
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": 30}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_wal)
    metadata.create_all(engine)
    return engine


def add_records(engine: Engine, kind: str, items: Iterable[tuple[str, Any, str | None]]) -> int:
    """Insert (key, payload, truth) records whose key is new; returns how many were added."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    items = list(items)
    with engine.begin() as conn:
        known = set(conn.scalars(select(records.c.key).where(records.c.key.in_([k for k, _, _ in items]))))
        rows = [
            {"key": key, "kind": kind, "payload": payload, "truth": truth, "created_at": now()}
            for key, payload, truth in items
            if key not in known
        ]
        if rows:
            conn.execute(insert(records), rows)
    return len(rows)


def seed(engine: Engine, kind: str = "iris", repeat: int = 1) -> int:
    """Load the held-out iris rows (`pattern_runtime.datasets.iris.load_split`, 45 rows) or the generated text set
    (`pattern_runtime.datasets.text`, 800 texts), `repeat` times under distinct keys; idempotent per key."""
    if kind == "iris":
        from pattern_runtime.datasets.iris import LABELS, load_split

        _, x_test, _, y_test, _ = load_split()
        base = [([float(v) for v in x], LABELS[int(y)]) for x, y in zip(x_test, y_test, strict=True)]
    else:
        from pattern_runtime.datasets.text import generate_text_dataset

        base = list(generate_text_dataset())
    items = [(f"{kind}-{i}-r{r}", payload, truth) for r in range(repeat) for i, (payload, truth) in enumerate(base)]
    return add_records(engine, kind, items)


def _predicted(model: str, version: str):
    return exists().where(
        predictions.c.record_id == records.c.id,
        predictions.c.model == model,
        predictions.c.model_version == version,
    )


def pending(
    engine: Engine, model: str, version: str, kind: str, shard: tuple[int, int] = (0, 1), limit: int | None = None
) -> list[Record]:
    """The shard's records of `kind` without a prediction from model+version, in id order.
    Shard i of n holds the ids with id % n == i: disjoint, and together all of them."""
    index, count = shard
    query = (
        select(records.c.id, records.c.payload)
        .where(records.c.kind == kind, ~_predicted(model, version), records.c.id % count == index)
        .order_by(records.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [Record(row.id, row.payload) for row in conn.execute(query)]


def _write(conn, model: str, version: str, run_id: str, outcomes: Sequence[Outcome]) -> None:
    ids = [o.record_id for o in outcomes]
    key = (record_status.c.model == model) & (record_status.c.model_version == version)
    attempts = dict(
        conn.execute(
            select(record_status.c.record_id, record_status.c.attempts).where(key, record_status.c.record_id.in_(ids))
        ).all()
    )
    at = now()
    done = [o for o in outcomes if o.error is None]
    if done:
        conn.execute(insert(predictions), [
            {"record_id": o.record_id, "model": model, "model_version": version, "label": o.label,
             "class_id": o.class_id, "scores": list(o.scores), "run_id": run_id, "predicted_at": at}
            for o in done
        ])
    statuses = [
        {"rid": o.record_id, "status": "done" if o.error is None else "failed",
         "attempts": attempts.get(o.record_id, 0) + 1, "error": o.error, "updated_at": at}
        for o in outcomes
    ]
    old = [s for s in statuses if s["rid"] in attempts]
    if old:
        conn.execute(
            update(record_status)
            .where(key, record_status.c.record_id == bindparam("rid"))
            .values(status=bindparam("status"), attempts=bindparam("attempts"), error=bindparam("error"),
                    updated_at=bindparam("updated_at")),
            old,
        )
    new = [s for s in statuses if s["rid"] not in attempts]
    if new:
        conn.execute(insert(record_status), [
            {"record_id": s["rid"], "model": model, "model_version": version,
             **{k: s[k] for k in ("status", "attempts", "error", "updated_at")}}
            for s in new
        ])


def save(engine: Engine, model: str, version: str, run_id: str, outcomes: Sequence[Outcome]) -> int:
    """Write the outcomes' predictions and statuses in one transaction; returns how many records
    another job had predicted meanwhile (then each record goes in its own transaction, and a
    record that violates the unique constraint is skipped)."""
    if not outcomes:
        return 0
    try:
        with engine.begin() as conn:
            _write(conn, model, version, run_id, outcomes)
        return 0
    except IntegrityError:
        duplicates = 0
        for outcome in outcomes:
            try:
                with engine.begin() as conn:
                    _write(conn, model, version, run_id, [outcome])
            except IntegrityError:
                duplicates += 1
        return duplicates


def counts(engine: Engine, model: str, version: str) -> dict[str, int]:
    """Records, predictions of model+version, and statuses by value."""
    with engine.connect() as conn:
        result = {
            "records": conn.scalar(select(func.count()).select_from(records)),
            "predictions": conn.scalar(
                select(func.count()).where(predictions.c.model == model, predictions.c.model_version == version)
            ),
        }
        by_status = conn.execute(
            select(record_status.c.status, func.count())
            .where(record_status.c.model == model, record_status.c.model_version == version)
            .group_by(record_status.c.status)
        )
        result.update({status: n for status, n in by_status})
    return result
