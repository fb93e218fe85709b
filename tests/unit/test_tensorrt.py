"""export/tensorrt.py without a GPU: optimisation profiles from model configs, the GPU variant's
config, which models are skipped and why, and a clean exit where TensorRT is unavailable."""

from __future__ import annotations

import shutil

import pytest
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from export import tensorrt as trt_export
from pattern_runtime import paths
from pattern_tools.repo_check import check_repository, parse_config_text
from pattern_tools.template import render_config

IRIS = parse_config_text((paths.MODEL_REPOSITORY / "iris" / "config.pbtxt").read_text())
ENCODER = parse_config_text((paths.MODEL_REPOSITORY / "text_encoder" / "config.pbtxt").read_text())


def test_profile_batch_dimension_from_max_batch_size():
    assert trt_export.profile_shapes(IRIS) == {"FEATURES": ((1, 4), (64, 4), (64, 4))}
    cfg = parse_config_text(str(IRIS))
    cfg.dynamic_batching.preferred_batch_size.extend([8, 16])
    assert trt_export.profile_shapes(cfg)["FEATURES"][1] == (16, 4)  # opt: the largest preferred batch


def test_profile_variable_dimensions_and_non_batching_configs():
    shapes = trt_export.profile_shapes(ENCODER, (1, 128, 256))
    assert shapes == {"input_ids": ((1, 1), (16, 128), (16, 256)), "attention_mask": ((1, 1), (16, 128), (16, 256))}
    flat = parse_config_text('name: "m" max_batch_size: 0 input { name: "X" data_type: TYPE_FP32 dims: [-1, 4] }')
    assert trt_export.profile_shapes(flat, (1, 8, 32)) == {"X": ((1, 4), (8, 4), (32, 4))}
    with pytest.raises(ValueError, match="min <= opt <= max"):
        trt_export.profile_shapes(flat, (4, 2, 8))


def test_gpu_config_is_a_tensorrt_plan_variant_that_passes_the_checker(tmp_path):
    cfg = trt_export.gpu_config(IRIS, "fp16")
    assert (cfg.name, cfg.platform, cfg.backend) == ("iris_trt_fp16", "tensorrt_plan", "")
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, mc.ModelInstanceGroup.KIND_GPU)]
    assert "intra_op_thread_count" not in cfg.parameters and cfg.parameters["labels"].string_value
    assert cfg.parameters["precision"].string_value == "fp16" and not cfg.HasField("version_policy")
    assert list(cfg.input) == list(IRIS.input) and list(cfg.output) == list(IRIS.output)
    assert cfg.max_batch_size == IRIS.max_batch_size and cfg.HasField("dynamic_batching")
    folder = tmp_path / "repo" / cfg.name
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.plan").write_bytes(b"engine")
    (folder / "config.pbtxt").write_text(render_config(cfg, "test"))
    trt_export.copy_label_files(cfg, paths.MODEL_REPOSITORY / "iris", folder)
    assert (folder / "labels.txt").read_text() == "setosa\nversicolor\nvirginica\n"
    report = check_repository(tmp_path / "repo", backends=None)
    assert report.ok and not report.problems, report.lines()
    (folder / "1" / "model.plan").unlink()
    lines = check_repository(tmp_path / "repo", backends=None).lines()
    assert any("iris_trt_fp16/1/model.plan does not exist (an exported file: run `make models`)" in x for x in lines)


def _onnx(path, op: str, domain: str = "") -> None:
    node = helper.make_node(op, ["X"], ["Y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(helper.make_model(graph).SerializeToString())


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "model_repository"
    for name in ("iris", "heavy_mlp", "text_encoder", "text_tokenizer", "digits_classifier", "digits"):
        shutil.copytree(paths.model_folder(name), root / name, ignore=shutil.ignore_patterns("*.onnx", "*.json"))
    _onnx(root / "iris" / "2" / "model.onnx", "Scaler", "ai.onnx.ml")
    _onnx(root / "heavy_mlp" / "1" / "model.onnx", "Relu")
    _onnx(root / "text_encoder" / "1" / "model.onnx", "Relu")
    return root  # digits_classifier: not exported


def test_plan_skips_unsupported_and_unexported_models_and_int8_without_calibration(repo):
    builds = {(b.model, b.precision): b for b in trt_export.plan(repo)}
    assert sorted(builds) == [(m, p) for m in ("digits_classifier", "heavy_mlp", "iris", "text_encoder")
                              for p in ("fp16", "int8")]
    assert builds["iris", "fp16"].skip == "TensorRT has no Scaler (ai.onnx.ml)"
    assert "digits_classifier/1/model.onnx not exported" in builds["digits_classifier", "fp16"].skip
    assert builds["heavy_mlp", "int8"].skip == "no calibration set for INT8"
    heavy = builds["heavy_mlp", "fp16"]
    assert heavy.skip is None and heavy.profile == {"INPUT": ((1, 512), (32, 512), (32, 512))}
    enc = builds["text_encoder", "int8"]  # INT8: the generated text set calibrates
    assert enc.skip is None and enc.config.name == "text_encoder_trt_int8"
    assert enc.profile["input_ids"] == ((1, 1), (16, 64), (16, 256))  # 256: text_tokenizer's max_length
    rows = trt_export.plan_rows([heavy])
    assert rows == [["heavy_mlp_trt_fp16", "fp16", "build", "INPUT 1x512..32x512..32x512"]]


def test_main_without_tensorrt_says_so_and_exits_cleanly(repo, capsys, monkeypatch):
    monkeypatch.setattr(trt_export, "tensorrt_status", lambda: (False, "no GPU in this test"))
    assert trt_export.main(["--repository", str(repo), "--only", "heavy_mlp", "--output", str(repo.parent / "o")]) == 0
    out = capsys.readouterr().out
    assert "heavy_mlp_trt_fp16" in out and "TensorRT unavailable here: no GPU in this test" in out
    assert not (repo.parent / "o").exists()
    usable, why = trt_export.tensorrt_status()  # this machine: no tensorrt package, or no GPU
    assert not usable and why
