"""tools/kube_play.py's render, offline: what `podman kube play` gets is the project's triton
Deployment and the gateway's ConfigMap, every name and reference under the prefix, the images
named by tools/images.sh in place of the public ones, the gateway's ports on 127.0.0.1."""

from __future__ import annotations

import importlib.util

import yaml

from pattern_runtime.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("kube_play", PROJECT_ROOT / "tools" / "kube_play.py")
kube_play = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kube_play)

ENV = {"GATEWAY_IMAGE": "localhost/nginx:stand-in", "REDIS_IMAGE": "localhost/redis:stand-in"}


def rendered():
    return kube_play.render("t1-", kube_play.image_map(ENV), 18443, 18444)


def test_the_deployment_and_the_configmap_it_mounts_are_rendered_from_the_project_files():
    config_map, deployment = rendered()
    assert (config_map["kind"], deployment["kind"]) == ("ConfigMap", "Deployment")
    gateway = PROJECT_ROOT / "deploy" / "gateway"
    assert config_map["data"] == {f: (gateway / f).read_text() for f in ("nginx.conf.template", "triton_gateway.js")}
    source = next(o for o in yaml.safe_load_all((PROJECT_ROOT / "deploy" / "k8s" / "triton.yaml").read_text())
                  if o["kind"] == "Deployment")
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == \
        [c["name"] for c in source["spec"]["template"]["spec"]["containers"]]


def test_every_name_and_reference_has_the_prefix():
    config_map, deployment = rendered()
    pod = deployment["spec"]["template"]["spec"]
    assert config_map["metadata"]["name"] == "t1-triton-gateway" and deployment["metadata"]["name"] == "t1-triton"
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {"t1-triton-gateway"}
    assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {"t1-triton-gateway-tls"}
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for c in pod["containers"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"t1-triton-patterns-keys"}


def test_images_and_host_ports():
    _, deployment = rendered()
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert containers["gateway"]["image"] == "localhost/nginx:stand-in"          # nginx:1.27.3 in the manifest
    assert containers["triton"]["image"] == "triton-patterns-server:0.1.0"       # built here: unchanged
    published = {p["name"]: (p.get("hostIP"), p.get("hostPort")) for c in containers.values() for p in c["ports"]}
    assert published["gateway-http"] == ("127.0.0.1", 18443) and published["gateway-grpc"] == ("127.0.0.1", 18444)
    assert published["http"] == (None, None)  # Triton's own ports stay inside the pod
