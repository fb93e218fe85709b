"""The backends' declared specs: parameters read with types, defaults and bounds; every backend
folder has a spec and every shipped config passes its backend's spec; the docs' tables match."""

from __future__ import annotations

import numpy as np
import pytest

from pattern_kernel.batching import to_config_rank
from pattern_kernel.spec import BackendSpec, Parameter, Reference, markdown_table
from pattern_kernel.specs import load_spec, load_specs
from pattern_runtime import paths
from pattern_tools import spec_docs
from pattern_tools.repo_check import load_config

SPECS = load_specs(paths.BACKENDS)

SPEC = BackendSpec("demo", "a demo", parameters=(
    Parameter("mode", required=True, choices=("a", "b")),
    Parameter("deadline_ms", "float", 1000, min=0),
    Parameter("rate", "float", 0.0, min=0, max=1),
    Parameter("hang", "bool", False),
    Parameter("steps", "int", 3),
))


def test_read_types_defaults_and_errors_naming_the_parameter():
    assert SPEC.read("m", {"mode": "b", "hang": "TRUE", "steps": "4"}) == {
        "mode": "b", "deadline_ms": 1000, "rate": 0.0, "hang": True, "steps": 4}
    for given, message in [({}, "model 'm': config parameter 'mode' is required"),
                           ({"mode": "c"}, "model 'm': parameter 'mode' must be one of \\['a', 'b'\\], got 'c'"),
                           ({"mode": "a", "deadline_ms": "-1"}, "parameter 'deadline_ms' must be >= 0, got -1.0"),
                           ({"mode": "a", "rate": "2"}, "parameter 'rate' must be <= 1, got 2.0"),
                           ({"mode": "a", "steps": "x"}, "parameter 'steps' must be an integer, got 'x'"),
                           ({"mode": "a", "hang": "yes"}, "parameter 'hang' must be \"true\" or \"false\"")]:
        with pytest.raises(ValueError, match=message):
            SPEC.read("m", given)


def test_every_backend_folder_has_a_spec_and_every_shipped_config_reads():
    folders = {p.name for p in paths.BACKENDS.iterdir() if (p / "model.py").is_file()}
    assert folders == set(SPECS)
    read = 0
    for path in sorted(p for r in paths.MODEL_REPOSITORIES for p in r.glob("*/config.pbtxt")):
        config = load_config(path)
        if config.backend in SPECS:
            parameters = {k: v.string_value for k, v in config.parameters.items()}
            SPECS[config.backend].read(config.name, parameters)  # raises on a bad or missing parameter
            read += 1
    assert read >= 25


def test_completed_outputs_are_the_extra_outputs_a_config_has_and_does_not_declare():
    def config(backend, max_batch_size=8, outputs=(), decoupled=False, **parameters):
        return {"name": "m", "backend": backend, "max_batch_size": max_batch_size,
                "output": [{"name": n, "data_type": "TYPE_STRING", "dims": [1]} for n in outputs],
                "model_transaction_policy": {"decoupled": decoupled},
                "parameters": {k: {"string_value": v} for k, v in parameters.items()}}

    def names(c):
        return [o["name"] for o in SPECS[c["backend"]].completed_outputs(c)]

    assert SPECS["router"].completed_outputs(config("router")) == [
        {"name": "ARM", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "TARGET", "data_type": "TYPE_STRING", "dims": [1]}]
    assert names(config("router", outputs=["ARM"])) == ["TARGET"]  # a declared one is the config's
    assert names(config("async_queue", mode="submit")) == ["JOB_ID"]
    assert names(config("async_queue", mode="result")) == []
    assert SPECS["time_difference"].completed_outputs(config("time_difference", max_batch_size=0)) == [
        {"name": "JOB_ID", "data_type": "TYPE_STRING", "dims": [-1, 1]}]  # one per row, no batch dimension
    assert SPECS["time_difference"].completed_outputs(config("time_difference", 0, decoupled=True)) == [
        {"name": "STAGE", "data_type": "TYPE_STRING", "dims": [1]}]  # one per response


def test_a_spec_is_found_beside_its_model_and_must_be_of_its_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.py").write_text("")
    with pytest.raises(ImportError, match="has no spec.py"):
        load_spec(folder)
    (folder / "spec.py").write_text('from pattern_kernel.spec import BackendSpec\nSPEC = BackendSpec("other", "x")\n')
    with pytest.raises(ImportError, match="declares the spec of 'other', not of its folder 'mine'"):
        load_spec(folder)
    (folder / "spec.py").write_text('from pattern_kernel.spec import BackendSpec\nSPEC = BackendSpec("mine", "x")\n')
    assert list(load_specs(tmp_path)) == ["mine"] and load_spec(folder).summary == "x"


def test_references_parse_with_the_kernel_parsers():
    params = {"targets": "iris:1,iris_slow", "target_model": "iris", "target_version": "2",
              "steps": '[{"name": "a", "model": "iris", "version": 1}]'}
    assert Reference("targets", "targets").models(params) == [("parameters.targets", "iris", 1),
                                                              ("parameters.targets", "iris_slow", -1)]
    assert Reference("target_model", version="target_version").models(params) == [
        ("parameters.target_model", "iris", 2)]
    assert Reference("steps", "steps").models(params) == [("parameters.steps[0] (a)", "iris", 1)]
    with pytest.raises(ValueError, match=r"^parameters.target_version: 'x' is not an integer version"):
        Reference("target_model", version="target_version").models({**params, "target_version": "x"})
    with pytest.raises(ValueError, match=r"^parameters.steps: parameter 'steps' must be a JSON list"):
        Reference("steps", "steps").models({"steps": '{"name": "a"}'})


def test_markdown_table_and_the_docs_tables_match_the_specs():
    table = markdown_table(SPECS["router"])
    assert "| `mode` | str | `split` | split \\| shadow \\| condition |" in table
    assert "| `ARM` | STRING | [1] |" in table
    assert spec_docs.stale() == [], "run `python -m pattern_tools.spec_docs --write`"
    assert set(spec_docs.tables()) == set(SPECS)


def test_to_config_rank():
    assert to_config_rank(np.arange(3), (1,), True).shape == (3, 1)
    assert to_config_rank(np.zeros((3, 4)), (-1, 4), False).shape == (3, 4)
    assert to_config_rank(np.zeros(6), (-1, 2), False).shape == (3, 2)
    assert to_config_rank(np.zeros((2, 5)), (-1, -1), False).shape == (2, 5)  # two wildcards: as it is
    with pytest.raises(ValueError):
        to_config_rank(np.zeros(3), (2,), True)
