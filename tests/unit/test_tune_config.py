"""`tune`'s pure parts: which models a model needs (repo_check's reference graph), the temporary
repository of one model, model-analyzer's config per model kind, the best config taken from its
results; and `serve` opening the admin APIs on a loopback address only."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

from pattern_runtime import gateway, paths, service
from pattern_runtime.server_settings import ServerSettings
from pattern_tools import tune
from pattern_tools.repo_check import check_repository


@pytest.fixture(scope="module")
def report():
    return check_repository(paths.MODEL_REPOSITORY, backends=None, files=False)


@pytest.mark.parametrize("model, needed", [
    ("iris", []),
    ("digits", ["digits_classifier", "digits_preprocess"]),
    ("digits_bls", ["digits_classifier", "digits_preprocess"]),
    ("iris_cascade", ["iris"]),
    ("text_classify", ["text_classifier", "text_encoder", "text_tokenizer"]),
    ("iris_vote", ["iris", "iris_vote_aggregate"]),
])
def test_dependencies_follow_ensemble_steps_and_bls_parameters(report, model, needed):
    assert report.dependencies(model) == needed


@pytest.mark.parametrize("model, kind", [("iris", "plain"), ("digits", "ensemble"), ("iris_cascade", "bls"),
                                         ("text_classify_bls", "bls"), ("iris_web_single", "plain")])
def test_model_kind(report, model, kind):
    assert tune.model_kind(report.models[model], report.dependencies(model)) == kind


def test_tune_repository_holds_the_model_and_what_it_calls(tmp_path):
    spec, needed = tune.tune_repository(paths.MODEL_REPOSITORY, "digits", tmp_path / "repo")
    assert spec.name == "digits" and needed == ["digits_classifier", "digits_preprocess"]
    entries = sorted(p.name for p in (tmp_path / "repo").iterdir())
    assert entries == ["digits", "digits_classifier", "digits_preprocess"]
    assert (tmp_path / "repo" / "digits").resolve() == (paths.MODEL_REPOSITORY / "digits").resolve()


def test_tune_repository_names_an_unknown_model(tmp_path):
    with pytest.raises(tune.TuneError, match="'nope' is not in"):
        tune.tune_repository(paths.MODEL_REPOSITORY, "nope", tmp_path / "repo")


SERVER = SimpleNamespace(model_repository="/r", http_url="127.0.0.1:1", grpc_url="127.0.0.1:2",
                         metrics_url="http://127.0.0.1:3/metrics")


def _config(kind, composing=(), **kw):
    return tune.analyzer_config("m", kind, list(composing), SERVER, tune.Path("/out"), tune.Path("/in.json"),
                                [1, 4], 500, **kw)


def test_plain_model_measures_its_served_config_unless_searched():
    config = _config("plain")
    assert config["run_config_search_disable"] is True and config["concurrency"] == [1, 4]
    assert config["profile_models"] == {"m": {"cpu_only": True}}
    assert config["triton_launch_mode"] == "remote" and config["perf_analyzer_flags"]["input-data"] == "/in.json"
    assert "bls_composing_models" not in config and "cpu_only_composing_models" not in config
    assert "run_config_search_disable" not in _config("plain", search=True)


def test_ensemble_and_bls_search_is_bounded_and_composing_models_are_cpu_only():
    ensemble = _config("ensemble", ["a", "b"], max_instances=1, max_batch_size=2)
    assert ensemble["cpu_only_composing_models"] == ["a", "b"] and "bls_composing_models" not in ensemble
    assert (ensemble["run_config_search_min_concurrency"], ensemble["run_config_search_max_concurrency"]) == (1, 4)
    assert ensemble["run_config_search_max_instance_count"] == 1
    assert ensemble["run_config_search_max_model_batch_size"] == 2
    assert ensemble["concurrency_sweep_disable"] is True
    bls = _config("bls", ["a"])
    assert bls["bls_composing_models"] == ["a"] and bls["cpu_only_composing_models"] == ["a"]


def test_best_config_is_the_highest_throughput_and_its_composing_configs(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    rows = [("digits_config_0: p_config_0, c_config_0", "900.5", "Yes"),
            ("digits_config_1: p_config_1, c_config_0", "1200", "Yes"),
            ("digits_config_default: p_config_default, c_config_default", "3000", "No")]  # over the budget
    with (results / "metrics-model-inference.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Model", "Model Config Path", "Satisfies Constraints", "Throughput (infer/sec)"])
        writer.writerows([["digits", path, ok, rate] for path, rate, ok in rows])
    for variant, name in (("digits_config_1", "digits"), ("p_config_1", "p"), ("c_config_0", "c")):
        (tmp_path / "output_model_repository" / variant).mkdir(parents=True)
        (tmp_path / "output_model_repository" / variant / "config.pbtxt").write_text(f'name: "{name}"\n# {variant}\n')
    measurements = tune.read_measurements(tmp_path)
    assert [m["Throughput (infer/sec)"] for m in measurements] == ["1200", "900.5", "3000"]
    best = tune.best_config(tmp_path, measurements)
    assert sorted(p.name for p in best.iterdir()) == ["c", "digits", "p"]
    assert "p_config_1" in (best / "p" / "config.pbtxt").read_text()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("10.1.2.3", False)])
def test_is_loopback(host, loopback):
    assert gateway.is_loopback(host) is loopback


def test_serve_refuses_open_admin_apis_on_a_public_address():
    with pytest.raises(ValueError, match="loopback address only"):
        service.serve(ServerSettings(host="0.0.0.0", restrict_admin_apis=False))


def test_serve_has_a_flag_to_open_the_admin_apis():
    from pattern_tools.cli import parser

    assert parser().parse_args(["serve", "--open-admin-apis"]).open_admin_apis is True
    assert parser().parse_args(["serve"]).open_admin_apis is False
