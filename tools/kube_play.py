"""`make kube-up` / `make kube-down`: the triton pod of deploy/k8s (Triton and its nginx gateway
sidecar) under `podman kube play` (podman 4.3, as root), on the images of `make image`.

    .venv/bin/python tools/kube_play.py render [--prefix P] [--https-port N] [--grpc-port N]
    .venv/bin/python tools/kube_play.py up     [--prefix P] [--https-port N] [--grpc-port N] [--timeout S]
    .venv/bin/python tools/kube_play.py down   [--prefix P]

`render` prints what kube play gets, made from the project's manifests as `kubectl apply -k
deploy/k8s` and the cluster would see them (no copy of them is kept): the objects of
deploy/k8s/kustomization.yaml that podman can run, the ConfigMaps of its configMapGenerators, the
kustomize `namePrefix` (P: the Deployment, ConfigMaps and Secrets and every reference to them, so
runs side by side do not collide), the local images in place of the public ones (the compose
file's `${*_IMAGE:-default}` variables, as tools/images.sh names them), and the gateway's ports on
127.0.0.1 (hostPort: what the Service `triton` does on a cluster).

What podman 4.3 cannot run (read in its source, pkg/domain/infra/abi/play.go and
pkg/specgen/generate/kube at v4.3.1, and seen: it logs `Kube kind X not supported` and skips it):
Service, StatefulSet (redis), HorizontalPodAutoscaler, CronJob, Job; the workers' Deployment runs
but needs the Services `triton` and `redis` to resolve, so it is left out, like redis. Of the
probes it turns only livenessProbe into a container health check; readinessProbe and startupProbe
are ignored, so `up` runs each readinessProbe itself as the kubelet does (exec: in the container;
tcpSocket: on the published port) until it passes. Secrets: a `kind: Secret` played by 4.3 is
stored as YAML, which its own env lookup then fails to parse as JSON (podman #16269), and secret
volumes read YAML with the data as is (not base64); so `up` creates the two Secrets with `podman
secret create` in the forms 4.3 reads: the keys as a JSON map of base64 values (env), the TLS pair
as YAML data (volume). A secret volume without `optional` crashes 4.3 (podman #16636): the
manifest says `optional: false`, the default.

`up` exits 0 once every readiness probe passes, else 1 with the container's log; `down` runs
`podman kube down` and removes the Secrets and the volumes podman made for the ConfigMap and the
Secret, leaving nothing of the pod.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "deploy" / "compose" / "compose.yaml"
WORK = ROOT / "build" / "containers"
DEPLOYMENT = "triton"
KEYS_SECRET, TLS_SECRET = "triton-patterns-keys", "triton-gateway-tls"
GATEWAY_PORTS = {"gateway-http": "https_port", "gateway-grpc": "grpc_port"}


def kustomize_objects(folder: Path) -> list[dict]:
    """The objects `kubectl kustomize FOLDER` lists: its resources (files and folders, recursively)
    and the ConfigMaps of its configMapGenerators (without kustomize's name hash)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        if path.is_dir():
            objects += kustomize_objects(path)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (folder / f).read_text() for f in generator.get("files", [])}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    return objects


def image_map(env: dict[str, str]) -> dict[str, str]:
    """Public image -> the one to run: the compose file's `${VAR:-default}` images, VAR from `env`."""
    found = {}
    for service in yaml.safe_load(COMPOSE_FILE.read_text())["services"].values():
        match = re.fullmatch(r"\$\{(\w+):-([^}]+)\}", str(service.get("image", "")))
        if match and env.get(match.group(1)):
            found[match.group(2)] = env[match.group(1)]
    return found


def render(prefix: str, images: dict[str, str], https_port: int, grpc_port: int) -> list[dict]:
    """The triton Deployment and the ConfigMaps it mounts, ready for `podman kube play`."""
    objects = kustomize_objects(K8S)
    deployment = copy.deepcopy(next(o for o in objects
                                    if o["kind"] == "Deployment" and o["metadata"]["name"] == DEPLOYMENT))
    pod = deployment["spec"]["template"]["spec"]
    mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    config_maps = [copy.deepcopy(o) for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] in mounted]
    for obj in (deployment, *config_maps):
        obj["metadata"]["name"] = prefix + obj["metadata"]["name"]
    ports = {"https_port": https_port, "grpc_port": grpc_port}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["name"] = prefix + volume["configMap"]["name"]
        if "secret" in volume:
            volume["secret"]["secretName"] = prefix + volume["secret"]["secretName"]
    for container in pod["containers"]:
        container["image"] = images.get(container["image"], container["image"])
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                ref["name"] = prefix + ref["name"]
        for port in container.get("ports", []):
            if port.get("name") in GATEWAY_PORTS:
                port.update(hostPort=ports[GATEWAY_PORTS[port["name"]]], hostIP="127.0.0.1")
    return [*config_maps, deployment]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        sys.exit(f"kube: podman {' '.join(args[:3])} failed: {done.stderr.strip()[-800:]}")
    return done


def create_secrets(prefix: str, tls_dir: Path) -> None:
    """The keys (env: a JSON map of base64 values) and the TLS pair (volume: YAML data) as podman 4.3 reads them."""
    admin_key = os.environ.get("TRITON_PATTERNS_ADMIN_KEY") or secrets.token_hex(16)
    keys = {"admin-key": admin_key, **({"api-key": os.environ["TRITON_PATTERNS_API_KEY"]}
                                       if os.environ.get("TRITON_PATTERNS_API_KEY") else {})}
    tls = {"data": {name: (tls_dir / name).read_text() for name in ("tls.crt", "tls.key")}}
    WORK.mkdir(parents=True, exist_ok=True)
    keys_json = json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in keys.items()})
    for name, content in ((KEYS_SECRET, keys_json),
                          (TLS_SECRET, yaml.safe_dump(tls))):
        path = WORK / f"{prefix}{name}.secret"
        path.write_text(content)
        path.chmod(0o600)
        podman("secret", "rm", prefix + name, check=False)
        podman("secret", "create", prefix + name, str(path))
        path.unlink()


def containers(objects: list[dict]) -> list[tuple[str, dict]]:
    """(podman's container name, its manifest) of the Deployment's pod: NAME-pod-0-CONTAINER."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = f"{deployment['metadata']['name']}-pod-0"
    return [(f"{pod}-{c['name']}", c) for c in deployment["spec"]["template"]["spec"]["containers"]]


def probe_passes(name: str, container: dict, probe: dict) -> bool:
    """One run of a readinessProbe, as the kubelet runs it."""
    if "exec" in probe:
        return podman("exec", name, *probe["exec"]["command"], check=False, timeout=60).returncode == 0
    port = probe["tcpSocket"]["port"]
    host_port = next(p["hostPort"] for p in container["ports"] if port in (p.get("name"), p["containerPort"]))
    try:
        socket.create_connection(("127.0.0.1", host_port), timeout=probe.get("timeoutSeconds", 1)).close()
        return True
    except OSError:
        return False


def wait_ready(objects: list[dict], timeout: float) -> None:
    started = time.monotonic()
    for name, container in containers(objects):
        probe = container.get("readinessProbe")
        if not probe:
            continue
        while not probe_passes(name, container, probe):
            running = podman("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
            if running != "true" or time.monotonic() - started > timeout:
                log = podman("logs", "--tail", "20", name, check=False)
                sys.exit(f"kube: {name} not ready after {time.monotonic() - started:.0f} s (running: {running}); "
                         f"its log:\n{log.stdout}{log.stderr}")
            time.sleep(min(probe.get("periodSeconds", 10), 3))
        print(f"kube: {name} ready after {time.monotonic() - started:.0f} s (its readinessProbe passed)")


def rendered_path(prefix: str) -> Path:
    return WORK / f"kube-{prefix or 'default'}.yaml"


def settings() -> dict[str, str]:
    """tools/images.sh --env: the engine, CONTAINERS_CONF and the images to run."""
    done = subprocess.run([str(ROOT / "tools" / "images.sh"), "--env"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        sys.exit(f"kube: tools/images.sh --env failed: {done.stderr.strip()[-800:]}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/kube_play.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["render", "up", "down"])
    parser.add_argument("--prefix", default="", help="kustomize namePrefix for the pod, ConfigMaps and Secrets")
    parser.add_argument("--https-port", type=int, default=8443, help="host port (127.0.0.1) of the gateway's HTTPS")
    parser.add_argument("--grpc-port", type=int, default=8444, help="host port (127.0.0.1) of the gateway's gRPC")
    parser.add_argument("--tls-dir", type=Path, default=ROOT / "deploy" / "compose" / "tls",
                        help="tls.crt and tls.key for the gateway (a self-signed pair is made when missing)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for every readiness probe to pass")
    args = parser.parse_args(argv)
    if args.prefix and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.prefix):
        parser.error(f"--prefix must be lower-case letters, digits and '-', not {args.prefix!r}")
    env = settings()
    if env.get("ENGINE") != "podman":
        sys.exit("kube: podman kube play needs podman; a Docker engine has no equivalent (use a Kubernetes cluster)")
    if env.get("CONTAINERS_CONF"):
        os.environ["CONTAINERS_CONF"] = env["CONTAINERS_CONF"]
    path = rendered_path(args.prefix)
    if args.action == "down":
        if not path.exists():
            sys.exit(f"kube: {path} is missing: nothing was started with --prefix {args.prefix!r}")
        objects = list(yaml.safe_load_all(path.read_text()))
        podman("kube", "down", str(path), check=False)  # fails only when no pod was made
        volumes = [v["configMap"]["name"] if "configMap" in v else v["secret"]["secretName"]
                   for v in objects[-1]["spec"]["template"]["spec"]["volumes"] if "configMap" in v or "secret" in v]
        for volume in sorted(set(volumes)):
            podman("volume", "rm", "-f", volume, check=False)
        for name in (KEYS_SECRET, TLS_SECRET):
            podman("secret", "rm", args.prefix + name, check=False)
        path.unlink()
        print(f"kube: pod {objects[-1]['metadata']['name']}-pod-0 down; its secrets and volumes removed")
        return 0
    objects = render(args.prefix, image_map(env), args.https_port, args.grpc_port)
    if args.action == "render":
        yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))  # first: `down` removes what follows
    subprocess.run([str(ROOT / "tools" / "tls_pair.sh"), str(args.tls_dir)], check=True)
    create_secrets(args.prefix, args.tls_dir)
    podman("kube", "play", str(path), timeout=300)
    wait_ready(objects, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
