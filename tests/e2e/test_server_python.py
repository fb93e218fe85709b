"""The stub's path holds only the kernel: a backend loaded by the embedded server, with the default
server virtualenv (.venv-server), finds pattern_kernel and none of the project's other packages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_env import server_venv
from pattern_runtime.server_settings import ServerSettings

pytestmark = pytest.mark.e2e

PACKAGES = ("pattern_kernel", "triton_patterns", "pattern_runtime", "pattern_jobs", "pattern_tools", "export",
            "loadtest", "tritonclient")

PROBE = f'''
import importlib.util, json, sys
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        found = {{name: importlib.util.find_spec(name) is not None for name in {PACKAGES!r}}}
        report = json.dumps({{"importable": found, "prefix": sys.prefix}}).encode()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", np.array([report], dtype=object))])
                for _ in requests]
'''

CONFIG = '''name: "probe"
backend: "import_probe"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_INT32, dims: [ 1 ] } ]
output [ { name: "REPORT", data_type: TYPE_STRING, dims: [ 1 ] } ]
'''


def test_a_backend_in_the_server_imports_only_the_kernel(tmp_path):
    (tmp_path / "backends" / "import_probe").mkdir(parents=True)
    (tmp_path / "backends" / "import_probe" / "model.py").write_text(PROBE)
    (tmp_path / "models" / "probe" / "1").mkdir(parents=True)
    (tmp_path / "models" / "probe" / "config.pbtxt").write_text(CONFIG)
    with TritonServer(ServerSettings(model_repository=tmp_path / "models", project_backends=tmp_path / "backends",
                      cache_size_bytes=None, restrict_admin_apis=False)) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        x = httpclient.InferInput("X", [1], "INT32")
        x.set_data_from_numpy(np.zeros(1, dtype=np.int32))
        report = json.loads(client.infer("probe", [x]).as_numpy("REPORT")[0])
        client.close()
    assert report["prefix"] == str(server_venv())
    assert report["importable"] == {name: name == "pattern_kernel" for name in PACKAGES}
