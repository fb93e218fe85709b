"""End-to-end monitoring: the Grafana dashboard's and the alert rules' queries use only metric
names the fixture server exposes; the pattern backends' custom metrics count; the breaker's
prediction log holds one record per request; the drift job sees shifted inputs and not
unshifted ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from triton_patterns import cli, drift, monitoring, paths
from triton_patterns.serving import prediction_log

from export import iris

pytestmark = pytest.mark.e2e

DASHBOARD = paths.PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "triton-patterns.json"
ALERTS = paths.PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
STREAM = prediction_log.stream_name("iris_breaker")
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def _names(triton) -> set[str]:
    return {s.name for s in monitoring.scrape(triton.metrics_url)}


def test_dashboard_and_alert_queries_use_exposed_metric_names(triton, client):
    client.synchronous(VIRGINICA, version=1)  # some traffic; Triton's series exist from load
    exposed = _names(triton)
    used = monitoring.dashboard_metric_names(DASHBOARD)
    for rule in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]:
        used |= monitoring.promql_metric_names(rule["expr"])
    missing = sorted(used - exposed)
    assert not missing, f"the dashboard or alerts query metrics the server does not expose: {missing}"
    for name in ("nv_inference_request_success", "nv_inference_queue_duration_us", "nv_cache_num_hits_per_model",
                 "circuit_breaker_state", "pattern_fallbacks_total", "prediction_cache_requests_total"):
        assert name in used


def test_fallback_and_cache_metrics_count(triton, client):
    samples = monitoring.scrape(triton.metrics_url)
    fallbacks = monitoring.value(samples, "pattern_fallbacks_total", model="iris_parallel_strict") or 0
    hits = monitoring.value(samples, "data_cache_lookups_total", model="digits_by_id", result="hit") or 0
    assert client.parallel(VIRGINICA, model="iris_parallel_strict").report["fallback"] is True
    client.data_cache("digit-2")
    client.data_cache("digit-2")  # cached by the first call, or earlier ones
    samples = monitoring.scrape(triton.metrics_url)
    assert monitoring.value(samples, "pattern_fallbacks_total", model="iris_parallel_strict",
                            pattern="parallel", reason="min_answers") == fallbacks + 1
    assert monitoring.value(samples, "data_cache_lookups_total", model="digits_by_id", result="hit") >= hits + 1


def test_prediction_log_holds_one_record_per_request(client, redis_server):
    r = redis_server.client()
    r.delete(STREAM)
    rows = [[5.1, 3.5, 1.4, 0.2], VIRGINICA]
    answers = [client.circuit_breaker(row) for row in rows]
    answers += client.predict("circuit_breaker", np.array(rows, dtype=np.float32))  # one request, two rows
    records = prediction_log.read_recent(r, STREAM, 10)
    assert len(records) == 3
    for rec, sent in zip(records, ([rows[0]], [rows[1]], rows)):
        np.testing.assert_allclose(rec["inputs"]["FEATURES"], sent, rtol=1e-6)
    logged = [label[0] for rec in records for label in rec["outputs"]["LABEL"]]
    assert logged == [p.class_id for p in answers]  # what the callers got, default answers included
    assert [rec["fallback"] for rec in records] == [p.fallback for p in answers[:2]] + [answers[2].fallback]
    first = records[0]
    assert (first["model"], first["target"], first["target_version"], first["reference"]) == (
        "iris_breaker", "iris_flaky", "1", "iris:1")
    assert first["latency_ms"] > 0 and first["fallback"] is (first["reason"] != "")


def _log_rows(client, X: np.ndarray) -> None:
    for start in range(0, len(X), 50):
        client.predict("circuit_breaker", X[start:start + 50].astype(np.float32))


def _drift_cli(redis_url: str, capsys) -> tuple[int, dict]:
    code = cli.main(["drift", "iris_breaker", "--redis", redis_url, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_drift_job_reports_shifted_inputs_and_not_unshifted_ones(client, redis_server, capsys):
    if "feature_stats" not in json.loads((paths.MODEL_REPOSITORY / "iris" / "1" / "manifest.json").read_text()):
        pytest.fail("the iris manifest has no feature_stats: re-export it (make models)")
    X_train, X_test, _, _, _ = iris.load_split()
    X = np.vstack([X_train, X_test])  # the whole data set: the training distribution
    r = redis_server.client()

    r.delete(STREAM)
    _log_rows(client, X)
    report = drift.check(r, "iris_breaker")
    assert report["reference"] == "iris:1" and report["rows"] == len(X)
    assert not report["drift"], drift.format_report(report)
    assert _drift_cli(redis_server.url, capsys) == (0, report)

    r.delete(STREAM)
    shifted = X.copy()
    shifted[:, 2] += 1.5  # petal length 1.5 cm longer than anything seen in training
    _log_rows(client, shifted)
    code, report = _drift_cli(redis_server.url, capsys)
    assert code == 1 and report["drift"]
    assert [f["feature"] for f in report["features"] if f["drift"]] == ["petal length (cm)"]

    r.delete(STREAM)
    assert cli.main(["drift", "iris_breaker", "--redis", redis_server.url]) == 2  # no data: an error
    assert "fewer than" in capsys.readouterr().err
