"""End-to-end: the batch job over a SQLite store against the real tritonserver: every row's
prediction equals in-process onnxruntime's, a job SIGKILLed half-way resumes without duplicates
or losses, parallel shards split the work, and the retry policies behave as named on real
failures (an out-of-range record rejected by `iris_web_single`, the `iris_failing` model)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
from sqlalchemy import func, select

from pattern_jobs import batch_store as store
from pattern_jobs.batch_job import run
from pattern_runtime.datasets.iris import LABELS
from pattern_runtime.paths import MODEL_REPOSITORY

pytestmark = pytest.mark.e2e

BAD = [5.0, 3.0, 45.0, 1.0]  # petal length 45 cm: iris_web_single answers INVALID_ARG


@pytest.fixture()
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'batch.sqlite'}"
    engine = store.connect(url)
    store.seed(engine, "iris")
    yield url, engine
    engine.dispose()


def job(triton, url, model="iris", **options):
    options = {"progress": False, "retry_delay": 0, **options}
    return asyncio.run(run(triton.grpc_url, url, model, **options))


def predictions(engine, model, version) -> dict[int, tuple]:
    query = (
        select(store.records.c.id, store.records.c.payload, store.predictions.c.label,
               store.predictions.c.class_id, store.predictions.c.scores)
        .join(store.predictions, store.predictions.c.record_id == store.records.c.id)
        .where(store.predictions.c.model == model, store.predictions.c.model_version == version)
    )
    with engine.connect() as conn:
        return {row.id: tuple(row[1:]) for row in conn.execute(query)}


def statuses(engine, model) -> dict[int, tuple[str, int, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(store.record_status).where(store.record_status.c.model == model))
        return {r.record_id: (r.status, r.attempts, r.error) for r in rows}


def duplicated(engine) -> int:
    key = (store.predictions.c.record_id, store.predictions.c.model, store.predictions.c.model_version)
    query = select(*key).group_by(*key).having(func.count() > 1)
    with engine.connect() as conn:
        return len(conn.execute(query).all())


def add_bad(engine) -> int:
    store.add_records(engine, "iris", [("bad-0", BAD, None)])
    with engine.connect() as conn:
        return conn.scalar(select(store.records.c.id).where(store.records.c.key == "bad-0"))


@pytest.mark.parametrize("version", [None, "1"])
def test_every_row_gets_the_in_process_onnxruntime_prediction(triton, db, version):
    url, engine = db
    summary = job(triton, url, version=version, chunk_size=16, concurrency=3)
    expected_version = version or "2"  # the latest ready version when none is given
    assert (summary.version, summary.selected, summary.predicted, summary.failed) == (expected_version, 45, 45, 0)
    rows = predictions(engine, "iris", expected_version)
    ids = sorted(rows)
    features = np.array([rows[i][0] for i in ids], dtype=np.float32)
    session = ort.InferenceSession(str(MODEL_REPOSITORY / "iris" / expected_version / "model.onnx"))
    class_ids, probabilities = session.run(["LABEL", "PROBABILITIES"], {"FEATURES": features})
    assert [rows[i][2] for i in ids] == [int(c) for c in class_ids]
    assert [rows[i][1] for i in ids] == [LABELS[int(c)] for c in class_ids]
    np.testing.assert_allclose(np.array([rows[i][3] for i in ids]), probabilities, atol=1e-6)
    assert job(triton, url, version=version).selected == 0  # nothing new: a second run does nothing


def test_text_records_through_the_text_pipeline(triton, tmp_path):
    url = f"sqlite:///{tmp_path / 'text.sqlite'}"
    engine = store.connect(url)
    store.seed(engine, "text")
    summary = job(triton, url, "text_classify", limit=48)  # chunks capped at its max_batch_size 16
    assert (summary.selected, summary.predicted, summary.failed_requests) == (48, 48, 0)
    with engine.connect() as conn:
        rows = conn.execute(
            select(store.records.c.truth, store.predictions.c.label)
            .join(store.predictions, store.predictions.c.record_id == store.records.c.id)
        ).all()
    assert np.mean([truth == label for truth, label in rows]) >= 0.85


def cli(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pattern_tools.cli", "batch", "run", "--db", url, *args, "--no-progress", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_a_job_killed_half_way_resumes_without_duplicates_or_losses(triton, db):
    url, engine = db
    total = 45 + store.seed(engine, "iris", repeat=100)
    proc = cli(url, "--url", triton.grpc_url, "--chunk-size", "4", "--concurrency", "1")
    deadline = time.monotonic() + 60
    while len(predictions(engine, "iris", "2")) < 200:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    written = len(predictions(engine, "iris", "2"))
    assert proc.returncode == -signal.SIGKILL and 200 <= written < total
    resumed = cli(url, "--url", triton.grpc_url)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert f'"selected": {total - written}' in out
    assert len(predictions(engine, "iris", "2")) == total and duplicated(engine) == 0
    assert {s for s, _, _ in statuses(engine, "iris").values()} == {"done"}


def test_parallel_shards_split_the_records_without_overlap(triton, db):
    url, engine = db
    total = 45 + store.seed(engine, "iris", repeat=20)
    shards = [cli(url, "--url", triton.grpc_url, "--shard", f"{i}/2", "--chunk-size", "8") for i in range(2)]
    outs = [p.communicate(timeout=60) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], outs
    selected = [int(out.split('"selected": ')[1].split(",")[0]) for out, _ in outs]
    assert sum(selected) == total and min(selected) > 0
    assert len(predictions(engine, "iris", "2")) == total and duplicated(engine) == 0


def test_retry_failed_retries_only_the_failed_records(triton, db):
    url, engine = db
    bad = add_bad(engine)
    summary = job(triton, url, "iris_web_single", policy="failed", max_attempts=3, chunk_size=8)
    assert (summary.selected, summary.predicted, summary.failed, summary.passes) == (46, 45, 1, 3)
    status = statuses(engine, "iris_web_single")
    assert status[bad][:2] == ("failed", 3) and "petal_length" in status[bad][2]
    # the bad record's chunk-mates failed once with it, then passed alone on the retry
    assert sorted(a for s, a, _ in status.values() if s == "done") == [1] * 40 + [2] * 5
    assert bad not in predictions(engine, "iris_web_single", "1")


def test_retry_none_leaves_failures_for_the_next_run(triton, db):
    url, engine = db
    bad = add_bad(engine)
    summary = job(triton, url, "iris_web_single", policy="none", max_attempts=3, chunk_size=8)
    assert (summary.predicted, summary.failed, summary.passes) == (40, 6, 1)  # the last chunk of 6 failed
    left = statuses(engine, "iris_web_single")
    assert sorted(rid for rid, (s, a, _) in left.items() if s == "failed" and a == 1) == list(range(41, 47))
    nxt = job(triton, url, "iris_web_single", policy="none", chunk_size=1)
    assert (nxt.selected, nxt.predicted, nxt.failed) == (6, 5, 1)
    assert statuses(engine, "iris_web_single")[bad][:2] == ("failed", 2)


def test_retry_all_commits_the_set_only_when_every_record_succeeds(triton, db):
    url, engine = db
    bad = add_bad(engine)
    summary = job(triton, url, "iris_web_single", policy="all", max_attempts=2, chunk_size=8)
    assert (summary.predicted, summary.failed, summary.passes) == (0, 46, 2)
    assert predictions(engine, "iris_web_single", "1") == {}  # 40 good rows per pass, discarded
    with engine.begin() as conn:
        conn.execute(store.record_status.delete().where(store.record_status.c.record_id == bad))
        conn.execute(store.records.delete().where(store.records.c.id == bad))
    again = job(triton, url, "iris_web_single", policy="all", chunk_size=8)
    assert (again.selected, again.predicted, again.passes) == (45, 45, 1)


@pytest.mark.parametrize("policy, passes", [("all", 2), ("failed", 2), ("none", 1)])
def test_a_failing_model_fails_every_record_under_each_policy(triton, db, policy, passes):
    url, engine = db
    summary = job(triton, url, "iris_failing", policy=policy, max_attempts=2, chunk_size=16)
    assert (summary.version, summary.predicted, summary.failed, summary.passes) == ("1", 0, 45, passes)
    assert "injected failure" in summary.errors[0]
    assert predictions(engine, "iris_failing", "1") == {}
    assert {(s, a) for s, a, _ in statuses(engine, "iris_failing").values()} == {("failed", passes)}


def test_the_benchmark_measures_both_rates(triton):
    from loadtest.batch_bench import measure

    result = measure(triton.grpc_url, rows=450, chunk_size=32, concurrency=2)
    assert result.rows == 450 and result.version == "2"
    assert result.triton_rows_per_s > 0 and result.onnxruntime_rows_per_s > 0 and result.ratio > 0
