"""`triton-patterns new` without a server: configs from an ONNX graph, chains of existing models
wired by tensor names, pattern configs, the rendered text round trip, and the checker gate."""

from __future__ import annotations

import json
import shutil
from argparse import Namespace

import pytest
from test_repo_check import classifier_onnx

from pattern_runtime import paths
from pattern_tools.repo_check import check_repository, parse_config_text
from pattern_tools.template import (
    TemplateError,
    chain,
    create,
    ensemble_config,
    onnx_config,
    pattern_config,
    render_config,
    resolve_models,
    sample_inputs,
)

MODELS = ("iris", "text_tokenizer", "text_encoder", "text_classifier", "digits_preprocess", "digits_classifier",
          "iris_failing")


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "model_repository"
    for name in MODELS:
        shutil.copytree(paths.MODEL_REPOSITORY / name, root / name, ignore=shutil.ignore_patterns("*.onnx", "*.json"))
    return root


def args(repo, tmp_path, kind, name, **kw) -> Namespace:
    base = dict(kind=kind, name=name, repository=str(repo), tests=str(tmp_path / "smoke"), no_test=False,
                force=False, load=False, max_batch_size=8, labels=None, input=[], output=[], step=[], target=[],
                param=[], extra_output=[], backend=None, file=None)
    return Namespace(**{**base, **kw})


def errors_for(repo, name):
    return [p.format() for p in check_repository(repo, paths.BACKENDS, files=False).errors if name in str(p.path)]


def test_onnx_config_reads_the_graph(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(classifier_onnx(4, 3, "FEATURES"))
    cfg = onnx_config("clf", path, 16, ["a", "b", "c"])
    text = render_config(cfg, "a comment")
    assert text.startswith("# a comment\nname: \"clf\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 16\n")
    assert '  { name: "FEATURES", data_type: TYPE_FP32, dims: [ 4 ] }' in text
    assert '  { name: "LABEL", data_type: TYPE_INT64, dims: [ 1 ], reshape: { shape: [ ] } },' in text
    assert '  { name: "PROBABILITIES", data_type: TYPE_FP32, dims: [ 3 ], label_filename: "labels.txt" }' in text
    assert 'parameters { key: "labels", value: { string_value: "a,b,c" } }' in text  # the SDK's, beside the file
    with pytest.raises(TemplateError, match="--labels: 2 names, but PROBABILITIES has 3 classes"):
        onnx_config("clf", path, 16, ["a", "b"])
    assert parse_config_text(text) == cfg  # what is written is what was built
    assert onnx_config("clf", path, 0).max_batch_size == 0  # no batching asked: full shapes as dims
    assert list(onnx_config("clf", path, 0).input[0].dims) == [-1, 4]


def test_chain_wires_by_name_then_by_position(repo):
    steps = resolve_models(repo, ["text_tokenizer", "text_encoder", "text_classifier"])
    ins, outs = chain([m for m, _ in steps])
    assert ins == [{"TEXT": "TEXT"}, {"input_ids": "text_tokenizer_input_ids",
                                      "attention_mask": "text_tokenizer_attention_mask"},
                   {"EMBEDDING": "text_encoder_EMBEDDING"}]
    assert outs[-1] == {"LABEL": "LABEL", "PROBABILITIES": "PROBABILITIES"}
    with pytest.raises(TemplateError, match=r"step 1 \(digits_classifier\): no pipeline input or earlier output"):
        chain([m for m, _ in resolve_models(repo, ["iris", "digits_classifier"])])
    with pytest.raises(TemplateError, match="does not serve version 3"):
        resolve_models(repo, ["iris:3"])


def test_ensemble_and_patterns_pass_the_checker(repo, tmp_path):
    text = resolve_models(repo, ["text_tokenizer", "text_encoder", "text_classifier"])
    cfg = ensemble_config("text_chain", text)
    assert cfg.max_batch_size == 16 and [s.model_version for s in cfg.ensemble_scheduling.step] == [1, 1, 1]
    assert "labels" not in cfg.parameters  # Triton and the SDK take them from the step producing PROBABILITIES
    iris = resolve_models(repo, ["iris:1", "iris:2"])
    models = check_repository(repo, paths.BACKENDS, files=False).models
    made = {"text_chain": cfg,
            "iris_serial": pattern_config("iris_serial", "serial", iris, repository_models=models),
            "iris_fan": pattern_config("iris_fan", "parallel", iris, {"min_answers": "2"}),
            "iris_guard": pattern_config("iris_guard", "circuit_breaker", iris[:1]),
            "iris_cache": pattern_config("iris_cache", "prediction_cache", iris[1:])}
    for name, c in made.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(render_config(c))
    report = check_repository(repo, paths.BACKENDS, files=False)
    assert report.problems == []
    steps = json.loads(made["iris_serial"].parameters["steps"].string_value)
    assert [(s["model"], s["version"], s["inputs"]) for s in steps] == [("iris", 1, {"FEATURES": "FEATURES"}),
                                                                          ("iris", 2, {"FEATURES": "FEATURES"})]
    # the config leaves the spec's extra outputs to the backend's auto_complete_config; the checker adds them too
    assert [t.name for t in made["iris_guard"].output] == ["LABEL", "PROBABILITIES"]
    assert [t.name for t in report.models["iris_guard"].config.output] == ["LABEL", "PROBABILITIES", "FALLBACK",
                                                                           "FALLBACK_REASON"]
    assert made["iris_guard"].HasField("dynamic_batching") and not made["iris_fan"].HasField("dynamic_batching")
    assert json.loads(made["iris_guard"].parameters["default_outputs"].string_value) == {
        "LABEL": 0, "PROBABILITIES": [0.3333] * 3}
    assert made["iris_fan"].parameters["min_answers"].string_value == "2"
    assert made["iris_serial"].parameters["labels_from"].string_value == "iris"
    with pytest.raises(TemplateError, match="wraps one target"):
        pattern_config("x", "prediction_cache", iris)


def test_create_writes_config_version_folder_and_smoke_test(repo, tmp_path):
    created = create(args(repo, tmp_path, "python", "echo", input=["X:FP32:4"], output=["Y:FP32:4"]))
    assert (repo / "echo" / "1" / "model.py").is_file() and errors_for(repo, "echo") == []
    smoke = (tmp_path / "smoke" / "test_model_echo.py").read_text()
    assert 'MODEL = "echo"' in smoke and "assert sorted(outputs) == ['Y']" in smoke
    compile(smoke, "smoke", "exec")
    compile((repo / "echo" / "1" / "model.py").read_text(), "model.py", "exec")
    with pytest.raises(TemplateError, match="exists"):
        create(args(repo, tmp_path, "python", "echo", input=["X:FP32:4"], output=["Y:FP32:4"]))
    assert created.name == "echo"


def test_create_refuses_what_the_checker_refuses_and_leaves_nothing(repo, tmp_path):
    with pytest.raises(TemplateError, match=r"parameters.steps\[0\].*|does not pass the repository check"):
        create(args(repo, tmp_path, "pattern", "bad", backend="serial", target=["iris"],
                    param=['steps=[{"name": "a", "model": "nope"}]']))
    assert not (repo / "bad").exists() and not (tmp_path / "smoke").exists()
    with pytest.raises(TemplateError, match="expected NAME:TYPE:DIMS"):
        create(args(repo, tmp_path, "python", "bad", input=["X:FLOAT32:4"], output=["Y:FP32:4"]))


def test_sample_inputs_follow_the_config(repo):
    text = parse_config_text((repo / "text_tokenizer" / "config.pbtxt").read_text())
    digits = parse_config_text((repo / "digits_preprocess" / "config.pbtxt").read_text())
    assert sample_inputs(text)["TEXT"].shape == (1, 1) and sample_inputs(text)["TEXT"][0, 0].startswith(b"the")
    assert sample_inputs(digits)["IMAGE"][0, 0].startswith(b"\x89PNG")
    enc = parse_config_text((repo / "text_encoder" / "config.pbtxt").read_text())
    assert sample_inputs(enc)["input_ids"].shape == (1, 8)
