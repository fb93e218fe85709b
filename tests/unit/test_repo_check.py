"""The repository checker (`triton-patterns check`): the real repository is clean, and each kind
of mistake is caught, naming the file and the field, on broken copies of a few real models."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pattern_runtime import paths
from pattern_tools.cli import main as cli_main
from pattern_tools.repo_check import check_repository, dims_match, parse_targets, shapes_compatible

MODELS = ["iris", "iris_cascade", "iris_parallel", "iris_slow", "iris_failing", "iris_vote", "iris_vote_aggregate",
          "digits", "digits_bls", "digits_preprocess", "digits_classifier", "text_tokenizer", "iris_cached_v1"]
ONNX_MODELS = {"iris": (4, 3), "digits_classifier": (64, 10)}  # input width, classes


def classifier_onnx(n_in: int, n_classes: int, input_name: str, first_class_weight: float = 0.0) -> bytes:
    """A tiny ONNX classifier with the I/O of the project's: [N,n_in] -> LABEL [N], PROBABILITIES [N,c];
    its logits are first_class_weight * sum(inputs) for class 0, zero for the others."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((n_in, n_classes), np.float32)
    weights[:, 0] = first_class_weight
    w = numpy_helper.from_array(weights, "W")
    nodes = [helper.make_node("MatMul", [input_name, "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["PROBABILITIES"], axis=1),
             helper.make_node("ArgMax", ["PROBABILITIES"], ["LABEL"], axis=1, keepdims=0)]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_in])],
                              [helper.make_tensor_value_info("LABEL", TensorProto.INT64, ["N"]),
                               helper.make_tensor_value_info("PROBABILITIES", TensorProto.FLOAT, ["N", n_classes])],
                              [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """Copies of a few real configs, with small model files in their version folders."""
    root = tmp_path / "model_repository"
    for name in MODELS:
        src = paths.MODEL_REPOSITORY / name
        (root / name).mkdir(parents=True)
        shutil.copy(src / "config.pbtxt", root / name / "config.pbtxt")
        for labels in src.glob("labels.txt"):
            shutil.copy(labels, root / name / labels.name)
        for version in (p.name for p in src.iterdir() if p.name.isdigit()):
            (root / name / version).mkdir()
    for name, (n_in, n_classes) in ONNX_MODELS.items():
        input_name = "FEATURES" if name == "iris" else "PIXELS"
        for version in ("1", "2") if name == "iris" else ("1",):
            (root / name / version / "model.onnx").write_bytes(classifier_onnx(n_in, n_classes, input_name))
    (root / "text_tokenizer" / "1" / "tokenizer.json").write_text("{}")
    return root


def edit(repo: Path, model: str, old: str, new: str) -> Path:
    path = repo / model / "config.pbtxt"
    text = path.read_text()
    assert old in text, f"{old!r} not in {model}"
    path.write_text(text.replace(old, new, 1))
    return path


def errors(repo: Path, **kwargs) -> list[str]:
    report = check_repository(repo, paths.BACKENDS, **kwargs)
    return [p.format(repo.parent) for p in report.errors]


def only(repo: Path, pattern: str, **kwargs) -> str:
    found = errors(repo, **kwargs)
    assert len(found) == 1 and re.search(pattern, found[0]), found
    return found[0]


def test_the_real_repository_is_clean():
    report = check_repository()  # files not exported yet (before `make models`) are the only allowed errors
    assert [p for p in report.errors if p.code != "missing_export"] == [], "\n".join(report.lines())
    assert len(report.models) >= 30


def test_clean_copy_has_no_problems(repo):
    report = check_repository(repo, paths.BACKENDS)
    assert report.problems == [] and sorted(report.models) == sorted(MODELS)


def test_config_that_does_not_parse_names_file_and_field(repo):
    edit(repo, "iris_slow", "max_batch_size: 64", "max_batch: 64")
    line = only(repo, r"^error: model_repository/iris_slow/config.pbtxt: max_batch: does not parse as ModelConfig")
    assert "has no field named" in line


def test_name_backend_platform_and_tensor_mistakes(repo):
    edit(repo, "iris_slow", 'name: "iris_slow"', 'name: "iris_slowest"')
    edit(repo, "iris_failing", 'backend: "fault_injection"', 'backend: "fault_injections"')
    edit(repo, "digits_classifier", 'platform: "onnxruntime_onnx"', 'platform: "onnx"')
    edit(repo, "iris_vote_aggregate", '{ name: "SCORES_V2", data_type: TYPE_FP32, dims: [ 3 ] }',
         '{ name: "SCORES_V2", data_type: TYPE_FP32, dims: [ 0 ] }')
    found = "\n".join(errors(repo))
    assert 'iris_slow/config.pbtxt: name: "iris_slowest" does not match the folder name' in found
    assert "iris_failing/config.pbtxt: backend: no backend 'fault_injections'" in found
    assert "digits_classifier/config.pbtxt: platform: unknown platform 'onnx'" in found
    assert "iris_vote_aggregate/config.pbtxt: input[1] (SCORES_V2).dims: [0]" in found


def test_missing_exported_file_says_run_make_models(repo):
    (repo / "digits_classifier" / "1" / "model.onnx").unlink()
    (repo / "text_tokenizer" / "1" / "tokenizer.json").unlink()
    report = check_repository(repo, paths.BACKENDS)
    lines = report.lines()
    assert any("digits_classifier/config.pbtxt: platform: version 1: digits_classifier/1/model.onnx does not exist "
               "(an exported file: run `make models`)" in x for x in lines)
    assert any("text_tokenizer/config.pbtxt: parameters.tokenizer_file: version 1" in x for x in lines)
    assert "2 exported model files are missing: run `make models`" in "\n".join(lines)
    assert {p.code for p in report.errors} == {"missing_export"}
    assert check_repository(repo, paths.BACKENDS, files=False).ok  # configs alone are fine


def test_versions_served_by_policy_must_exist(repo):
    edit(repo, "iris", "versions: [ 1, 2 ]", "versions: [ 1, 2, 3 ]")
    only(repo, r"iris/config.pbtxt: version_policy.specific.versions: version 3 listed but no folder iris/3/")
    shutil.rmtree(repo / "iris_slow" / "1")
    assert any("iris_slow/config.pbtxt: version folders: iris_slow/ has no numbered version folder" in e
               for e in errors(repo))


def test_onnx_graph_must_match_config(repo):
    edit(repo, "digits_classifier", "dims: [ 64 ]", "dims: [ 65 ]")
    edit(repo, "iris", '{ name: "PROBABILITIES", data_type: TYPE_FP32', '{ name: "PROBABILITIES", data_type: TYPE_FP64')
    found = "\n".join(errors(repo))
    assert ("digits_classifier/config.pbtxt: input[0] (PIXELS).dims: [-1, 65] (with the batch dimension) "
            "does not match model.onnx's [-1, 64]") in found
    assert "iris/config.pbtxt: output[1] (PROBABILITIES).data_type: TYPE_FP64, but model.onnx has TYPE_FP32" in found


def test_manifest_that_no_longer_matches_is_a_warning(repo):
    (repo / "iris" / "1" / "manifest.json").write_text(json.dumps({"artifact": "model.onnx", "sha256": "0" * 64}))
    report = check_repository(repo, paths.BACKENDS)
    assert report.ok and [p.format(repo.parent) for p in report.warnings] == [
        "warning: model_repository/iris/1/model.onnx: sha256: does not match iris/1/manifest.json: changed since "
        "export; re-run `make models`"]


def test_ensemble_step_names_a_missing_model_or_version(repo):
    edit(repo, "digits", 'model_name: "digits_classifier"', 'model_name: "digits_clasifier"')
    only(repo, r"digits/config.pbtxt: ensemble_scheduling.step\[1\].model_name: names model 'digits_clasifier', "
               "which is not in the repository")


def test_ensemble_version_not_served(repo):
    edit(repo, "iris_vote", "model_version: 2", "model_version: 5")
    only(repo, r"iris_vote/config.pbtxt: ensemble_scheduling.step\[1\].model_name: asks for iris version 5, "
               "but iris serves 1, 2")


def test_ensemble_maps_names_that_exist(repo):
    edit(repo, "digits", 'input_map { key: "PIXELS", value: "pixels" }', 'input_map { key: "PIXEL", value: "pixels" }')
    found = errors(repo)
    assert any("ensemble_scheduling.step[1].input_map[PIXEL]: digits_classifier has no input 'PIXEL'" in e
               for e in found)
    assert any("ensemble_scheduling.step[1].input_map: input 'PIXELS' of digits_classifier is not mapped" in e
               for e in found)


def test_ensemble_output_map_and_unproduced_tensors(repo):
    edit(repo, "iris_vote", 'output_map { key: "PROBABILITIES", value: "scores_v2" }',
         'output_map { key: "SCORES", value: "scores_v2" }')
    found = "\n".join(errors(repo))
    assert ("iris_vote/config.pbtxt: ensemble_scheduling.step[1].output_map[SCORES]: "
            "iris has no output 'SCORES'") in found
    assert "ensemble_scheduling.step[2].input_map: tensor scores_v2 never produced" in found
    assert "iris_vote/config.pbtxt: output (LABEL): no step produces this ensemble output" in found


def test_ensemble_dtype_mismatch(repo):
    edit(repo, "digits", '{ name: "IMAGE", data_type: TYPE_STRING', '{ name: "IMAGE", data_type: TYPE_UINT8')
    only(repo, r"digits/config.pbtxt: ensemble_scheduling.step\[0\].input_map\[IMAGE\]: tensor 'IMAGE': ensemble "
               r"input IMAGE is TYPE_UINT8 but digits_preprocess input IMAGE is TYPE_STRING")


def test_ensemble_dims_mismatch(repo):
    edit(repo, "digits_preprocess", '{ name: "PIXELS", data_type: TYPE_FP32, dims: [ 64 ] }',
         '{ name: "PIXELS", data_type: TYPE_FP32, dims: [ 8, 8 ] }')
    only(repo, r"digits/config.pbtxt: ensemble_scheduling.step\[1\].input_map\[PIXELS\]: tensor 'pixels': "
               r"digits_preprocess output PIXELS has dims \[-1, 8, 8\] "
               r"but digits_classifier input PIXELS has \[-1, 64\]")


def test_ensemble_batch_size_larger_than_a_step(repo):
    edit(repo, "digits", "max_batch_size: 32", "max_batch_size: 64")
    found = errors(repo)
    assert len(found) == 2 and all("digits/config.pbtxt: max_batch_size: 64 is larger than step" in e for e in found)


def test_bls_steps_targets_and_model_parameters_name_models_that_exist(repo):
    edit(repo, "iris_cascade", '"name": "confirm", "model": "iris", "version": 2',
         '"name": "confirm", "model": "iris", "version": 3')
    edit(repo, "iris_parallel", "iris:1,iris:2,iris_slow,iris_failing", "iris:1,iris:2,iris_slower,iris_failing")
    edit(repo, "digits_bls", '"predict_model", value: { string_value: "digits_classifier" }',
         '"predict_model", value: { string_value: "digits_classifer" }')
    edit(repo, "iris_cached_v1", '"target_version", value: { string_value: "1" }',
         '"target_version", value: { string_value: "one" }')
    found = "\n".join(errors(repo))
    assert ("iris_cascade/config.pbtxt: parameters.steps[1] (confirm): asks for iris version 3, "
            "but iris serves 1, 2") in found
    assert ("iris_parallel/config.pbtxt: parameters.targets: names model 'iris_slower', "
            "which is not in the repository") in found
    assert "digits_bls/config.pbtxt: parameters.predict_model: names model 'digits_classifer'" in found
    assert "iris_cached_v1/config.pbtxt: parameters.target_version: 'one' is not an integer version" in found


def test_bls_step_tensors_must_exist_on_the_callee(repo):
    edit(repo, "iris_cascade", '"outputs": {"LABEL": "LABEL", "PROBABILITIES": "PROBABILITIES"}, "timeout_ms": 1000}',
         '"outputs": {"LABELS": "LABEL", "PROBABILITIES": "PROBABILITIES"}, "timeout_ms": 1000}')
    only(repo, r"iris_cascade/config.pbtxt: parameters.steps\[0\] \(fast\).outputs\[LABELS\]: "
               r"iris has no output 'LABELS'")


def test_bls_batch_larger_than_callee_is_a_warning(repo):
    edit(repo, "iris_slow", "max_batch_size: 64", "max_batch_size: 128")
    report = check_repository(repo, paths.BACKENDS)
    assert report.ok and len(report.warnings) == 1
    assert report.warnings[0].format(repo.parent).startswith(
        "warning: model_repository/iris_slow/config.pbtxt: parameters.target_model: max_batch_size 128 is larger "
        "than iris's max_batch_size 64")


def test_reference_cycle(repo):
    edit(repo, "iris_slow", '"target_model", value: { string_value: "iris" }',
         '"target_model", value: { string_value: "iris_failing" }')
    edit(repo, "iris_slow", '"target_version", value: { string_value: "2" }',
         '"target_version", value: { string_value: "1" }')
    edit(repo, "iris_failing", '"target_model", value: { string_value: "iris" }',
         '"target_model", value: { string_value: "iris_slow" }')
    only(repo, r"references: reference cycle: iris_failing -> iris_slow -> iris_failing")


LABELS_FROM_IRIS = 'parameters { key: "labels_from", value: { string_value: "iris" } }'


def test_a_label_list_away_from_its_labels_file_is_an_error(repo):
    edit(repo, "iris_cascade", LABELS_FROM_IRIS,
         'parameters { key: "labels", value: { string_value: "setosa,versicolor,virginica" } }')
    only(repo, r"iris_cascade/config.pbtxt: parameters.labels: class names belong in the labels file")


def test_a_label_list_beside_its_labels_file_must_equal_it(repo):
    edit(repo, "iris", '"labels", value: { string_value: "setosa,versicolor,virginica" }',
         '"labels", value: { string_value: "setosa,virginica,versicolor" }')
    only(repo, r"iris/config.pbtxt: parameters.labels: \['setosa', 'virginica', 'versicolor'\] differ from labels.txt")


def test_a_missing_labels_file(repo):
    (repo / "digits_classifier" / "labels.txt").unlink()
    only(repo, r"digits_classifier/config.pbtxt: output\[1\] \(PROBABILITIES\).label_filename: "
               r"digits_classifier/labels.txt does not exist")


def test_a_labels_file_outside_the_model_folder(repo):
    edit(repo, "iris", 'label_filename: "labels.txt"', 'label_filename: "../digits_classifier/labels.txt"')
    found = errors(repo)
    assert any(re.search(r"iris/config.pbtxt: output\[1\] \(PROBABILITIES\).label_filename: "
                         r"'../digits_classifier/labels.txt': must be a file of the model's folder", e)
               for e in found), found


def test_a_labels_file_with_another_class_count(repo):
    (repo / "iris" / "labels.txt").write_text("setosa\nversicolor\n")
    found = errors(repo)
    assert any("iris/labels.txt has 2 lines, but output PROBABILITIES has 3 classes" in e for e in found), found


@pytest.mark.parametrize(("source", "message"), [
    ("iris_nope", r"model 'iris_nope' does not exist"),
    ("digits_preprocess", r"digits_preprocess has no labels file and no labels_from"),
    ("digits_classifier", r"digits_classifier names 10 classes, but output PROBABILITIES has 3"),
    ("iris_cascade", r"labels_from cycle: iris_cascade -> iris_cascade"),
])
def test_labels_from_must_lead_to_a_labels_file_of_as_many_classes(repo, source, message):
    edit(repo, "iris_cascade", LABELS_FROM_IRIS, LABELS_FROM_IRIS.replace('"iris"', f'"{source}"'))
    only(repo, r"iris_cascade/config.pbtxt: parameters.labels_from: " + message)


def test_labels_from_follows_an_ensemble_to_the_step_producing_its_scores(repo):
    edit(repo, "iris_cascade", LABELS_FROM_IRIS, LABELS_FROM_IRIS.replace('"iris"', '"digits"'))
    only(repo, r"iris_cascade/config.pbtxt: parameters.labels_from: digits_classifier names 10 classes")


def test_cli_exit_codes_and_json(repo, capsys):
    assert cli_main(["check", "--repository", str(repo)]) == 0
    assert capsys.readouterr().out.strip().startswith(f"ok: {len(MODELS)} models")
    edit(repo, "iris_vote", "model_version: 2", "model_version: 5")
    assert cli_main(["check", "--repository", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "error: model_repository/iris_vote/config.pbtxt: ensemble_scheduling.step[1].model_name" in out
    assert out.strip().endswith("1 errors, 0 warnings")
    assert cli_main(["check", "--repository", str(repo), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["problems"][0]["field"] == "ensemble_scheduling.step[1].model_name"


def test_shape_rules():
    assert dims_match([-1, 4], [7, 4]) and not dims_match([4], [4, 1]) and not dims_match([3], [4])
    assert shapes_compatible([-1, 4], False, [4], True)  # non-batching [-1,4] meets batching [4]
    assert shapes_compatible([4], False, [4], True) and not shapes_compatible([3], False, [4], True)
    assert parse_targets("iris:1, iris_slow ,iris:2=90") == [("iris", 1), ("iris_slow", -1), ("iris", 2)]
