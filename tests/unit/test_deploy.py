"""Deployment files (deploy/), checked offline: every YAML parses; the Kubernetes objects validate
against the API schemas (kubernetes-validate, strict); names, ports, labels, mounts, images, keys
and commands agree across the manifests, the compose file, the Dockerfiles and the code."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pattern_kernel import access, probe, server_command
from pattern_kernel import container as entry_point  # the loops' `container` is a pod's
from pattern_runtime import docker_server
from pattern_runtime.backend_folder import project_backend_folders
from pattern_runtime.paths import PROJECT_ROOT
from pattern_tools import cli

DEPLOY = PROJECT_ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_DIR = DEPLOY / "compose"
DOCKER = DEPLOY / "docker"
K8S_VERSION = "1.32.0"
NOT_OBJECTS = {"kustomization.yaml", "prometheus-adapter-values.yaml"}  # parsed, not API objects
KEYS_SECRET = "triton-patterns-keys"  # created by hand (docs/deploy.md), never committed
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


def load_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> list[dict]:
    return [obj for path in sorted(K8S.glob("*.yaml")) if path.name not in NOT_OBJECTS for obj in load_all(path)]


def by_kind(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == kind}


def pod_specs() -> dict[str, dict]:
    """Workload name -> pod spec (Deployments, StatefulSets, CronJobs)."""
    specs = {}
    for obj in k8s_objects():
        if obj["kind"] in ("Deployment", "StatefulSet"):
            specs[obj["metadata"]["name"]] = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            specs[obj["metadata"]["name"]] = obj["spec"]["jobTemplate"]["spec"]["template"]
    return specs


def containers() -> list[tuple[str, dict]]:
    return [(name, c) for name, template in pod_specs().items() for c in template["spec"]["containers"]]


def compose() -> dict:
    """The compose file with each `${VAR:-default}` at its default (as with no such variable set)."""
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", (COMPOSE_DIR / "compose.yaml").read_text())
    return yaml.safe_load(text)


def argv_of(command: list[str]) -> list[str]:
    return [re.sub(r"\$\([A-Z_]+\)", "0", a) for a in command]


def service_refs(argv: list[str]) -> list[tuple[str, int]]:
    """host:port pairs an argument list points at (--url HOST:PORT, redis://HOST:PORT/...)."""
    refs = []
    for i, arg in enumerate(argv):
        if arg == "--url" and i + 1 < len(argv):
            host, port = argv[i + 1].rsplit(":", 1)
            refs.append((host, int(port)))
        match = re.match(r"redis://([^:/]+):(\d+)", arg)
        if match:
            refs.append((match[1], int(match[2])))
    return refs


# --------------------------------------------------------------------------- YAML and schemas


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path):
    assert load_all(path), f"{path} is empty"


@pytest.mark.parametrize("path", [p for p in sorted(K8S.glob("*.yaml")) if p.name not in NOT_OBJECTS],
                         ids=lambda p: p.name)
def test_kubernetes_objects_validate_against_the_api_schema(path):
    for obj in load_all(path):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises ValidationError


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - NOT_OBJECTS
    assert set(kustomization["resources"]) == manifests | {"../gateway"}  # the gateway's ConfigMap
    assert "batch-cronjob.yaml" in kustomization["resources"]


# --------------------------------------------------------------------------- Kubernetes cross-checks


def test_selectors_match_pod_labels_and_services_reach_named_ports():
    workloads = {**by_kind("Deployment"), **by_kind("StatefulSet")}
    for name, obj in workloads.items():
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"]
        targets = [w for w in workloads.values()
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} workloads"
        ports = {p["name"]: p["containerPort"] for c in targets[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (name, port)
            assert ports[port["targetPort"]] == port["port"], (name, port)  # same number inside and out
    for name, statefulset in by_kind("StatefulSet").items():
        assert statefulset["spec"]["serviceName"] in by_kind("Service"), name


def test_mounts_name_volumes_and_secrets_exist_or_are_documented():
    docs = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    secrets = set(by_kind("Secret"))
    for workload, template in pod_specs().items():
        spec = template["spec"]
        volumes = {v["name"] for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in by_kind("StatefulSet").get(workload, {}).get("spec", {})
                  .get("volumeClaimTemplates", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes | claims, (workload, mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    assert ref["name"] == KEYS_SECRET, (workload, ref)
                    assert f"--from-literal={ref['key']}=" in docs, f"docs/deploy.md must show how to create {ref}"


def test_commands_parse_with_the_cli_and_point_at_services():
    services = {name: {p["port"] for p in s["spec"]["ports"]} for name, s in by_kind("Service").items()}
    checked = 0
    for workload, container in containers():
        command = container.get("command", []) + container.get("args", [])
        if command[:1] == ["triton-patterns"]:
            cli.parser().parse_args(argv_of(command[1:]))  # SystemExit on a wrong command
            checked += 1
        for host, port in service_refs(command):
            assert port in services.get(host, ()), f"{workload}: no Service {host} with port {port}"
    assert checked >= 2  # the workers and the batch job


def test_triton_deployment_probes_a_real_inference_and_has_shared_memory():
    triton = by_kind("Deployment")["triton"]
    pod = triton["spec"]["template"]
    container, gateway = pod["spec"]["containers"]  # tritonserver and its nginx gateway sidecar
    assert gateway["name"] == "gateway" and gateway["image"].startswith("nginx:")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == TRITON_PORTS
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:3] == ["python3", "-m", "pattern_kernel.probe"]
    args = probe.parser().parse_args(command[3:])
    assert args.url == f"127.0.0.1:{TRITON_PORTS['http']}" and args.model == ["iris"]
    assert container["startupProbe"]["exec"]["command"] == command  # one readiness rule, start included
    assert "command" not in container and "args" not in container  # the image's entry point: pattern_kernel.container
    assert {e["name"] for e in container["env"]} >= {access.ADMIN_KEY_ENV, access.API_KEY_ENV}
    shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert next(v for v in pod["spec"]["volumes"] if v["name"] == shm["name"])["emptyDir"]["medium"] == "Memory"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(TRITON_PORTS["metrics"])
    assert triton["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_hpa_scales_the_triton_deployment_on_the_adapters_metric():
    [hpa] = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")["pods"]["metric"]["name"]
    values = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    [rule] = values["rules"]["custom"]
    assert rule["name"]["as"] == metric
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert "nv_inference_request_success" in rule["metricsQuery"]
    assert "nv_inference_queue_duration_us" in rule["seriesQuery"]


def test_images_are_the_ones_compose_builds_or_pins():
    compose_images = {s["image"] for s in compose()["services"].values()}
    for workload, container in containers():
        assert container["image"] in compose_images, (workload, container["image"])
    triton_image = by_kind("Deployment")["triton"]["spec"]["template"]["spec"]["containers"][0]["image"]
    [baked] = [s for s in compose()["services"].values() if s["image"] == triton_image]
    assert baked["build"]["target"] == "model-in-image"


# --------------------------------------------------------------------------- compose


def test_compose_services_reference_what_exists():
    spec = compose()
    services = spec["services"]
    assert {"triton", "redis", "worker", "prometheus", "grafana"} <= set(services)
    named_volumes = set(spec.get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named_volumes, (name, source)
        build = service.get("build")
        if build:
            dockerfile = (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve()
            assert dockerfile.is_file(), (name, dockerfile)
            if "target" in build:
                assert build["target"] in stages(dockerfile), (name, build["target"])


def test_compose_commands_and_healthchecks_parse_and_point_at_services():
    services = compose()["services"]
    exposed = {name: container_ports(s) for name, s in services.items()}
    worker = services["worker"]["command"]
    assert worker[0] == "triton-patterns" and cli.parser().parse_args(worker[1:]).command == "worker"
    for host, port in service_refs(worker):
        assert port in exposed[host], (host, port)
    for name in ("triton", "triton-baked"):
        test = services[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python3", "-m", "pattern_kernel.probe"]
        probe.parser().parse_args(test[4:])
        assert exposed[name] == set(TRITON_PORTS.values())
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.split(":")
                assert int(port) in exposed[host], target
    assert set(prometheus["rule_files"]) <= {Path(v.split(":")[1]).name for v in services["prometheus"]["volumes"]}
    datasources = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    host, port = re.match(r"http://([^:/]+):(\d+)", datasources["datasources"][0]["url"]).groups()
    assert int(port) in exposed[host]


def test_compose_traces_go_from_triton_through_the_collector_to_jaeger():
    services = compose()["services"]
    exposed = {name: container_ports(s) for name, s in services.items()}
    trace = services["triton"]["environment"][entry_point.TRACE_ENV]
    command = entry_point.command_from_env({entry_point.TRACE_ENV: trace}, [])
    assert "--trace-config=mode=opentelemetry" in command and "--trace-config=rate=1000" in command
    url = next(a.split("url=", 1)[1] for a in command if a.startswith("--trace-config=opentelemetry,url="))
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()
    assert int(port) in exposed[host] and path == "/v1/traces"
    collector = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{port}")
    for exporter in collector["service"]["pipelines"]["traces"]["exporters"]:
        host, port = collector["exporters"][exporter]["endpoint"].split(":")
        assert int(port) in exposed[host], (exporter, host, port)


def container_ports(service: dict) -> set[int]:
    ports = {int(str(p).rsplit(":", 1)[-1]) for p in [*service.get("ports", []), *service.get("expose", [])]}
    if service.get("build"):  # the Dockerfile's EXPOSE
        dockerfile = (COMPOSE_DIR / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
        ports |= {int(p) for i in instructions(dockerfile) if i[0] == "EXPOSE" for p in i[1].split()}
    if service.get("image", "").startswith("redis:"):
        ports.add(6379)
    return ports


# --------------------------------------------------------------------------- Dockerfiles


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, out = "", []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        joined += line
        word, _, rest = joined.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        joined = ""
    return out


def stages(path: Path) -> list[str]:
    return [args.split()[-1] for word, args in instructions(path) if word == "FROM" and " AS " in args.upper()]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repository) out of the build context."""
    ignored = False
    for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s#]+)", line)
        if match:
            pins[match[1].lower()] = match[3]
    return pins


@pytest.mark.parametrize("dockerfile", sorted(DOCKER.glob("Dockerfile*")), ids=lambda p: p.name)
def test_dockerfile_copies_existing_sources_and_pins_like_requirements(dockerfile):
    pins = requirement_pins()
    copies = 0
    for word, args in instructions(dockerfile):
        if word == "COPY":
            *sources, _dest = [a for a in shlex.split(args) if not a.startswith("--")]
            for source in sources:
                assert (PROJECT_ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such file"
                assert not dockerignored(source.rstrip("/")), f"{dockerfile.name}: {source} is in .dockerignore"
                copies += 1
        if word == "RUN" and "pip install" in args:
            for requirement in re.findall(r"([A-Za-z0-9_.-]+(?:\[[^\]]*\])?==[^\s\"']+)", args):
                name, version = re.sub(r"\[.*\]", "", requirement).split("==")
                if name.lower() in pins:
                    assert pins[name.lower()] == version, f"{dockerfile.name}: {requirement} vs requirements.txt"
    assert copies


def test_server_image_is_the_ngc_image_with_the_launchers_layout():
    steps = instructions(DOCKER / "Dockerfile")
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    assert args["TRITON_IMAGE"] == docker_server.DEFAULT_NGC_IMAGE
    assert steps[[w for w, _ in steps].index("FROM")][1].startswith("${TRITON_IMAGE} ")
    assert stages(DOCKER / "Dockerfile") == ["runtime", "model-load", "model-in-image"]
    copies = {shlex.split(a)[0].rstrip("/"): shlex.split(a)[-1].rstrip("/") for w, a in steps if w == "COPY"}
    assert copies["backends"] == server_command.CONTAINER_BACKENDS
    assert copies["kernel/pattern_kernel"] == docker_server.CONTAINER_PACKAGE
    assert copies["model_repository"] == server_command.CONTAINER_MODELS
    for backend in project_backend_folders():
        assert dockerignored(f"backends/{backend}/model.py") == (backend in docker_server.NATIVE_IN_NGC_IMAGE), backend
    entrypoint = next(a for w, a in steps if w == "ENTRYPOINT")
    assert entrypoint == '["python3", "-m", "pattern_kernel.container"]'
    healthcheck = next(a for w, a in steps if w == "HEALTHCHECK")
    command = healthcheck.split(" CMD ", 1)[1]
    assert command.startswith('["python3", "-m", "pattern_kernel.probe"')
    exposed = {int(p) for w, a in steps if w == "EXPOSE" for p in a.split()}
    assert exposed == set(TRITON_PORTS.values())


def test_client_image_runs_the_cli():
    steps = instructions(DOCKER / "Dockerfile.client")
    assert "pip install ." in next(a for w, a in steps if w == "RUN")
    assert next(a for w, a in steps if w == "CMD").startswith('["triton-patterns"')
