"""End-to-end: the triton pod of deploy/k8s (Triton and its nginx gateway sidecar, the gateway's
ConfigMap, the keys and TLS Secrets) under `podman kube play`, as `make kube-up` runs it
(tools/kube_play.py renders it from the project's manifests: no copy of them). Checked: every
readiness probe of the pod passes (the tool runs them as the kubelet does: podman 4.3 ignores
readinessProbe and startupProbe) and a real inference through the sidecar over TLS answers right;
the Triton container's readiness probe (a real inference, `pattern_kernel.probe`) reports a killed
Python stub of `iris` while `/v2/health/ready` still says 200, the case it exists for; podman made
a health check of the livenessProbe only; `tools/kube_play.py down` (`podman kube down`) leaves no
pod, container, volume or secret of the run.

What podman 4.3 cannot run, checked here by playing them: the kinds Service, StatefulSet (redis),
HorizontalPodAutoscaler and CronJob of deploy/k8s are skipped with "Kube kind X not supported"
(the workers' Deployment would run, but it needs the Services `triton` and `redis` to resolve).
Skipped, with the reason, where the engine is not podman as root (Docker has no `kube play`)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest
import requests
import yaml
from container_stack import BUILD_TIMEOUT_S, engine_or_reason

from pattern_runtime import paths
from pattern_runtime.processes import free_ports
from triton_patterns.client import PatternClient

pytestmark = [pytest.mark.e2e, pytest.mark.container_stack]

TOOLS = paths.PROJECT_ROOT / "tools"
PLAYED_KINDS = {"Pod", "Deployment", "PersistentVolumeClaim", "ConfigMap", "Secret"}  # podman 4.3's play.go
SETOSA = [5.1, 3.5, 1.4, 0.2]
KILL_IRIS_STUBS = """
import os, signal
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')
    except OSError:
        continue
    if argv[0].endswith(b'triton_python_backend_stub') and argv[1].startswith(b'/models/iris/'):
        os.kill(int(pid), signal.SIGKILL)
        print(pid)
"""


def kube_play_module():
    spec = importlib.util.spec_from_file_location("kube_play", TOOLS / "kube_play.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory):
    engine, reason = engine_or_reason()
    if engine != "podman":
        pytest.skip(reason or "the engine here is Docker, which has no `kube play`")
    log = tmp_path_factory.mktemp("kube") / "images.log"
    with log.open("w") as out:
        built = subprocess.run([str(TOOLS / "images.sh")], cwd=paths.PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                               timeout=BUILD_TIMEOUT_S)
    assert built.returncode == 0, f"tools/images.sh exited {built.returncode}:\n{log.read_text()[-2000:]}"
    settings = subprocess.run([str(TOOLS / "images.sh"), "--env"], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
    conf = dict(line.split("=", 1) for line in settings.stdout.splitlines() if "=" in line).get("CONTAINERS_CONF")
    return {**os.environ, **({"CONTAINERS_CONF": conf} if conf else {})}


def podman(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)


def leftovers(env: dict, prefix: str) -> dict[str, list[str]]:
    listed = {"pods": ("pod", "ps", "--format", "{{.Name}}"), "containers": ("ps", "-a", "--format", "{{.Names}}"),
              "volumes": ("volume", "ls", "--format", "{{.Name}}"),
              "secrets": ("secret", "ls", "--format", "{{.Name}}")}
    return {kind: [n for n in podman(env, *args).stdout.split() if n.startswith(prefix)]
            for kind, args in listed.items()}


def test_podman_skips_the_kinds_it_cannot_run(podman_env):
    """Every object of deploy/k8s whose kind podman 4.3 does not play, played: each kind is
    reported as not supported and nothing is created."""
    others = [o for o in kube_play_module().kustomize_objects(paths.PROJECT_ROOT / "deploy" / "k8s")
              if o["kind"] not in PLAYED_KINDS]
    assert {o["kind"] for o in others} >= {"Service", "StatefulSet", "HorizontalPodAutoscaler", "CronJob"}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump_all(others, file)
        file.flush()
        played = podman(podman_env, "--log-level=info", "kube", "play", "--start=false", file.name)
    assert played.returncode != 0 and "does not contain any supported kube kind" in played.stderr, played
    unsupported = {kind for kind in {o["kind"] for o in others}
                   if f"Kube kind {kind} not supported" not in played.stderr}
    assert unsupported == set()
    assert played.stdout.strip() == "", played.stdout  # no pod, volume or secret


@pytest.mark.timeout(BUILD_TIMEOUT_S + 420)  # a cold machine builds the images first (docs/deploy.md)
def test_the_triton_pod_and_its_gateway_sidecar_under_podman_kube_play(podman_env, tmp_path):
    prefix = f"tp-kube-{os.getpid()}-"
    https_port, grpc_port = free_ports(2)
    kube = [sys.executable, str(TOOLS / "kube_play.py")]
    started = time.monotonic()
    up = subprocess.run([*kube, "up", "--prefix", prefix, "--https-port", str(https_port),
                         "--grpc-port", str(grpc_port), "--tls-dir", str(tmp_path / "tls")],
                        env=podman_env, capture_output=True, text=True, timeout=420)
    try:
        assert up.returncode == 0, f"kube_play.py up exited {up.returncode}:\n{up.stdout}{up.stderr[-3000:]}"
        ready = time.monotonic() - started
        triton, gateway = f"{prefix}triton-pod-0-triton", f"{prefix}triton-pod-0-gateway"
        assert f"kube: {triton} ready" in up.stdout and f"kube: {gateway} ready" in up.stdout, up.stdout

        cert = str(tmp_path / "tls" / "tls.crt")
        with PatternClient(f"127.0.0.1:{https_port}", root_certificates=cert) as client:
            answer = client.synchronous(SETOSA)
        assert (answer.label, answer.model) == ("setosa", "iris")

        # podman's health check is the livenessProbe; the readinessProbe is run as the kubelet would
        manifest = yaml.safe_load_all(kube_play_module().rendered_path(prefix).read_text())
        pod = next(o for o in manifest if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        probes = {c["name"]: c for c in pod["containers"]}["triton"]
        healthcheck = json.loads(podman(podman_env, "inspect", "--format", "{{json .Config.Healthcheck.Test}}",
                                        triton).stdout)
        # (podman 4.3 puts port 0 for a named probe port, and the stand-in image has no curl: it cannot pass here)
        assert probes["livenessProbe"]["httpGet"]["path"] in " ".join(healthcheck), healthcheck
        readiness = probes["readinessProbe"]["exec"]["command"]
        assert podman(podman_env, "exec", triton, *readiness).returncode == 0

        killed = podman(podman_env, "exec", triton, "python3", "-c", KILL_IRIS_STUBS)
        assert len(killed.stdout.split()) == 2, killed  # iris versions 1 and 2
        health = requests.get(f"https://127.0.0.1:{https_port}/v2/health/ready", verify=cert, timeout=10)
        assert health.status_code == 200, "the server's own readiness does not see a dead stub"
        probed = podman(podman_env, "exec", triton, *readiness)
        assert probed.returncode == 1 and "iris" in probed.stderr, probed
        print(f"\ntriton pod under podman kube play: ready after {ready:.0f} s")
    finally:
        down = subprocess.run([*kube, "down", "--prefix", prefix], env=podman_env, capture_output=True, text=True,
                              timeout=180)
    assert down.returncode == 0, f"kube_play.py down exited {down.returncode}:\n{down.stdout}{down.stderr[-2000:]}"
    assert leftovers(podman_env, prefix) == {"pods": [], "containers": [], "volumes": [], "secrets": []}
    print(f"whole test {time.monotonic() - started:.0f} s")
