"""Unit tests for the export package: manifests/idempotency (on iris), parity, PNG encoding, text data."""
from __future__ import annotations

import dataclasses
import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from export import iris
from export import manifest as mf
from export.__main__ import main, run
from pattern_runtime.datasets import digits as digits_data
from pattern_runtime.datasets.text import TOPICS, generate_text_dataset

IRIS_LABELS = ["iris v1", "iris v2", "iris_web_single v1"]


def _manifest(repo, name, version):
    return json.loads((repo / name / str(version) / "manifest.json").read_text())


def test_iris_export_skip_and_reexport(tmp_path, capsys):
    specs = iris.specs(tmp_path)
    assert run(specs, tmp_path) == dict.fromkeys(IRIS_LABELS, "exported")
    for name, version in [("iris", 1), ("iris", 2), ("iris_web_single", 1)]:
        m = _manifest(tmp_path, name, version)
        assert m["sha256"] == mf.sha256_file(tmp_path / name / str(version) / "model.onnx")
        assert m["heldout"]["accuracy"] > 0.85
        assert m["onnx"]["inputs"] == [{"name": "FEATURES", "dtype": "tensor(float)", "shape": [-1, 4]}]
        assert [o["name"] for o in m["onnx"]["outputs"]] == ["LABEL", "PROBABILITIES"]
        assert m["parity"]["max_abs_diff"] < 1e-5
    assert (tmp_path / "iris" / "labels.txt").read_text() == "setosa\nversicolor\nvirginica\n"
    web = _manifest(tmp_path, "iris_web_single", 1)
    assert web["same_as"]["sha256"] == _manifest(tmp_path, "iris", 2)["sha256"] == web["sha256"]
    assert [r["min"] < r["max"] for r in web["feature_ranges"]] == [True] * 4

    capsys.readouterr()
    assert run(specs, tmp_path) == dict.fromkeys(IRIS_LABELS, "skipped")
    assert "iris v1: up to date, skipped" in capsys.readouterr().out

    # a modified artifact no longer matches its manifest: only that model is re-exported
    onnx_v1 = tmp_path / "iris" / "1" / "model.onnx"
    onnx_v1.write_bytes(onnx_v1.read_bytes() + b"\0")
    assert run(specs, tmp_path) == {"iris v1": "exported", "iris v2": "skipped", "iris_web_single v1": "skipped"}
    assert mf.sha256_file(onnx_v1) == _manifest(tmp_path, "iris", 1)["sha256"]

    # changed parameters change the fingerprint
    changed = [dataclasses.replace(s, params={**s.params, "note": "x"}) if s.label == "iris v1" else s for s in specs]
    assert run(changed, tmp_path)["iris v1"] == "exported"

    assert run(specs, tmp_path, force=True) == dict.fromkeys(IRIS_LABELS, "exported")


def test_only_selects_model_and_its_dependencies(tmp_path):
    assert main(["--only", "iris_web_single", "--repository", str(tmp_path)]) == 0
    assert (tmp_path / "iris" / "2" / "manifest.json").is_file()
    assert (tmp_path / "iris_web_single" / "1" / "model.onnx").is_file()
    assert not (tmp_path / "iris" / "1").exists()


def test_missing_dependency_names_the_model(tmp_path):
    web = [s for s in iris.specs(tmp_path) if s.name == "iris_web_single"][0]
    with pytest.raises(mf.ExportError, match="iris_web_single v1: needs iris v2"):
        mf.run_spec(web, tmp_path)


def test_check_parity_within_and_beyond_tolerance():
    a = np.array([[0.1, 0.9], [0.5, 0.5]])
    rec = mf.check_parity("m v1", {"P": (a + 1e-7, a, 1e-6, 0.0)}, reference="ref")
    assert rec["max_abs_diff"] == pytest.approx(1e-7, rel=1e-3)
    assert rec["reference"] == "ref"
    with pytest.raises(mf.ParityError, match=r"m v1: parity check against ref failed: P: max abs diff 0\.001"):
        mf.check_parity("m v1", {"P": (a + 1e-3, a, 1e-6, 0.0)}, reference="ref")
    with pytest.raises(mf.ParityError, match="LABEL"):  # exact outputs, one label off
        mf.check_parity("m v1", {"LABEL": (np.array([0, 1, 2]), np.array([0, 1, 1]), 0.0, 0.0)}, reference="ref")
    with pytest.raises(mf.ParityError, match="shape"):
        mf.check_parity("m v1", {"P": (a, a[:1], 1.0, 0.0)}, reference="ref")
    # relative tolerance: 1e-4 relative error passes rtol 1e-3, 1e-2 does not
    big = np.array([1000.0, -2000.0])
    mf.check_parity("m v1", {"P": (big * (1 + 1e-4), big, 0.0, 1e-3)}, reference="ref")
    with pytest.raises(mf.ParityError):
        mf.check_parity("m v1", {"P": (big * (1 + 1e-2), big, 0.0, 1e-3)}, reference="ref")


def test_parity_failure_exits_nonzero_naming_model(tmp_path, monkeypatch, capsys):
    def bad_build(log):
        mf.check_parity("bad_model v3", {"OUT": (np.ones(3), np.zeros(3), 1e-5, 0.0)}, reference="numpy")
        raise AssertionError("unreachable")

    spec = mf.Spec("bad_model", 3, "bad", bad_build, {}, (iris,), ("numpy",))
    monkeypatch.setattr("export.__main__.all_specs", lambda repo: [spec])
    assert main(["--repository", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "bad_model v3" in err and "parity check" in err
    assert not (tmp_path / "bad_model" / "3" / "model.onnx").exists()


@pytest.mark.parametrize("scale", [1, 4, 7])
def test_encode_digit_png_round_trips_through_box_downsampling(scale):
    X_test, y_test = digits_data.load_test_split()
    assert X_test.shape == (450, 64) and len(y_test) == 450
    for row in X_test[:25]:
        png = digits_data.encode_digit_png(row.reshape(8, 8), scale=scale)
        img = Image.open(io.BytesIO(png))
        assert (img.format, img.mode, img.size) == ("PNG", "L", (8 * scale, 8 * scale))
        small = img.convert("L").resize((8, 8), Image.BOX)
        back = np.rint(np.asarray(small, dtype=np.float64) * 16.0 / 255.0)
        np.testing.assert_array_equal(back, row.reshape(8, 8))


def test_encode_digit_png_rejects_out_of_range():
    with pytest.raises(ValueError):
        digits_data.encode_digit_png(np.full((8, 8), 17.0))


def test_generate_text_dataset_deterministic_and_balanced():
    rows = generate_text_dataset(seed=0)
    assert rows == generate_text_dataset(seed=0)
    assert rows != generate_text_dataset(seed=1)
    counts = Counter(label for _, label in rows)
    assert TOPICS == ("sports", "technology", "food", "weather")
    assert set(counts) == set(TOPICS) and len(set(counts.values())) == 1 and counts["sports"] >= 150
    texts = [t for t, _ in rows]
    assert len(set(texts)) == len(texts)
    assert all(isinstance(t, str) and t[0].isupper() and "{" not in t for t in texts)
