"""Inference template end to end: `triton-patterns new` writes an ONNX model, a Python model, an
ensemble and two pattern models into a copy of the repository served by its own tritonserver
(explicit model-control mode, free ports); each is loaded through the repository API without a
restart and answers, and the smoke tests it generated pass against that server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pattern_runtime import paths
from pattern_runtime.datasets.digits import encode_digit_png, load_test_split
from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_settings import ServerSettings
from pattern_tools.cli import main as cli_main
from triton_patterns.client import PatternClient

pytestmark = pytest.mark.e2e
COPIED = ("iris", "digits_preprocess", "digits_classifier")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "model_repository"
    for name in COPIED:
        if name != "digits_preprocess" and not (paths.MODEL_REPOSITORY / name / "1" / "model.onnx").is_file():
            pytest.fail(f"{name} is not exported: run `make models` first")
        shutil.copytree(paths.MODEL_REPOSITORY / name, root / name)
    return root


@pytest.fixture(scope="module")
def server(repo):
    with TritonServer(ServerSettings(model_repository=repo, model_control_mode="explicit", load_models=["iris"],
                      cache_size_bytes=None)) as s:
        yield s


def new(server, repo, tests, *argv) -> None:
    rc = cli_main(["new", *argv, "--repository", str(repo), "--tests", str(tests), "--load", "--url", server.http_url])
    assert rc == 0


@pytest.mark.timeout(600)  # the generated tests' pytest has a 300-s deadline of its own
def test_new_models_load_without_restart_and_answer(server, repo, tmp_path, capsys):
    tests = tmp_path / "smoke"
    pid = server.pid
    new(server, repo, tests, "onnx", "iris_copy", "--file", str(repo / "iris" / "2" / "model.onnx"),
        "--labels", "setosa,versicolor,virginica")
    new(server, repo, tests, "python", "echo", "--input", "X:FP32:4", "--output", "Y:FP32:4")
    new(server, repo, tests, "ensemble", "digits_chain", "--step", "digits_preprocess", "--step", "digits_classifier")
    new(server, repo, tests, "pattern", "iris_serial", "--backend", "serial", "--target", "iris:1",
        "--target", "iris:2")
    new(server, repo, tests, "pattern", "iris_fanout", "--backend", "parallel", "--target", "iris:1",
        "--target", "iris:2")
    out = capsys.readouterr().out
    assert out.count("smoke check ok") == 5, out
    assert server.pid == pid and not server.deaths  # loaded into the running server, no restart

    cfg = (repo / "iris_copy" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in cfg and "max_batch_size: 8" in cfg
    assert '{ name: "LABEL", data_type: TYPE_INT64, dims: [ 1 ], reshape: { shape: [ ] } }' in cfg
    X, y = load_test_split()
    with PatternClient(server.http_url) as client:
        assert client.predict("synchronous", [6.7, 3.0, 5.2, 2.3], model="iris_copy")[0].label == "virginica"
        digits = client.predict("prep_pred", [encode_digit_png(px) for px in X[:32]], model="digits_chain")
        assert np.mean([p.class_id for p in digits] == y[:32]) > 0.9
        serial = client.predict("serial_bls", [6.0, 2.7, 5.1, 1.6], model="iris_serial")[0]
        assert [s["model"] for s in serial.report] == ["iris", "iris"] and serial.model == "iris_serial"
        fanout = client.predict("parallel", [6.7, 3.0, 5.2, 2.3], model="iris_fanout")[0]
        assert fanout.label == "virginica"
        echo = client.client.infer("echo", [_tensor("X", np.arange(4, dtype=np.float32).reshape(1, 4))])
        assert echo.as_numpy("Y").tolist() == [[0.0, 1.0, 2.0, 3.0]]
    assert sorted(p.name for p in tests.iterdir()) == sorted(
        f"test_model_{n}.py" for n in ("iris_copy", "echo", "digits_chain", "iris_serial", "iris_fanout"))

    # the generated smoke tests pass against this server
    env = {**os.environ, "TRITON_PATTERNS_URL": server.http_url}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "5 passed" in run.stdout, run.stdout + run.stderr


def _tensor(name, array):
    import tritonclient.http as httpclient

    t = httpclient.InferInput(name, list(array.shape), "FP32")
    t.set_data_from_numpy(array)
    return t


def test_a_model_that_fails_the_check_leaves_nothing_behind(server, repo, tmp_path, capsys):
    rc = cli_main(["new", "python", "broken", "--input", "X:FP32:0", "--output", "Y:FP32:4", "--repository", str(repo),
                   "--tests", str(tmp_path)])
    assert rc == 1 and not (repo / "broken").exists() and not list(tmp_path.iterdir())
    assert "input[0] (X).dims: [0]: each dimension must be > 0 or -1" in capsys.readouterr().out
    rc = cli_main(["new", "ensemble", "nope", "--step", "iris", "--step", "digits_classifier",
                   "--repository", str(repo), "--no-test"])
    assert rc == 1 and "step 1 (digits_classifier): no pipeline input or earlier output named PIXELS" in \
        capsys.readouterr().out
