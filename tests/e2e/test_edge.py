"""Edge AI against the server on the held-out sets: the INT8 bundles, run locally with the server's
preprocessing, agree with the FP32 models served by Triton within the stated accuracy difference
(export/edge.py MAX_ACCURACY_DROP), and an unsure or missing local model falls back to the server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.edge import MAX_ACCURACY_DROP, text_heldout
from pattern_runtime.datasets.digits import encode_digit_png, load_test_split
from pattern_runtime.edge import BUNDLES, EDGE_DIR, EdgeClient

pytestmark = pytest.mark.e2e


def heldout(task: str):
    if task == "digits":
        X, y = load_test_split()
        return [encode_digit_png(px) for px in X], np.asarray(y)
    return text_heldout()


def manifest(task: str) -> dict:
    path = EDGE_DIR / BUNDLES[task] / "1" / "manifest.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make models`")
    return json.loads(path.read_text())


@pytest.mark.parametrize("task", ["digits", "text"])
def test_edge_agrees_with_server_on_heldout(task, client, tmp_path):
    values, y = heldout(task)
    stated = manifest(task)["metrics"]
    edge = EdgeClient(task, min_confidence=0.0)  # local answers only
    local = edge.predict_batch(values)
    assert {p.source for p in local} == {"edge"}
    server = EdgeClient(task, edge_dir=tmp_path, server=client).predict_batch(values)  # no bundle there
    assert {p.source for p in server} == {"server"}
    edge_ids = np.array([p.class_id for p in local])
    server_ids = np.array([p.class_id for p in server])
    edge_acc, server_acc = float(np.mean(edge_ids == y)), float(np.mean(server_ids == y))
    # the server serves the FP32 models: its held-out accuracy is the one measured at export
    assert server_acc == pytest.approx(stated["fp32_heldout_accuracy"], abs=1.5 / len(y))
    assert edge_acc == pytest.approx(stated["heldout_accuracy"], abs=1.5 / len(y))
    assert server_acc - edge_acc <= MAX_ACCURACY_DROP, (edge_acc, server_acc)
    # the same labels as the FP32 model at export: the agreement measured there holds against the server
    assert np.mean(edge_ids == server_ids) == pytest.approx(stated["label_agreement"], abs=1.5 / len(y))


def test_unsure_answers_come_from_the_server(client):
    values, y = heldout("digits")
    edge = EdgeClient("digits", server=client, min_confidence=0.99)
    got = edge.predict_batch(values)
    sources = {p.source for p in got}
    assert sources == {"edge", "server"}, "some held-out digits are below 0.99, most are above"
    for p in got:
        assert p.model == ("digits_int8" if p.source == "edge" else "digits")
        assert p.source == "server" or p.scores.max() >= 0.99
    assert edge.counts["server"] == sum(p.source == "server" for p in got)
    assert np.mean(np.array([p.class_id for p in got]) == y) > 0.95


def test_missing_bundle_falls_back_to_the_server(client, tmp_path):
    edge = EdgeClient("text", edge_dir=tmp_path, server=client)
    p = edge.predict("The striker scored twice in the second half.")
    assert (p.source, p.model, p.label) == ("server", "text_classify", "sports")
