"""End-to-end: the project's images and compose stack on this machine's container engine, as
`make image` and `make stack-up` build and start them (the session's `container_stack`, shared
with the `[container]` instances of the pattern tests: tests/e2e/conftest.py). Through the gateway
over TLS an ensemble, a BLS pipeline and a router answer right, and a JSON input declaring a
billion values is refused with a 400 naming it; a job submitted from here is completed by the
worker container and read back; Prometheus scrapes Triton and has loaded the alert rules of
deploy/prometheus/alerts.yml; the server image's own HEALTHCHECK command passes in the running
container; the model-in-image image, run alone with no volume, answers; a stop leaves no
container, volume or network behind (the last test of the run, as it stops the shared stack).

Images are cached by the engine between runs (base stand-ins once per machine). Skipped, with the
reason, only where no container engine can run."""

from __future__ import annotations

import json
import time
import urllib.request
from contextlib import contextmanager

import pytest
import requests
import yaml
from container_stack import BUILD_TIMEOUT_S, UP_TIMEOUT_S, ContainerStack

from pattern_runtime import paths
from pattern_runtime.processes import free_ports, wait_for
from pattern_tools.demo import TEXT_SAMPLES
from triton_patterns.client import PatternClient

pytestmark = [pytest.mark.e2e, pytest.mark.container_stack]

SETOSA = [5.1, 3.5, 1.4, 0.2]   # petal length 1.4 < 2.5: iris_route's rule sends it to v1
VIRGINICA = [6.7, 3.0, 5.2, 2.3]  # iris_route's default arm, v2
ALERT_RULES = paths.PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
COMPOSE_FILE = paths.PROJECT_ROOT / "deploy" / "compose" / "compose.yaml"


@contextmanager
def baked_server(stack: ContainerStack):
    """The model-in-image server (compose's triton-baked image) run alone, with no volume, its HTTP
    port on a free host port: yields (container name, port); removed on the way out."""
    image = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["triton-baked"]["image"]
    name, (port,) = f"{stack.project}-baked", free_ports(1)
    stack.engine_out("run", "-d", "--name", name, "--shm-size=1g", "-p", f"127.0.0.1:{port}:8000", image)
    try:
        yield name, port
    finally:
        stack.engine_out("rm", "-f", "-t", "0", name)


@pytest.mark.timeout(BUILD_TIMEOUT_S + UP_TIMEOUT_S)  # a cold machine builds every image first (docs/deploy.md)
def test_the_compose_stack_serves_through_the_gateway_and_runs_jobs(container_stack):
    stack = container_stack
    texts, topics = [t for t, _ in TEXT_SAMPLES], [topic for _, topic in TEXT_SAMPLES]
    started = time.monotonic()
    with baked_server(stack) as (baked, baked_port):  # starts while the stack is checked
        check_the_stack(stack, texts, topics)
        assert json.loads(stack.engine_out("inspect", "--format", "{{json .Mounts}}", baked)) == [], baked
        with PatternClient(f"127.0.0.1:{baked_port}") as client:
            def answers() -> bool:
                try:
                    return [p.label for p in client.predict("serial", texts)] == topics
                except Exception:  # noqa: BLE001 - not serving yet: refused, or a model still loading
                    return False
            assert wait_for(answers, timeout=UP_TIMEOUT_S, interval=1), \
                stack.run(stack.engine, "logs", "--tail", "20", baked)
        stack.timings["model-in-image answered after"] = time.monotonic() - started
    assert stack.engine_out("ps", "-a", "--filter", f"name=^{baked}$", "--format", "{{.Names}}") == ""


@pytest.mark.stops_container_stack
@pytest.mark.timeout(BUILD_TIMEOUT_S + UP_TIMEOUT_S)  # the stack starts here when no other test needed it
def test_the_stack_stops_leaving_no_container_volume_or_network(container_stack):
    assert container_stack.leftovers()["containers"], "the stack runs before it is stopped"
    container_stack.down()
    assert container_stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def check_the_stack(stack: ContainerStack, texts: list[str], topics: list[str]) -> None:
    """Everything the running compose stack must do: gateway, jobs, Prometheus, health check."""
    # the gateway refuses a JSON input declaring far more values than it carries (a 2.51 tritonserver
    # would allocate the declared gigabytes), and Triton behind it still answers the same model
    infer = f"https://127.0.0.1:{stack.ports['GATEWAY_HTTPS_PORT']}/v2/models/iris/infer"
    def iris(shape: list[int]) -> requests.Response:
        body = {"inputs": [{"name": "FEATURES", "shape": shape, "datatype": "FP32", "data": SETOSA}]}
        return requests.post(infer, json=body, verify=str(stack.cert), timeout=30)
    refused = iris([1, 1_000_000_000])
    # the gateway's words (tritonserver's own errors also say "for input 'FEATURES'")
    assert refused.status_code == 400, (refused.status_code, refused.text)
    assert refused.json()["error"].startswith("input 'FEATURES': shape [1,1000000000] declares"), refused.text
    answered = iris([1, 4])
    assert answered.status_code == 200, (answered.status_code, answered.text)
    assert next(o["data"] for o in answered.json()["outputs"] if o["name"] == "LABEL") == [0]  # setosa
    with PatternClient(f"127.0.0.1:{stack.ports['GATEWAY_HTTPS_PORT']}", root_certificates=str(stack.cert)) as client:
        assert [p.label for p in client.predict("serial", texts)] == topics            # ensemble
        assert [p.label for p in client.predict("serial_bls_text", texts)] == topics   # BLS pipeline
        setosa, virginica = client.route(SETOSA), client.route(VIRGINICA)              # router
        assert (setosa.target, setosa.label) == ("iris:1", "setosa")
        assert (virginica.target, virginica.label) == ("iris:2", "virginica")

        job_id = client.submit(VIRGINICA)  # from the host; done by the worker container
        result = client.wait(job_id, timeout_s=60, redis_url=f"redis://127.0.0.1:{stack.ports['REDIS_PORT']}/0")
        worker_host = stack.engine_out("inspect", "--format", "{{.Config.Hostname}}", stack.container("worker"))
        assert (result.status, result.model, result.completions, result.error) == ("done", "iris", 1, "")
        assert result.worker.startswith(f"{worker_host}-"), (result.worker, worker_host)
        assert result.label == client.synchronous(VIRGINICA).label == "virginica"

    def triton_target() -> dict:
        url = f"http://127.0.0.1:{stack.ports['PROMETHEUS_PORT']}/api/v1/targets"
        with urllib.request.urlopen(url, timeout=5) as response:
            targets = json.load(response)["data"]["activeTargets"]
        return next((t for t in targets if t["labels"].get("instance") == "triton:8002"), {})
    assert wait_for(lambda: triton_target().get("health") == "up", timeout=60, interval=1), triton_target()

    # Prometheus loaded the project's alert rules: each group of alerts.yml, with its alerts
    rules_url = f"http://127.0.0.1:{stack.ports['PROMETHEUS_PORT']}/api/v1/rules"
    with urllib.request.urlopen(rules_url, timeout=5) as response:
        loaded = {g["name"]: sorted(r["name"] for r in g["rules"]) for g in json.load(response)["data"]["groups"]}
    expected = {g["name"]: sorted(r["alert"] for r in g["rules"])
                for g in yaml.safe_load(ALERT_RULES.read_text())["groups"]}
    assert expected and loaded == expected

    triton = stack.container("triton")
    image = stack.engine_out("inspect", "--format", "{{.Config.Image}}", triton)
    healthcheck = json.loads(stack.engine_out("image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}",
                                              image))
    # the image's own, not compose's
    assert healthcheck[0] == "CMD" and healthcheck[1:3] == ["python3", "-m"], healthcheck
    probe = stack.run(stack.engine, "exec", triton, *healthcheck[1:], timeout=60)
    assert probe.returncode == 0, f"{healthcheck[1:]} in {triton}: {probe.stdout}{probe.stderr}"
