"""End-to-end: each pattern through the client SDK against the real tritonserver. The tests marked
`container` run against the compose stack too (through its TLS gateway: tests/e2e/conftest.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pattern_runtime import paths
from pattern_runtime.datasets import digits as digits_export
from pattern_runtime.datasets import iris as iris_export
from pattern_runtime.processes import wait_for
from pattern_tools.demo import TEXT_SAMPLES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def iris_heldout():
    _, x_test, _, y_test, _ = iris_export.load_split()
    return x_test.astype(np.float32), y_test


@pytest.fixture(scope="module")
def digit_images():
    x_test, y_test = digits_export.load_test_split()
    count = 30  # one request each below max_batch_size (32)
    return x_test[:count], [digits_export.encode_digit_png(x) for x in x_test[:count]], y_test[:count]


@pytest.mark.container
def test_repository_index_has_every_model_ready(client, target):
    ready = {(m.name, m.version) for m in client.models() if m.state == "READY"}
    expected = {
        ("iris", "1"), ("iris", "2"), ("iris_web_single", "1"), ("digits", "1"),
        ("digits_bls", "1"), ("digits_preprocess", "1"), ("digits_classifier", "1"),
        ("text_tokenizer", "1"), ("text_encoder", "1"), ("text_classifier", "1"),
        ("text_classify", "1"),
    }
    assert expected <= ready
    # the test repository (model_repository_test/) is served from a checkout, never from an image
    assert (("heavy_mlp", "1") in ready) == (target.name == "embedded")


@pytest.mark.container
def test_synchronous_serves_both_versions_and_latest_by_default(client, iris_heldout):
    x, y = iris_heldout
    v1 = client.predict("synchronous", x, version=1)
    v2 = client.predict("synchronous", x, version=2)
    latest = client.predict("synchronous", x)
    assert {p.version for p in v1} == {"1"} and {p.version for p in v2} == {"2"}
    assert {p.version for p in latest} == {"2"}
    scores_v1 = np.stack([p.scores for p in v1])
    scores_v2 = np.stack([p.scores for p in v2])
    assert not np.allclose(scores_v1, scores_v2, atol=1e-3), "v1 and v2 are different models"
    for predictions in (v1, v2):
        accuracy = np.mean([p.class_id == t for p, t in zip(predictions, y, strict=True)])
        assert accuracy >= 0.9
        assert all(abs(p.scores.sum() - 1) < 1e-4 for p in predictions)


@pytest.mark.container
def test_web_single_agrees_with_synchronous_latest(client, iris_heldout):
    x, _ = iris_heldout
    web = client.predict("web_single", x)
    direct = client.predict("synchronous", x)
    assert [p.class_id for p in web] == [p.class_id for p in direct]
    assert [p.label for p in web] == [p.label for p in direct]
    np.testing.assert_allclose(
        np.stack([p.scores for p in web]), np.stack([p.scores for p in direct]), atol=1e-6
    )


@pytest.mark.container
@pytest.mark.parametrize("form", ["ensemble", "bls"])
def test_prep_pred_recognises_heldout_digits(client, digit_images, form):
    _, pngs, truth = digit_images
    labels = [client.prep_pred(png, form=form).class_id for png in pngs]
    assert np.mean(np.array(labels) == truth) >= 0.9


@pytest.mark.container
def test_prep_pred_preprocessing_reproduces_the_training_tensor(client, digit_images):
    """Decoding the PNG on the server gives the classifier the digit's 0..16 values (up to the
    8-bit quantisation of the PNG), so ensemble, BLS and the bare classifier agree row by row."""
    pixels, pngs, _ = digit_images
    quantised = (np.rint(pixels * 255 / 16) * 16 / 255).astype(np.float32)
    bare = client.client.infer(
        "digits_classifier", [_fp32_input(client, "PIXELS", quantised)]
    ).as_numpy("PROBABILITIES")
    ensemble = np.stack([p.scores for p in client.predict("prep_pred", pngs)])
    bls = np.stack([p.scores for p in client.predict("prep_pred_bls", pngs)])
    np.testing.assert_allclose(ensemble, bare, atol=1e-5)
    np.testing.assert_allclose(bls, bare, atol=1e-5)


def _fp32_input(client, name, array):
    tensor = client._mod.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def test_triton_names_classes_from_the_exported_labels_file(client, iris_heldout, digit_images):
    """The classification extension: Triton answers PROBABILITIES as "score:index:name" rows, the
    names read from labels.txt by iris itself and, for the digits ensemble, taken from its
    classifier step's; the SDK names the same classes."""
    x, _ = iris_heldout
    _, pngs, _ = digit_images
    images = client._mod.InferInput("IMAGE", [3, 1], "BYTES")
    images.set_data_from_numpy(np.array(pngs[:3], dtype=np.object_).reshape(3, 1))
    for model, pattern, tensor, rows in (("iris", "synchronous", _fp32_input(client, "FEATURES", x[:3]), x[:3]),
                                         ("digits", "prep_pred", images, pngs[:3])):
        scores = client._mod.InferRequestedOutput("PROBABILITIES", class_count=2)
        top = client.client.infer(model, [tensor], outputs=[scores]).as_numpy("PROBABILITIES")
        source = "digits_classifier" if model == "digits" else model
        names = (paths.model_folder(source) / "labels.txt").read_text().splitlines()
        for row, p in zip(top, client.predict(pattern, rows), strict=True):
            _, index, name = row[0].decode().split(":")  # the highest score first
            assert int(index) == p.class_id and name == names[p.class_id] == p.label


def test_serial_ensemble_classifies_text_topics(client):
    predictions = client.predict("serial", [text for text, _ in TEXT_SAMPLES])
    assert [p.label for p in predictions] == [topic for _, topic in TEXT_SAMPLES]


@pytest.mark.container
def test_grpc_gives_the_same_answers_as_http(client, grpc_client, iris_heldout, digit_images):
    x, _ = iris_heldout
    _, pngs, _ = digit_images
    for pattern, value in (("web_single", x[:5]), ("synchronous", x[:5]), ("prep_pred", pngs[:3])):
        over_http = client.predict(pattern, value)
        over_grpc = grpc_client.predict(pattern, value)
        assert [p.class_id for p in over_grpc] == [p.class_id for p in over_http]
        assert {p.version for p in over_grpc} == {p.version for p in over_http}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_asyncio_client_concurrent_requests_are_batched_and_correct(
    client, async_client_factory, own_model, iris_heldout, protocol
):
    x, _ = iris_heldout
    model = own_model("iris", version=1)  # nothing else in the session calls it
    expected = [p.class_id for p in client.predict("synchronous", x, model=model)]
    # the server counts a request after its response is sent: wait for the count to settle
    before = _settled_stats(client, model, len(x))
    assert before[0] == len(x)

    async def run():
        async with async_client_factory(protocol) as aclient:
            return await asyncio.gather(*(aclient.predict("synchronous", row, model=model) for row in x))

    answers = [p for (p,) in asyncio.run(run())]
    assert [p.class_id for p in answers] == expected
    inferences, executions = (a - b for a, b in zip(_settled_stats(client, model, 2 * len(x)), before, strict=True))
    assert inferences == len(x)
    assert executions < inferences, "the dynamic batcher merged concurrent requests"


def _settled_stats(client, model: str, expected_inferences: int) -> tuple[int, int]:
    """(inference_count, execution_count) of `model` once inference_count reaches the expected
    value (or 30 s have passed: then the caller's assertion shows the difference)."""
    def read() -> tuple[int, int]:
        stats = client.client.get_inference_statistics(model)["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]

    wait_for(lambda: read()[0] >= expected_inferences, timeout=30, interval=0.1)
    return read()
