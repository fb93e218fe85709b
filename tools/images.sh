#!/usr/bin/env bash
# `make image`: the server images (deploy/docker/Dockerfile, targets model-load and model-in-image)
# and the client image (Dockerfile.client), with Docker where a Docker engine answers, else podman
# (installed when missing, as root, with the containers.conf it needs: tools/podman_env.sh).
# The base is the NGC tritonserver image where nvcr.io answers; else a local stand-in
# (localhost/tritonserver:2.51-pytriton, deploy/docker/standin/Dockerfile), and the same for
# python, nginx, redis and prometheus: built once per machine from the Debian archive, rebuilt
# only when their files change (each is also tagged localhost/standin:TARGET-HASH), and said so. Prints each build's time and the images' sizes.
#
#   tools/images.sh [TAG]            (default 0.1.0)
#   tools/images.sh --env            only the settings: ENGINE=..., *_IMAGE=... lines for the compose stack
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-0.1.0}
. tools/podman_env.sh

NGC_IMAGE=nvcr.io/nvidia/tritonserver:25.10-py3
STANDIN_TRITON=localhost/tritonserver:2.51-pytriton
PYTRITON=nvidia-pytriton==0.7.0
declare -A STANDIN=(   # stand-in target -> its image
    [tritonserver]=$STANDIN_TRITON [python]=localhost/python:3.11-debian
    [nginx]=localhost/nginx:1.22-njs-debian [redis]=localhost/redis:7.0-debian
    [prometheus]=localhost/prometheus:2.42-debian)
say() { [ "$tag" = --env ] && echo "$*" >&2 || echo "$*"; }

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker build_flags=()
else
    engine=podman
    [ "$(id -u)" = 0 ] || { echo "images: no Docker engine, and podman here needs root (make image as root)" >&2; exit 1; }
    podman_install golang-github-containernetworking-plugin-dnsname
    podman_conf "$PWD/build/containers"
    pip_mounts
    build_flags=(--format docker "${PIP_MOUNTS[@]}")  # docker format keeps HEALTHCHECK
fi
exists() { $engine image inspect "$1" >/dev/null 2>&1; }

ngc_reachable() { exists "$NGC_IMAGE" || curl -s -o /dev/null -m 5 https://nvcr.io/v2/; }

standin() {  # standin TARGET: its image, built when missing or when its files changed
    local target=$1 image=${STANDIN[$1]} ctx sum
    ctx=build/containers/standin-context
    rm -rf "$ctx" && mkdir -p "$ctx" && cp -a deploy/docker/standin/. "$ctx/" && cp -a backends/onnxruntime "$ctx/onnxruntime"
    find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
    [ "$target" != tritonserver ] || python3 -m pip download -q --no-deps -d "$ctx/wheel" "$PYTRITON" 2>"$ctx.log" \
        || { echo "images: pip download $PYTRITON failed:" >&2; tail -n 5 "$ctx.log" >&2; exit 1; }
    sum=$( (cat deploy/docker/standin/Dockerfile; tar -C "$ctx" --sort=name --mtime=@0 --owner=0 --group=0 -cf - . 2>/dev/null) | sha256sum | cut -c1-16)
    if exists "localhost/standin:$target-$sum"; then  # a tag per content: machine-wide, whatever the checkout
        $engine tag "localhost/standin:$target-$sum" "$image"
        say "using the local stand-in $image (deploy/docker/standin/Dockerfile, target $target)"
        return
    fi
    [ "$engine" = podman ] && debian_image localhost/debian:bookworm
    say "building the local stand-in $image (deploy/docker/standin/Dockerfile, target $target)"
    timed "$image" $engine build --format docker -q -t "localhost/standin:$target-$sum" \
        -f deploy/docker/standin/Dockerfile --target "$target" -t "$image" "$ctx" >&2
}

timed() {  # timed IMAGE COMMAND...: runs it, prints its time
    local image=$1 started=$SECONDS
    shift
    "$@" >/dev/null || { echo "images: building $image failed: $*" >&2; exit 1; }
    say "built $image in $((SECONDS - started)) s"
}

if ngc_reachable; then
    triton_image=$NGC_IMAGE python_image=python:3.11-slim
    gateway_image=nginx:1.27.3 redis_image=redis:7.4-alpine prometheus_image=prom/prometheus:v3.5.0
else
    say "nvcr.io cannot be reached: local stand-ins from the Debian archive replace the public base images"
    for target in "${!STANDIN[@]}"; do standin "$target"; done
    triton_image=${STANDIN[tritonserver]} python_image=${STANDIN[python]}
    gateway_image=${STANDIN[nginx]} redis_image=${STANDIN[redis]} prometheus_image=${STANDIN[prometheus]}
fi

if [ "$tag" = --env ]; then
    printf '%s\n' "ENGINE=$engine" "CONTAINERS_CONF=${CONTAINERS_CONF:-}" "TRITON_IMAGE=$triton_image" "PYTHON_IMAGE=$python_image" \
        "GATEWAY_IMAGE=$gateway_image" "REDIS_IMAGE=$redis_image" "PROMETHEUS_IMAGE=$prometheus_image"
    exit 0
fi

[ -n "$(find model_repository -name model.onnx -print -quit)" ] || { echo "images: no exported models (make models first)" >&2; exit 1; }
server=(-f deploy/docker/Dockerfile --build-arg "TRITON_IMAGE=$triton_image")
timed "triton-patterns-server:$tag-model-load" $engine build "${build_flags[@]}" "${server[@]}" --target model-load -t "triton-patterns-server:$tag-model-load" .
timed "triton-patterns-server:$tag" $engine build "${build_flags[@]}" "${server[@]}" --target model-in-image -t "triton-patterns-server:$tag" .
timed "triton-patterns:$tag" $engine build "${build_flags[@]}" -f deploy/docker/Dockerfile.client --build-arg "PYTHON_IMAGE=$python_image" -t "triton-patterns:$tag" .
$engine images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "triton-patterns|${triton_image%%:*}" | sort -u
