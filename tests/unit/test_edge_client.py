"""The edge client's decisions (local answer, fallback to the server on low confidence or a
missing bundle, a failing server) on a tiny bundle, and that its preprocessing is the server's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_repo_check import classifier_onnx

from pattern_kernel import images, text
from pattern_runtime import edge as edge_mod
from pattern_runtime.datasets.digits import encode_digit_png
from pattern_runtime.edge import EdgeClient, EdgeModel, EdgeUnavailable
from triton_patterns.client import PatternError, Prediction

PREP = {"width": 8, "height": 8, "scale_max": 16.0, "invert": False}


@pytest.fixture()
def bundle(tmp_path):
    """A digits bundle whose model scores class 0 at ~0.1 for blank images (all classes equal)
    and is sure of class 0 for bright ones (first column of W large)."""
    folder = tmp_path / "digits_int8" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(classifier_onnx(64, 10, "PIXELS", first_class_weight=1.0))
    (folder / "manifest.json").write_text(json.dumps({
        "model": "digits_int8", "version": 1, "labels": [str(i) for i in range(10)],
        "edge": {"task": "digits", "preprocess": PREP, "files": {}}}))
    return folder


class FakeServer:
    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def predict(self, pattern, values):
        self.calls.append((pattern, len(values)))
        if self.fail:
            raise PatternError("digits", "server down")
        return [Prediction("digits", "1", "7", 7, np.eye(10)[7], 1.0, {}) for _ in values]


BLANK, BRIGHT = encode_digit_png(np.zeros(64)), encode_digit_png(np.full(64, 16.0))


def test_preprocessing_is_the_servers_code(bundle):
    assert edge_mod.decode_image is images.decode_image
    assert edge_mod.tokenize is text.tokenize and edge_mod.load_tokenizer is text.load_tokenizer
    model = EdgeModel(bundle)
    expected = images.decode_image("IMAGE", BRIGHT, 8, 8, 16.0, False)
    np.testing.assert_array_equal(model.preprocess([BRIGHT])["PIXELS"][0], expected)


def test_confident_answers_stay_on_the_device(bundle):
    server = FakeServer()
    client = EdgeClient("digits", bundle=bundle, server=server, min_confidence=0.9)
    p = client.predict(BRIGHT)
    assert (p.source, p.label, p.model) == ("edge", "0", "digits_int8") and p.scores.max() > 0.9
    assert server.calls == [] and client.counts == {"edge": 1}


def test_unsure_answers_go_to_the_server(bundle):
    server = FakeServer()
    client = EdgeClient("digits", bundle=bundle, server=server, min_confidence=0.9)
    got = client.predict_batch([BRIGHT, BLANK, BLANK])
    assert [p.source for p in got] == ["edge", "server", "server"] and got[1].label == "7"
    assert server.calls == [("prep_pred", 2)] and client.counts == {"edge": 1, "server": 2}


def test_a_failing_server_leaves_the_local_answer_flagged(bundle):
    client = EdgeClient("digits", bundle=bundle, server=FakeServer(fail=True), min_confidence=0.9)
    p = client.predict(BLANK)
    assert p.source == "edge" and "server down" in p._text("FALLBACK_ERROR")
    assert client.counts["fallback_errors"] == 1


def test_bundle_found_by_task_in_the_edge_directory(bundle):
    client = EdgeClient("digits", edge_dir=bundle.parent.parent)
    assert client.local is not None and client.local.folder == bundle


def test_missing_bundle_uses_the_server(tmp_path):
    server = FakeServer()
    client = EdgeClient("digits", edge_dir=tmp_path, server=server)
    assert client.local is None and "run `make models`" in client.local_error
    assert client.predict(BRIGHT).source == "server"
    with pytest.raises(EdgeUnavailable, match="no server to ask"):
        EdgeClient("digits", edge_dir=tmp_path).predict(BRIGHT)
    with pytest.raises(EdgeUnavailable, match="server down"):
        EdgeClient("digits", edge_dir=tmp_path, server=FakeServer(fail=True)).predict(BRIGHT)


def test_incomplete_bundle_is_missing(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["edge"]["files"] = {"tokenizer.json": "0" * 64}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    client = EdgeClient("digits", bundle=bundle, server=FakeServer())
    assert client.local is None and "missing tokenizer.json" in client.local_error


def test_no_server_returns_unsure_local_answers(bundle):
    p = EdgeClient("digits", bundle=bundle, min_confidence=0.99).predict(BLANK)
    assert p.source == "edge" and p.scores.max() < 0.2
