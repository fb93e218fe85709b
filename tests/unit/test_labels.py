"""Class names: one labels file per exported model, which Triton loads (`label_filename`); every
other model reaches it by `labels_from` or through its ensemble step; the SDK follows the same
chain over the served configs; web_single reads the file itself."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from pattern_kernel.model_config import class_names, parse_model_config
from pattern_runtime import paths
from pattern_tools.repo_check import check_repository, label_source, load_config
from triton_patterns.client import _labels_by
from triton_patterns.patterns import PATTERNS


def served(model: str) -> dict:
    """The model's config as the HTTP API serves it (proto field names)."""
    config = load_config(paths.MODEL_REPOSITORY / model / "config.pbtxt")
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def integer_label_models() -> list[str]:
    """The models of the SDK's patterns whose LABEL is a class id (those it names)."""
    models = sorted({spec.model for spec in PATTERNS.values() if spec.model})
    return [m for m in models if any(o["name"] == "LABEL" and o["data_type"] != "TYPE_STRING"
                                     for o in served(m).get("output", []))]


@pytest.fixture(scope="module")
def models() -> dict:
    return check_repository(files=False).models


@pytest.mark.parametrize("model", integer_label_models())
def test_the_sdk_names_each_patterns_classes_from_the_exported_labels_file(models, model):
    source, why = label_source(models, models[model])
    assert source is not None, why
    expected = (source.folder / "labels.txt").read_text().splitlines()
    assert _labels_by(model, served) == expected and len(expected) > 1


def test_the_sdk_stops_at_a_labels_from_cycle():
    configs = {"a": {"parameters": {"labels_from": {"string_value": "b"}}},
               "b": {"parameters": {"labels_from": {"string_value": "a"}}}}
    asked = []
    assert _labels_by("a", lambda name: asked.append(name) or configs[name]) == [] and asked == ["a", "b"]


def test_class_names_reads_the_label_filename_of_an_output(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    entry = {"name": "PROBABILITIES", "data_type": "TYPE_FP32", "dims": [2], "label_filename": "labels.txt"}
    config = parse_model_config(json.dumps({"name": "pets", "output": [entry]}))
    assert class_names(config, tmp_path) == ["cat", "dog"]
    (tmp_path / "labels.txt").unlink()
    with pytest.raises(ValueError, match=r"model 'pets': output PROBABILITIES: label_filename .*labels.txt"):
        class_names(config, tmp_path)
    unnamed = parse_model_config(json.dumps({"name": "pets", "output": [{**entry, "label_filename": ""}]}))
    with pytest.raises(ValueError, match="model 'pets': output PROBABILITIES names no label_filename"):
        class_names(unnamed, tmp_path)
