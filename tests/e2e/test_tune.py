"""`triton-patterns tune` end to end: a real model-analyzer 1.58 (its own virtualenv) profiles a plain
ONNX model, an ensemble and a BLS model, each on a tritonserver of its own holding only that model
and the models it calls, and writes its measurements, reports and best config. Kept short: one
concurrency, 0.5 s windows, search bounds of one instance and batch size 1."""

from __future__ import annotations

import json

import pytest

from pattern_runtime import paths
from pattern_tools import tune
from pattern_tools.cli import main as cli_main
from pattern_tools.repo_check import load_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # model-analyzer profiles, up to 200 s each under load

SHORT = ["--concurrency", "1", "--measurement-ms", "500", "--max-instances", "1", "--max-batch-size", "1"]


@pytest.fixture(scope="module")
def analyzer():
    if not (paths.MODEL_REPOSITORY / "iris" / "2" / "model.onnx").exists():
        pytest.fail("exported models are missing: run `make models` first")
    return tune.model_analyzer()  # `make test` installs it first (Makefile: model-analyzer)


@pytest.mark.parametrize("model, kind, composing", [
    ("iris", "plain", []),
    ("digits", "ensemble", ["digits_classifier", "digits_preprocess"]),
    ("iris_cascade", "bls", ["iris"]),
])
def test_tune_writes_measurements_reports_and_best_config(analyzer, tmp_path, capsys, model, kind, composing):
    out = tmp_path / model
    assert cli_main(["tune", model, "--out", str(out), *SHORT]) == 0
    printed = capsys.readouterr().out
    assert f"{model}: {kind} model" in printed and "best config:" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["model"], summary["kind"], summary["composing_models"]) == (model, kind, composing)
    assert summary["measurements"], "model-analyzer measured nothing"
    throughputs = [float(m["Throughput (infer/sec)"]) for m in summary["measurements"]]
    assert throughputs == sorted(throughputs, reverse=True) and throughputs[0] > 0
    assert all(m["Model"] == model for m in summary["measurements"])

    best = out / "best_config"
    assert (best / model / "config.pbtxt").is_file()
    for folder in best.iterdir():  # each a config Triton can read, named as in the repository
        assert load_config(folder / "config.pbtxt").name == folder.name
    assert (out / "reports" / "summaries" / model / "result_summary.html").is_file()
    # the temporary repository held the model and what it calls, nothing else
    assert sorted(p.name for p in (out / "repository").iterdir()) == sorted([model, *composing])


def test_tune_names_an_unknown_model(analyzer, tmp_path, capsys):
    assert cli_main(["tune", "no_such_model", "--out", str(tmp_path / "x")]) == 1
    assert "model 'no_such_model' is not in" in capsys.readouterr().err
