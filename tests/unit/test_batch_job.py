"""The batch job's logic on a temporary SQLite file: selection, sharding, the three retry
policies, duplicates; and its schedules (cron line, Kubernetes CronJob) against the CLI."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from pattern_jobs import batch_store as store
from pattern_jobs.batch_job import (
    BatchError,
    Target,
    latest_ready,
    parse_shard,
    run_job,
    spec_for,
)
from pattern_jobs.batch_store import Outcome
from pattern_runtime.paths import PROJECT_ROOT
from pattern_tools import cli
from triton_patterns.client import ModelInfo, Prediction

TARGET = Target("iris", "2", "iris")
BAD = [5.0, 3.0, 45.0, 1.0]  # petal length 45 cm: out of range, like iris_web_single's check


@pytest.fixture()
def engine(tmp_path):
    engine = store.connect(f"sqlite:///{tmp_path / 'batch.sqlite'}")
    store.seed(engine, "iris")
    yield engine
    engine.dispose()


class FakeModel:
    """Stands in for the server: fails a chunk that holds an out-of-range row, and the first
    `transient` calls whatever they hold; counts calls and rows."""

    def __init__(self, transient: int = 0):
        self.transient, self.calls, self.rows = transient, 0, []

    async def __call__(self, payloads):
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls <= self.transient:
            raise RuntimeError("iris: server unavailable")
        if any(p[2] > 15 for p in payloads):
            raise RuntimeError("iris: input 'FEATURES': petal_length out of range")
        self.rows.extend(payloads)
        return [
            Prediction("iris", "2", "setosa" if p[2] < 2.5 else "virginica", int(p[2] >= 2.5),
                       np.array([0.9, 0.1, 0.0] if p[2] < 2.5 else [0.0, 0.1, 0.9]), 0.0)
            for p in payloads
        ]


def job(engine, model, **options):
    options = {"progress": False, "retry_delay": 0, "chunk_size": 8, **options}
    return asyncio.run(run_job(engine, model, TARGET, **options))


def statuses(engine) -> dict[int, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(store.record_status.select()).all()
    return {r.record_id: (r.status, r.attempts) for r in rows}


def add_bad(engine, count: int = 1) -> list[int]:
    store.add_records(engine, "iris", [(f"bad-{i}", BAD, None) for i in range(count)])
    with engine.connect() as conn:
        return list(conn.scalars(store.records.select().with_only_columns(store.records.c.id)
                                 .where(store.records.c.key.like("bad-%"))))


def test_seed_is_idempotent_and_loads_the_held_out_rows(engine):
    assert store.seed(engine, "iris") == 0
    assert store.seed(engine, "iris", repeat=2) == 45
    assert store.counts(engine, "iris", "2")["records"] == 90


def test_pending_means_no_prediction_from_this_model_version(engine):
    assert len(store.pending(engine, "iris", "2", "iris")) == 45
    assert store.pending(engine, "iris", "2", "text") == []
    summary = job(engine, FakeModel())
    assert (summary.selected, summary.predicted, summary.failed) == (45, 45, 0)
    assert store.pending(engine, "iris", "2", "iris") == []
    assert len(store.pending(engine, "iris", "1", "iris")) == 45  # another version: all again
    assert job(engine, FakeModel()).selected == 0  # a second run finds nothing to do


def test_shards_are_disjoint_and_cover_every_record(engine):
    everything = {r.id for r in store.pending(engine, "iris", "2", "iris")}
    shards = [{r.id for r in store.pending(engine, "iris", "2", "iris", (i, 3))} for i in range(3)]
    assert set().union(*shards) == everything
    assert sum(map(len, shards)) == len(everything)
    for i in range(3):
        job(engine, FakeModel(), shard=(i, 3))
    assert store.counts(engine, "iris", "2")["predictions"] == 45


@pytest.mark.parametrize("text", ["1", "3/3", "-1/2", "a/b", "1/2/3"])
def test_bad_shard_specs_are_refused(text):
    with pytest.raises(BatchError):
        parse_shard(text)


def test_retry_failed_retries_only_the_failed_records_alone(engine):
    bad = add_bad(engine)
    model = FakeModel()
    summary = job(engine, model, policy="failed", max_attempts=3)
    assert (summary.selected, summary.predicted, summary.failed, summary.passes) == (46, 45, 1, 3)
    assert len(model.rows) == 45  # every good row once: its chunk-mates of the bad row on retry
    st = statuses(engine)
    assert st[bad[0]] == ("failed", 3)
    assert {s for rid, s in st.items() if rid != bad[0]} <= {("done", 1), ("done", 2)}
    assert summary.errors and "out of range" in summary.errors[0]


def test_retry_failed_recovers_from_a_transient_failure(engine):
    summary = job(engine, FakeModel(transient=2), policy="failed", concurrency=1)
    assert (summary.predicted, summary.failed, summary.passes) == (45, 0, 2)
    assert sorted(st for st, _ in statuses(engine).values()) == ["done"] * 45


def test_retry_none_leaves_the_failed_chunk_for_the_next_run(engine):
    add_bad(engine)
    summary = job(engine, FakeModel(), policy="none", max_attempts=5)
    assert summary.passes == 1
    assert summary.failed == 6  # the bad row's chunk: 46 rows in chunks of 8, the last holds 6
    left = store.pending(engine, "iris", "2", "iris")
    assert len(left) == summary.failed
    assert {statuses(engine)[r.id] for r in left} == {("failed", 1)}
    again = job(engine, FakeModel(), policy="none", chunk_size=1)
    assert (again.selected, again.predicted, again.failed) == (6, 5, 1)


def test_retry_all_commits_nothing_while_any_record_fails(engine):
    bad = add_bad(engine)
    summary = job(engine, FakeModel(), policy="all", max_attempts=2)
    assert (summary.predicted, summary.failed, summary.passes) == (0, 46, 2)
    assert store.counts(engine, "iris", "2")["predictions"] == 0
    failed = statuses(engine)  # the failed chunk's records, each tried twice
    assert bad[0] in failed and len(failed) == 6 and set(failed.values()) == {("failed", 2)}


def test_retry_all_reruns_the_whole_set_after_a_failure(engine):
    model = FakeModel(transient=1)
    summary = job(engine, model, policy="all", concurrency=1)
    assert (summary.predicted, summary.failed, summary.passes) == (45, 0, 2)
    assert len(model.rows) == 45 - 8 + 45  # pass 1's good chunks were discarded and sent again


def test_a_record_predicted_elsewhere_is_not_written_twice(engine):
    rid = store.pending(engine, "iris", "2", "iris")[0].id
    outcome = Outcome(rid, "setosa", 0, (1.0, 0.0, 0.0))
    assert store.save(engine, "iris", "2", "run-a", [outcome]) == 0
    assert store.save(engine, "iris", "2", "run-b", [outcome]) == 1
    assert store.counts(engine, "iris", "2")["predictions"] == 1


def test_latest_ready_version_and_the_pattern_for_a_model():
    index = [ModelInfo("iris", "1", "READY"), ModelInfo("iris", "2", "READY"), ModelInfo("iris", "3", "UNAVAILABLE"),
             ModelInfo("text_classify", "1", "READY")]
    assert latest_ready(index, "iris") == "2"
    assert latest_ready(index, "iris", "1") == "1"
    with pytest.raises(BatchError, match="not ready"):
        latest_ready(index, "iris", "3")
    with pytest.raises(BatchError, match="no ready version"):
        latest_ready(index, "iris_failing")
    assert spec_for("iris", False).name == "synchronous"
    assert spec_for("text_classify", True).name == "serial"
    failing = spec_for("iris_failing", False)
    assert (failing.name, failing.model) == ("synchronous", "iris_failing")
    with pytest.raises(BatchError):
        spec_for("digits", True)


# -- schedules: the cron line and the Kubernetes CronJob run the same CLI command

DEPLOY = PROJECT_ROOT / "deploy"


def cron_command() -> list[str]:
    lines = [line for line in (DEPLOY / "cron" / "batch.cron").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1
    tokens = shlex.split(lines[0])
    assert len(tokens[:5]) == 5 and all(t[0] in "0123456789*" for t in tokens[:5])  # five time fields
    program = max(i for i, t in enumerate(tokens) if t.endswith("bin/triton-patterns"))
    end = next((i for i, t in enumerate(tokens) if t.startswith(">")), len(tokens))
    return tokens[program + 1:end]


def cronjob() -> dict:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "batch-cronjob.yaml").read_text()) if d]
    [job] = [d for d in docs if d["kind"] == "CronJob"]
    return job


def test_cronjob_is_an_indexed_job_whose_indexes_are_the_shards():
    job = cronjob()
    assert job["apiVersion"] == "batch/v1"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    spec = job["spec"]["jobTemplate"]["spec"]
    assert spec["completionMode"] == "Indexed"
    [container] = spec["template"]["spec"]["containers"]
    assert container["command"] == ["triton-patterns"]
    shards = []
    for index in range(spec["completions"]):
        argv = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in container["args"]]
        args = cli.parser().parse_args(argv)
        assert (args.command, args.action) == ("batch", "run")
        shards.append(parse_shard(args.shard))
    assert shards == [(i, spec["completions"]) for i in range(spec["completions"])]
    assert spec["parallelism"] == spec["completions"]


def test_cron_line_runs_the_cronjobs_command_without_the_shard():
    args = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    at = args.index("--shard")
    assert cron_command() == args[:at] + args[at + 2:]
    parsed = cli.parser().parse_args(cron_command())
    assert (parsed.command, parsed.action, parsed.shard) == ("batch", "run", "0/1")


def test_schedules_take_the_database_from_the_environment():
    env = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "TRITON_PATTERNS_BATCH_DB" in {e["name"] for e in env}
    assert any(line.startswith("TRITON_PATTERNS_BATCH_DB=")
               for line in Path(DEPLOY / "cron" / "batch.cron").read_text().splitlines())
