"""A ~20 s soak (loadtest.soak.run_soak) against the session tritonserver and Redis: the report files
are written, every pattern got requests without failures, and the memory of tritonserver, Redis
and every Python stub was sampled. No performance assertion."""

from __future__ import annotations

import csv
import json

import pytest

from loadtest import soak

pytestmark = pytest.mark.e2e

PATTERNS = ["synchronous", "serial", "prediction_cache", "circuit_breaker"]


def test_quick_soak_writes_its_report(triton, redis_server, tmp_path):
    report = soak.run_soak(PATTERNS, triton, redis_server, users=1, duration="20s", interval=2, warmup=4,
                           window=10, out=tmp_path)

    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust.html", "memory.csv", "soak.json",
                 "soak.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "soak.json").read_text()) == json.loads(json.dumps(report))
    rows = {(r["pattern"], r["protocol"]): r for r in report["patterns"]}
    assert set(rows) == {(p, proto) for p in PATTERNS for proto in ("http", "grpc")} | {("overall", "all")}
    assert all(r["requests"] > 0 and r["failures"] == 0 for r in rows.values()), rows
    assert all(r["windows"] and sum(w["requests"] for w in r["windows"]) == r["requests"] for r in rows.values())

    with (tmp_path / "memory.csv").open() as f:
        sampled = {(r["process"], int(r["pid"])) for r in csv.DictReader(f)}
    expected = {("tritonserver", triton.pid), ("redis-server", redis_server.pid)}
    expected |= {(f"stub {model}", pid) for model, pids in triton.stub_pids().items() for pid in pids}
    assert expected <= sampled
    assert all(m["samples"] >= 5 for m in report["processes"] if (m["process"], m["pid"]) in expected)
    assert report["problems"] == []
