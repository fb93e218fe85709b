"""`triton-patterns trace MODEL INPUT`: send one traced request and draw its waterfall.

Through Triton's trace API (an admin API: the admin key is sent) it turns tracing on for MODEL
alone, for one request (level TIMESTAMPS, rate 1, count 1, written as soon as it is done), sends
the request with a request id of its own, puts the model's trace settings back, and reads the
request's trace from the server's trace file (so it runs on the server's machine: the launcher's
servers trace in triton mode to a file beside their log). It prints the waterfall as text,
writes it as a PNG, and marks the failed steps (`waterfall.mark_failures`).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from pattern_runtime import paths
from pattern_tools import waterfall
from triton_patterns.credentials import authorize

ONE_TRACE = {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "1", "log_frequency": "1"}
GLOBAL = {name: None for name in ONE_TRACE}  # null: the model follows the server's settings again
JSON_OUTPUTS = ("STEPS", "REPORT")  # the pattern backends' step reports (serial, parallel)


class TraceError(RuntimeError):
    pass


def _input(metadata: dict, raw: str):
    first = metadata["inputs"][0]
    if first["datatype"] == "BYTES":
        data = Path(raw).read_bytes() if Path(raw).is_file() else raw.encode()
        array = np.array([[data]], dtype=np.object_)
    else:
        try:
            array = np.array([[float(x) for x in raw.split(",")]], dtype=np.float32)
        except ValueError:
            raise TraceError(f"input {first['name']} ({first['datatype']}): expected comma-separated numbers, "
                             f"got {raw!r}") from None
    tensor = http.InferInput(first["name"], list(array.shape), first["datatype"])
    tensor.set_data_from_numpy(array)
    return tensor


def _json_outputs(result) -> dict:
    outputs = {}
    for name in JSON_OUTPUTS:
        value = result.as_numpy(name)
        if value is not None:
            item = value.reshape(-1)[0]
            outputs[name] = json.loads(item.decode() if isinstance(item, bytes) else item)
    return outputs


def trace_request(url: str, model: str, raw_input: str, version: str = "", parameters: dict | None = None,
                  timeout_s: float = 30.0) -> tuple[waterfall.Span, str | None, dict]:
    """Send one traced request; its trace tree (failures marked), its error (None if it
    succeeded) and its step reports."""
    client = authorize(http.InferenceServerClient(url, network_timeout=max(timeout_s, 60.0)))
    try:
        settings = client.get_trace_settings()
        if settings.get("trace_mode", "triton") != "triton":
            raise TraceError(f"the server traces in {settings['trace_mode']} mode: its traces go to its OTLP endpoint "
                             "(look there); this command reads triton mode's trace file")
        trace_file = settings.get("trace_file", "")
        if not trace_file or not Path(trace_file).parent.is_dir():
            raise TraceError(f"the server's trace file {trace_file!r} is not on this machine: run the command there")
        tensor = _input(client.get_model_metadata(model, version), raw_input)
        request_id = f"trace-{uuid.uuid4().hex[:12]}"
        client.update_trace_settings(model, ONE_TRACE)
        try:
            error, outputs = None, {}
            try:
                result = client.infer(model, [tensor], model_version=version, request_id=request_id,
                                      parameters=parameters or None)
                outputs = _json_outputs(result)
            except InferenceServerException as exc:
                error = exc.message()
        finally:
            client.update_trace_settings(model, GLOBAL)
    finally:
        client.close()
    deadline = time.monotonic() + timeout_s
    while (root := waterfall.trace_of(request_id, glob.glob(trace_file + "*"))) is None:
        if time.monotonic() > deadline:
            raise TraceError(f"no trace of request {request_id} in {trace_file}.* after {timeout_s:.0f} s (another "
                             f"request to {model} may have taken its one trace: try again)")
        time.sleep(0.1)
    waterfall.mark_failures(root, error, outputs)
    return root, error, outputs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the model to call, e.g. text_classify, text_classify_bls, iris_parallel, iris_shadow")
    p.add_argument("value", help="its input: comma-separated numbers, text, or a file path for bytes")
    p.add_argument("--url", default=None, help="server HTTP address (default $TRITON_PATTERNS_URL or 127.0.0.1:8000)")
    p.add_argument("--model-version", default="", help="model version (default: the server's policy)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="request parameter (repeatable)")
    p.add_argument("--png", type=Path, default=None,
                   help="where to write the picture (default reports/traces/<model>.png)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the trace (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    from triton_patterns.endpoints import server_url

    try:
        root, error, _ = trace_request(args.url or server_url("http"), args.model, args.value, args.model_version,
                                       dict(p.split("=", 1) for p in args.param), args.timeout)
    except (TraceError, InferenceServerException) as exc:
        print(f"trace: {exc}", file=sys.stderr)
        return 1
    print(waterfall.text(root))
    picture = waterfall.png(root, args.png or paths.REPORTS / "traces" / f"{args.model}.png")
    print(f"\nwaterfall: {picture}" + (f"\nthe request failed: {error}" if error else ""))
    return 2 if error else 0
