"""Unit tests of monitoring: training feature statistics and drift (PSI, z-score) on the iris
data, the iris manifest's feature_stats, Prometheus text parsing, and the metric names of PromQL
expressions and of the Grafana dashboard."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from export import iris
from export.__main__ import run
from pattern_jobs import drift, feature_stats
from pattern_runtime import paths
from pattern_tools import monitoring

DASHBOARD = paths.PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "triton-patterns.json"
PROMETHEUS = paths.PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"


@pytest.fixture(scope="module")
def iris_data():
    X_train, X_test, _, _, names = iris.load_split()
    return feature_stats.training_stats(X_train, names, bins=5), X_train, X_test


def test_training_stats_bins_cover_the_training_data(iris_data):
    stats, X_train, _ = iris_data
    assert stats["rows"] == len(X_train) and len(stats["features"]) == 4
    for i, f in enumerate(stats["features"]):
        assert sum(f["fractions"]) == pytest.approx(1.0, abs=1e-5)
        assert len(f["fractions"]) == len(f["edges"]) + 1
        assert f["mean"] == pytest.approx(X_train[:, i].mean(), abs=1e-5)


def test_unshifted_inputs_show_no_drift_and_shifted_ones_do(iris_data):
    stats, X_train, X_test = iris_data
    same = feature_stats.compare(stats, np.vstack([X_train, X_test]))
    assert not same["drift"], same
    assert max(f["psi"] for f in same["features"]) < 0.1
    shifted = np.vstack([X_train, X_test]).copy()
    shifted[:, 2] += 1.5  # petal length 1.5 cm longer
    report = feature_stats.compare(stats, shifted)
    assert report["drift"]
    flagged = [f["feature"] for f in report["features"] if f["drift"]]
    assert flagged == ["petal length (cm)"], report
    assert report["features"][2]["psi"] > 0.25 and report["features"][2]["z"] > 5


def test_compare_checks_feature_count(iris_data):
    with pytest.raises(ValueError, match="3 features"):
        feature_stats.compare(iris_data[0], np.zeros((10, 3)))


def test_iris_manifest_records_feature_stats(tmp_path):
    run([s for s in iris.specs(tmp_path) if s.name == "iris"], tmp_path)
    for version in (1, 2):
        m = json.loads((tmp_path / "iris" / str(version) / "manifest.json").read_text())
        assert [f["name"] for f in m["feature_stats"]["features"]] == list(iris.load_split()[4])
    stats = drift.reference_stats("iris:1", tmp_path)
    assert stats["bins"] == 5
    with pytest.raises(drift.DriftError, match="no manifest"):
        drift.reference_stats("iris:7", tmp_path)


def test_recent_features_skips_summaries():
    records = [{"inputs": {"FEATURES": [[1, 2, 3, 4], [5, 6, 7, 8]]}},
               {"inputs": {"FEATURES": {"shape": [1, 512], "mean": 0.0}}},
               {"inputs": {"FEATURES": [[0, 0, 0, 0]]}}]
    assert drift.recent_features(records).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]]


def test_parse_prometheus_text_and_sum_by_labels():
    text = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="iris",version="1"} 12
nv_inference_request_success{model="iris",version="2"} 3
circuit_breaker_state{instance="iris_breaker_0_0",model="iris_breaker",target="iris_flaky"} 2
weird{msg="a \\"quoted\\" value"} 1.5e3
"""
    samples = monitoring.parse(text)
    assert monitoring.value(samples, "nv_inference_request_success") == 15
    assert monitoring.value(samples, "nv_inference_request_success", version="2") == 3
    assert monitoring.value(samples, "circuit_breaker_state", model="iris_breaker") == 2
    assert monitoring.value(samples, "missing") is None
    assert samples[-1].labels == {"msg": 'a "quoted" value'} and samples[-1].value == 1500


def test_promql_metric_names():
    expr = ('sum by (model, version) (rate(nv_inference_queue_duration_us{model=~"$model"}[$__rate_interval])) '
            '/ on(model, version) sum by (model, version) (rate(nv_inference_request_success[5m])) * 1e-3')
    assert monitoring.promql_metric_names(expr) == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert monitoring.promql_metric_names('max without (instance) (circuit_breaker_state) > bool 1') == {
        "circuit_breaker_state"}
    q = 'histogram_quantile(0.9, sum by (le) (rate(x_bucket{a="b"}[1m]))) or vector(0)'
    assert monitoring.promql_metric_names(q) == {"x_bucket"}


def test_dashboard_and_scrape_config_parse():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = monitoring.dashboard_queries(dashboard)
    assert len(queries) >= 10
    names = monitoring.dashboard_metric_names(DASHBOARD)
    for expected in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_queue_duration_us",
                     "nv_cache_num_hits_per_model", "pattern_fallbacks_total", "circuit_breaker_state",
                     "prediction_cache_requests_total"):
        assert expected in names
    panel_ids = [p["id"] for p in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    config = yaml.safe_load(PROMETHEUS.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "triton")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert all(t.endswith(":8002") for c in job["static_configs"] for t in c["targets"])
