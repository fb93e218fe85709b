"""Pieces a new user relies on: the shipped sample image, the default addresses taken
from the environment, valid perf_analyzer input data for every model, and the doc-block parser
of tests/e2e/test_new_user.py (which runs the README's and pattern pages' commands)."""

from __future__ import annotations

import base64
import struct

import pytest

from pattern_runtime import paths
from pattern_runtime.datasets.digits import encode_digit_png, load_test_split
from pattern_runtime.serve_models import repository_models
from pattern_tools.cli import parser
from pattern_tools.perf import input_data, model_config, sample_requests
from triton_patterns import endpoints


def test_sample_digit_is_the_first_held_out_digit_as_the_exporter_encodes_it():
    images, labels = load_test_split()
    assert (paths.PROJECT_ROOT / "docs/samples/digit.png").read_bytes() == encode_digit_png(images[0])
    assert labels[0] == 2  # what README.md and prep_pred.md say it shows


def test_default_addresses_come_from_the_environment(monkeypatch):
    for name in (endpoints.URL_ENV, endpoints.GRPC_URL_ENV, endpoints.METRICS_URL_ENV, endpoints.REDIS_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    assert (endpoints.server_url(), endpoints.server_url("grpc"), endpoints.metrics_url(), endpoints.redis_url()) == \
        ("127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv(endpoints.URL_ENV, "h:1")
    monkeypatch.setenv(endpoints.GRPC_URL_ENV, "h:2")
    assert (endpoints.server_url("http"), endpoints.server_url("grpc")) == ("h:1", "h:2")
    from triton_patterns.client import PatternClient

    with PatternClient(protocol="grpc") as client:
        assert client.url == "h:2"


def test_serve_has_redis_options():
    args = parser().parse_args(["serve", "--redis-port", "0", "--data-store", "/tmp/x.sqlite"])
    assert (args.redis_url, args.redis_port, args.data_store) == (None, 0, "/tmp/x.sqlite")
    assert parser().parse_args(["serve", "--redis-url", "redis://r:1/0"]).redis_url == "redis://r:1/0"


MODELS = repository_models()  # both of the project's repositories


@pytest.mark.parametrize("model", [m for m in MODELS if m != "async_result"])
def test_every_model_gets_valid_requests_in_its_declared_shape(model):
    config = model_config(model)
    batch = [1] if int(config.get("max_batch_size", 0)) > 0 else []
    for request in sample_requests(model, 2):
        assert sorted(request) == sorted(i["name"] for i in config["input"])
        for spec in config["input"]:
            dims = [int(d) for d in spec["dims"]]
            shape = request[spec["name"]].shape
            assert len(shape) == len(batch) + len(dims)
            assert all(d in (-1, s) for d, s in zip(batch + dims, shape, strict=True))
    assert len(input_data(model, 2)["data"]) == 2


def test_perf_input_data_of_an_image_model_is_length_prefixed_png():
    raw = base64.b64decode(input_data("digits", 1)["data"][0]["IMAGE"]["b64"])
    (length,) = struct.unpack("<I", raw[:4])
    assert raw[4:8] == b"\x89PNG" and len(raw) == 4 + length


def test_a_model_without_sample_data_is_named():
    with pytest.raises(ValueError, match="async_result: no sample data for input 'JOB_ID'"):
        sample_requests("async_result")
    with pytest.raises(ValueError, match="no model 'nope'"):
        model_config("nope")


def test_doc_blocks_parser_reads_skip_reasons_and_indented_fences(tmp_path):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("doc_commands", paths.PROJECT_ROOT / "tests/e2e/test_new_user.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    shell_blocks = module.shell_blocks
    doc = tmp_path / "x.md"
    doc.write_text("text\n<!-- doc-test: skip needs Docker -->\n```bash\ndocker run x\n```\n"
                   "- item\n\n  ```bash\n  echo a \\\n    b\n  ```\n```python\nprint(1)\n```\n")
    blocks = shell_blocks(doc)
    assert [(b.line, b.text, b.skip) for b in blocks] == [
        (3, "docker run x", "needs Docker"), (8, "echo a \\\n  b", None)]


@pytest.mark.parametrize("model", ["digits_by_id", "digits_by_id_prep"])
def test_serve_seeds_the_store_the_data_cache_models_read(model):
    from pattern_runtime.services import DEFAULT_STORE
    from pattern_tools.repo_check import parse_config_text

    config = parse_config_text((paths.MODEL_REPOSITORY / model / "config.pbtxt").read_text())
    assert config.parameters["store_path"].string_value == DEFAULT_STORE
