"""perf_analyzer input files for every benchmarked model, and one short real perf_analyzer run."""

from __future__ import annotations

import base64
import csv
import json
import struct
import subprocess

import pytest

from loadtest import perf

pytestmark = pytest.mark.e2e


def test_input_files_cover_every_model_in_perf_analyzer_format(tmp_path):
    files = perf.write_inputs(tmp_path)
    assert set(files) == set(perf.MODELS)
    image = json.loads(files["digits"].read_text())["data"][0]["IMAGE"]["b64"]
    raw = base64.b64decode(image)
    (length,) = struct.unpack("<I", raw[:4])
    assert raw[4:8] == b"\x89PNG" and len(raw) == 4 + length
    assert len(json.loads(files["heavy_mlp"].read_text())["data"][0]["INPUT"]) == 512


def test_perf_analyzer_runs_against_the_embedded_server(tmp_path):
    binary = perf.perf_analyzer_command("iris", "x", tmp_path, tmp_path, "1", 1)[0]
    probe = subprocess.run([binary, "--help"], env=perf.perf_analyzer_env(), capture_output=True, text=True)
    if "error while loading shared libraries" in probe.stderr:
        pytest.skip(f"perf_analyzer cannot start here: {probe.stderr.strip()} (apt-get install libb64-0d)")
    csvs = perf.run(["iris", "digits_bls"], concurrency="1:2:1", interval_ms=500, out=tmp_path)
    for model, path in csvs.items():
        rows = list(csv.DictReader(path.open()))
        assert rows and float(rows[0]["Inferences/Second"]) > 0, model
