"""Readiness probe on a real inference (Kubernetes exec probe, compose healthcheck).

    python3 -m pattern_kernel.probe [--url 127.0.0.1:8000] [--model iris] [--data 5.1,3.5,1.4,0.2]
                                     [--expect LABEL=0] [--timeout 2]

The rule (the same for the Kubernetes probes, the compose healthcheck and the image's
HEALTHCHECK): the server is ready when `/v2/health/ready` is 200 and every `--model` answers a
real inference right. The server runs with `--strict-readiness=false`, so `/v2/health/ready` is
200 while it serves (not while it starts or shuts down) whatever one model is doing: a model
being reloaded (the stub watchdog's reload of a model whose stub died) does not take the whole
server out of a load balancer. And `/v2/models/<m>/ready` can stay 200 while a model's Python
stub is dead (server #8604, #7230; fixed upstream in 2.64), so each `--model` gets one KServe v2
JSON request (FP32 row `--data` as input `--input`), checked: every output there and finite, and
`--expect` NAME=VALUE (default: iris's setosa row is class 0). Exit 0 when all is right, else 1
with the reasons on stderr. Sends the API key ($TRITON_PATTERNS_API_KEY) when set. Stdlib only:
it runs in the server image, which has no tritonclient.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.error
import urllib.request

from pattern_kernel.access import API_HEADER, API_KEY_ENV


def _api_key_header() -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV)
    return {API_HEADER: key} if key else {}


SETOSA = "5.1,3.5,1.4,0.2"


def server_ready(url: str, timeout: float) -> str | None:
    """None if GET /v2/health/ready is 200, else why not."""
    request = urllib.request.Request(f"http://{url}/v2/health/ready", headers=_api_key_header())
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        return f"/v2/health/ready is HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return f"{type(err).__name__}: {err}"


def infer_once(url: str, model: str, input_name: str, row: list[float], timeout: float) -> dict[str, list]:
    """POST /v2/models/<model>/infer with one FP32 row; the outputs by name (flattened data)."""
    body = {"inputs": [{"name": input_name, "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    request = urllib.request.Request(
        f"http://{url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **_api_key_header()},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    return {o["name"]: o.get("data", []) for o in answer.get("outputs", [])}


def check(outputs: dict[str, list], expect: dict[str, str]) -> str | None:
    """None if the answer is right, else what is wrong."""
    if not outputs:
        return "no outputs"
    for name, data in outputs.items():
        numbers = [v for v in data if isinstance(v, (int, float))]
        if any(not math.isfinite(v) for v in numbers):
            return f"output {name} is not finite: {data}"
    for name, value in expect.items():
        if name not in outputs:
            return f"no output {name} (outputs: {', '.join(outputs)})"
        got = outputs[name][0] if outputs[name] else None
        if str(got) != value:
            return f"{name} = {got}, expected {value}"
    return None


def probe(url: str, models: list[str], input_name: str, row: list[float], expect: dict[str, str],
          timeout: float) -> list[str]:
    """The failures: the server's, or one line per model that did not answer right ([] = ready)."""
    not_ready = server_ready(url, timeout)
    if not_ready:
        return [f"server: {not_ready}"]
    failures = []
    for model in models:
        try:
            wrong = check(infer_once(url, model, input_name, row, timeout), expect)
        except urllib.error.HTTPError as err:
            wrong = f"HTTP {err.code}: {err.read().decode(errors='replace')[:200]}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            wrong = f"{type(err).__name__}: {err}"
        if wrong:
            failures.append(f"{model}: {wrong}")
    return failures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m pattern_kernel.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="127.0.0.1:8000", help="HTTP host:port (default %(default)s)")
    p.add_argument("--model", action="append", help="model to infer with (repeatable; default iris)")
    p.add_argument("--input", default="FEATURES", help="input name (default %(default)s)")
    p.add_argument("--data", default=SETOSA, help="comma-separated FP32 row (default %(default)s)")
    p.add_argument("--expect", action="append", help="NAME=VALUE the first element of an output must equal "
                                                     "(repeatable; default LABEL=0)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per request (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    expect = dict(e.split("=", 1) for e in (args.expect or ["LABEL=0"]))
    row = [float(x) for x in args.data.split(",")]
    failures = probe(args.url, args.model or ["iris"], args.input, row, expect, args.timeout)
    for line in failures:
        print(f"not ready: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
