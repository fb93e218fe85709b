"""A short headless locust run (loadtest/locustfile.py through loadtest.locust_run) against the
session tritonserver: every pattern gets requests over both protocols, with zero failures."""

from __future__ import annotations

import pytest

from loadtest import locust_run
from pattern_runtime.processes import free_port

pytestmark = pytest.mark.e2e

PATTERNS = ["synchronous", "prep_pred", "serial", "data_cache"]


def test_locust_run_reports_each_pattern_without_failures(triton, tmp_path):
    rows = locust_run.run_locust(PATTERNS, triton.http_url, triton.grpc_url, users=1, duration="4s", out=tmp_path)

    assert {(r.pattern, r.protocol) for r in rows} == {(p, proto) for p in PATTERNS for proto in ("http", "grpc")}
    assert locust_run.problems(rows, PATTERNS, "both") == []
    assert all(r.requests > 0 and r.failures == 0 and r.rps > 0 for r in rows)
    assert "synchronous" in (tmp_path / "locust.html").read_text()


def test_errors_count_as_failures(tmp_path):
    nowhere = f"127.0.0.1:{free_port()}"
    rows = locust_run.run_locust(["synchronous"], nowhere, nowhere, users=1, duration="2s", protocol="http",
                                 out=tmp_path)

    assert [(r.pattern, r.protocol) for r in rows] == [("synchronous", "http")]
    assert rows[0].requests > 0 and rows[0].failures == rows[0].requests
    assert locust_run.problems(rows, ["synchronous"], "http") == [
        f"synchronous over http: {rows[0].requests} failures of {rows[0].requests}"]
