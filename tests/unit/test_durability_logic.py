"""What needs no server for the durable queue: which Redis a backend uses, what a missing job's id
says, and the data store's atomic seeding (a store cut short is seeded again, a seed cut short
leaves the store as it was)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from pattern_kernel import redis_link
from pattern_kernel.data_store import SQLiteStore
from pattern_kernel.job_queue import job_created, missing_job, new_job_id
from pattern_kernel.spec import REDIS, BackendSpec
from pattern_runtime import seeding


def _params(url: str | None = None) -> dict:
    """The Redis parameters as a backend's spec reads them."""
    return BackendSpec("m", "", REDIS).read("m", {} if url is None else {"redis_url": url})


@pytest.mark.parametrize("env, cache, expected", [
    ({}, False, "redis://config/0"),
    ({}, True, "redis://config/0"),
    ({redis_link.REDIS_URL_ENV: "redis://queue/0"}, False, "redis://queue/0"),
    ({redis_link.REDIS_URL_ENV: "redis://queue/0"}, True, "redis://queue/0"),
    ({redis_link.REDIS_URL_ENV: "redis://queue/0", redis_link.CACHE_REDIS_URL_ENV: "redis://cache/0"}, True,
     "redis://cache/0"),
    ({redis_link.REDIS_URL_ENV: "redis://queue/0", redis_link.CACHE_REDIS_URL_ENV: "redis://cache/0"}, False,
     "redis://queue/0"),
])
def test_a_cache_uses_the_cache_redis_then_the_queue_redis_then_its_config(monkeypatch, env, cache, expected):
    for name in (redis_link.REDIS_URL_ENV, redis_link.CACHE_REDIS_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert redis_link.redis_url(_params("redis://config/0"), cache=cache) == expected
    assert redis_link.redis_url(_params(), cache=cache) == (expected if env else "redis://127.0.0.1:6379/0")


def test_a_job_id_carries_its_creation_time_and_is_unique():
    now = time.time()
    ids = {new_job_id(now) for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 for i in ids)
    assert all(abs(job_created(i) - now) < 0.002 for i in ids)
    assert job_created("nope") is None and job_created("g" * 32) is None


def test_a_missing_job_is_lost_within_its_ttl_expired_after_and_unknown_otherwise():
    now = time.time()
    young, old = new_job_id(now - 60), new_job_id(now - 7200)
    assert missing_job(young, 3600, now).startswith(f"job '{young}' was lost: created 60 s ago, within ttl_seconds")
    assert missing_job(old, 3600, now).startswith(f"no job '{old}': expired (created 7200 s ago")
    assert missing_job("no-such-job", 3600, now) == "no job 'no-such-job': unknown (not an id this queue made)"
    assert "unknown" in missing_job(new_job_id(now + 3600), 3600, now)  # from the future: not ours


@pytest.fixture
def small_seed(monkeypatch):
    """A seed of 5 records (the real data sets are the e2e tests')."""
    records = ([(f"digit-{i}", "image", b"png%d" % i) for i in range(2)]
               + [(f"text-{i}", "text", b"t") for i in range(3)])
    monkeypatch.setattr(seeding, "_seed_records", lambda digits: records)
    return records


def test_a_store_cut_short_is_seeded_again_and_a_complete_one_is_kept(tmp_path, small_seed):
    path = tmp_path / "store.sqlite"
    store = SQLiteStore(path)
    store.put("digit-0", "image", b"png0")  # what an interrupted seeder of one record at a time left
    store.put("mine", "text", b"kept")
    store.close()
    assert seeding.seeded_count(path) == 0
    assert seeding.ensure_seeded(path) == 5
    store = SQLiteStore(path)
    assert store.count() == 6 and store.get("text-2") == b"t" and store.get("mine") == b"kept"
    store._db.execute("DELETE FROM records WHERE id = 'text-2'")  # cut short by hand
    store._db.commit()
    store.close()
    assert seeding.seeded_count(path) == 0
    assert seeding.ensure_seeded(path) == 5 and SQLiteStore(path).get("text-2") == b"t"
    before = path.stat().st_mtime_ns
    assert seeding.ensure_seeded(path) == 5 and path.stat().st_mtime_ns == before  # complete: not written


def test_a_seed_cut_short_leaves_the_store_as_it_was(tmp_path, small_seed, monkeypatch):
    path = tmp_path / "store.sqlite"
    store = SQLiteStore(path)
    store.put("mine", "text", b"kept")
    store.close()

    def full_disk(self, records):
        self._db.execute("INSERT INTO records VALUES ('digit-0', 'image', x'00')")
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SQLiteStore, "put_many", full_disk)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        seeding.ensure_seeded(path)
    store = SQLiteStore(path)
    assert (store.count(), store.get("mine")) == (1, b"kept")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]  # nothing left aside
    assert seeding.seeded_count(path) == 0
