#!/usr/bin/env bash
# `make stack-up` / `make stack-down`: the compose stack of deploy/compose/compose.yaml (triton, redis,
# worker, gateway, prometheus; otel-collector, jaeger and grafana where their images can be had) on
# the images of `make image` (tools/images.sh: Docker or podman, NGC or local stand-ins).
#
#   tools/stack.sh up                 start it; returns once triton and redis pass their health checks
#   tools/stack.sh down [--volumes]   stop it and remove its containers and network (and volumes)
#
# Docker: `docker compose up --wait`. Podman: podman-compose (requirements-containers.txt, in
# build/containers/compose-venv); podman 4.3 has no `wait --condition=healthy` and, without
# systemd, never runs a health check by itself, so the services are started in the order of the
# compose file's `service_healthy` dependencies (redis, triton, then the rest) and each health
# check is run here (`podman healthcheck run`) until it passes.
# Environment: STACK_PROJECT (compose project name, default triton-patterns), the compose file's
# *_PORT variables (host ports), GATEWAY_TLS_DIR (tls.crt/tls.key; a self-signed pair is made
# when missing), STACK_HEALTH_TIMEOUT (seconds per service, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-}
[ "$action" = up ] || [ "$action" = down ] || { echo "usage: tools/stack.sh up|down [--volumes]" >&2; exit 2; }

settings=$(tools/images.sh --env)
eval "$settings"
export CONTAINERS_CONF TRITON_IMAGE PYTHON_IMAGE GATEWAY_IMAGE REDIS_IMAGE PROMETHEUS_IMAGE
[ -n "$CONTAINERS_CONF" ] || unset CONTAINERS_CONF
project=${STACK_PROJECT:-triton-patterns}
file=deploy/compose/compose.yaml
CORE=(redis triton worker gateway prometheus)
OPTIONAL=(otel-collector jaeger grafana)

if [ "$ENGINE" = docker ]; then
    compose=(docker compose -p "$project" -f "$file")
else
    venv=build/containers/compose-venv
    if [ ! -x "$venv/bin/podman-compose" ] || ! cmp -s requirements-containers.txt "$venv/requirements.txt"; then
        python3 -m venv "$venv" && "$venv/bin/pip" install -q -r requirements-containers.txt 2>"$venv.log" \
            || { echo "stack: installing podman-compose failed:" >&2; tail -n 5 "$venv.log" >&2; exit 1; }
        cp requirements-containers.txt "$venv/requirements.txt"
    fi
    compose=("$venv/bin/podman-compose" -p "$project" -f "$file")
fi

if [ "$action" = down ]; then
    volumes=()
    [ "${2:-}" = --volumes ] && volumes=(-v)
    "${compose[@]}" down -t 10 "${volumes[@]}" >/dev/null 2>build/containers/stack-down.log \
        || { echo "stack: down failed:" >&2; tail -n 5 build/containers/stack-down.log >&2; exit 1; }
    echo "stack $project stopped${volumes:+ and its volumes removed}"
    exit 0
fi

services=("${CORE[@]}")
missing=()
for service in "${OPTIONAL[@]}"; do
    image=$(sed -n "/^  $service:/,/^  [a-z]/s/^    image: *//p" "$file" | head -n 1)
    if [ "$ENGINE" = docker ] && [ "$TRITON_IMAGE" != localhost/tritonserver:2.51-pytriton ] \
       || $ENGINE image inspect "$image" >/dev/null 2>&1; then
        services+=("$service")
    else
        missing+=("$service ($image)")
    fi
done
[ ${#missing[@]} = 0 ] || echo "stack: skipped ${missing[*]}: no image registry can be reached here and no package (Debian, PyPI, npm) has them"

export GATEWAY_TLS_DIR=$(realpath -m "${GATEWAY_TLS_DIR:-deploy/compose/tls}")
tools/tls_pair.sh "$GATEWAY_TLS_DIR"

log=build/containers/stack-$project.log
mkdir -p build/containers
if [ "$ENGINE" = docker ]; then
    "${compose[@]}" up -d --no-build --wait "${services[@]}"
    echo "stack $project up: ${services[*]}"
    exit 0
fi

container_of() {
    podman ps -a --filter "label=com.docker.compose.project=$project" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n 1
}

wait_healthy() {  # wait_healthy SERVICE: runs its health check until it passes
    local service=$1 name deadline=$((SECONDS + ${STACK_HEALTH_TIMEOUT:-300}))
    name=$(container_of "$service")
    while ! podman healthcheck run "$name" >/dev/null 2>&1; do
        if [ "$(podman inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" != true ] || [ $SECONDS -ge $deadline ]; then
            echo "stack: $service ($name) not healthy after ${STACK_HEALTH_TIMEOUT:-300} s or stopped; its log:" >&2
            podman logs --tail 20 "$name" >&2 || true
            exit 1
        fi
        sleep 3
    done
    echo "stack: $service healthy"
}

up() {
    "${compose[@]}" up -d --no-build --no-deps "$@" >>"$log" 2>&1 \
        || { echo "stack: starting $* failed (log $log):" >&2; tail -n 20 "$log" >&2; exit 1; }
}
: > "$log"
up redis
wait_healthy redis
up triton
wait_healthy triton
rest=()
for service in "${services[@]}"; do [ "$service" = redis ] || [ "$service" = triton ] || rest+=("$service"); done
up "${rest[@]}"
echo "stack $project up: ${services[*]}"
