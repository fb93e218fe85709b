"""The gateway's one config (deploy/gateway) as the launcher, the compose stack and the Kubernetes
sidecar fill it in: every field has a value everywhere, the same files are mounted, and Triton's
own input-size limit on the NGC image matches the gateway's body limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pattern_kernel import container
from pattern_runtime import gateway as gw
from pattern_runtime import paths

DEPLOY = paths.PROJECT_ROOT / "deploy"


def _compose_gateway() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]["gateway"]


def _k8s_pod() -> dict:
    deployment = next(o for o in yaml.safe_load_all((DEPLOY / "k8s" / "triton.yaml").read_text())
                      if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]


def _k8s_containers() -> dict[str, dict]:
    return {c["name"]: c for c in _k8s_pod()["containers"]}


def _fields(environment: dict) -> dict[str, str]:
    return {k: str(v) for k, v in environment.items() if re.match(r"^(GATEWAY|TRITON)_", k)}


def test_a_field_without_a_value_is_an_error_naming_it():
    with pytest.raises(ValueError, match="GATEWAY_RATE"):
        gw.render("limit_req_zone x rate=${GATEWAY_RATE};", {})
    assert gw.render("a ${A_B} $nginx_var", {"A_B": "1"}) == "a 1 $nginx_var"


def test_the_launcher_fills_every_field(tmp_path):
    gateway = gw.Gateway("127.0.0.1:1", "127.0.0.1:2", directory=tmp_path, tls=gw.GatewayTls(Path("c"), Path("k")))
    config = gateway.config()
    assert "${" not in config
    assert f"listen 127.0.0.1:{gateway.port} ssl;" in config
    assert f"listen 127.0.0.1:{gateway.grpc_port} ssl http2;" in config
    assert "ssl_certificate " in config and "server 127.0.0.1:1;" in config and "server 127.0.0.1:2;" in config


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_compose_and_kubernetes_fill_every_field_and_mount_the_same_files(where):
    template = gw.TEMPLATE.read_text()
    if where == "compose":
        service = _compose_gateway()
        fields = _fields(service["environment"])
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        sources = {Path(mounts[target]).name for target in mounts}
    else:
        container = _k8s_containers()["gateway"]
        fields = _fields({e["name"]: e["value"] for e in container["env"] if "value" in e})
        volumes = {v["name"]: v for v in _k8s_pod()["volumes"]}
        mounts = {f"{m['mountPath']}/{item['path']}": item["key"]  # the ConfigMap's keys, one file each
                  for m in container["volumeMounts"]
                  for item in volumes[m["name"]].get("configMap", {}).get("items", [])}
        sources = set(mounts.values())
        generator = yaml.safe_load((DEPLOY / "gateway" / "kustomization.yaml").read_text())["configMapGenerator"][0]
        assert set(generator["files"]) == {"nginx.conf.template", "triton_gateway.js"}
        assert "../gateway" in yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    rendered = gw.render(template, fields)  # raises on a field without a value
    assert "/etc/nginx/templates/nginx.conf.template" in mounts
    assert f"{fields['GATEWAY_JS_DIR']}/triton_gateway.js" in mounts
    assert {"nginx.conf.template", "triton_gateway.js"} <= sources
    assert "ssl http2;" in rendered and "ssl_certificate " in rendered
    assert int(fields["GATEWAY_MAX_ELEMENTS"]) == gw.DEFAULT_MAX_ELEMENTS
    assert (fields["GATEWAY_RATE"], int(fields["GATEWAY_BURST"])) == (gw.DEFAULT_RATE, gw.DEFAULT_BURST)


def _bytes(size: str) -> int:
    return int(size[:-1]) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[size[-1].lower()]


def test_triton_on_the_ngc_image_limits_json_inputs_like_the_gateway():
    limit = _bytes(gw.DEFAULT_BODY_LIMIT)
    compose_env = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["x-triton"]["environment"]
    k8s_env = {e["name"]: e.get("value") for e in _k8s_containers()["triton"]["env"]}
    for env in (compose_env, k8s_env):  # the entry point passes it on as --http-max-input-size to Triton >= 2.59
        assert int(env[container.MAX_INPUT_ENV]) == limit
        assert "--http-max-input-size" not in env.get("TRITON_ARGS", "")


@pytest.mark.parametrize("option, value, message", [
    ("rate", "fast", "rate"), ("body_limit", "64 MB", "body_limit"), ("api_key", "short", "API key"),
])
def test_bad_options_are_refused_naming_them(option, value, message):
    with pytest.raises(ValueError, match=message):
        gw.Gateway("127.0.0.1:1", "127.0.0.1:2", **{option: value})
