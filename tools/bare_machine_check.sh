#!/usr/bin/env bash
# `make demo` and `make test` on a bare Debian 12 (python3, python3-venv, git, make, curl,
# ca-certificates only), in a podman container, from a clean clone of this checkout's current
# branch (its last commit: commit first). Before, as a user who is neither root nor a sudoer:
# `make demo` must stop within seconds with the command to run. After, libpython removed: the
# demo must stop within seconds naming it. Takes long (make test: ~20 min and more): not part
# of `make test`; `make bare-machine-check` runs it. Root only: it installs podman, runc,
# uidmap, slirp4netns, fuse-overlayfs and mmdebstrap when missing. docs/reliability.md has a run.
#
#   tools/bare_machine_check.sh [demo|all]     (default all: the non-root check, demo, the libpython check, test)
#
# Logs in build/bare-machine/<time>/: nonroot.log, demo.log, nolibpython.log, test.log, summary.txt.
# pip inside the container: the host's pip configuration files and the local wheel folders and
# indexes they name (PIP_* variables too) are mounted read-only, so the container installs the
# same wheels as the host (here a CPU build of torch, where PyPI's is a CUDA build of several
# GB); PyPI needs the host's CA bundle, mounted too; the pip cache is a podman volume
# (bare-machine-pip-cache), so reruns are quick. apt works as is.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
[ "$(id -u)" = 0 ] || { echo "bare_machine_check: run as root (podman as root, mmdebstrap)" >&2; exit 1; }

IMAGE=localhost/debian-bare:bookworm
BARE_PACKAGES=python3,python3-venv,git,make,curl,ca-certificates
run_dir=build/bare-machine/$(date +%Y%m%d-%H%M%S)
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)

. tools/podman_env.sh
podman_install
podman_conf "$run_dir"

debian_image "$IMAGE" "$BARE_PACKAGES"

pip_mounts

branch=$(git rev-parse --abbrev-ref HEAD)
common=$(cd "$(git rev-parse --git-common-dir)" && pwd)
echo "bare machine check of $branch at $(git rev-parse --short HEAD) ($(git log -1 --format=%s | cut -c1-60)); logs in $run_dir"
[ -z "$(git status --porcelain --untracked-files=no)" ] || echo "note: uncommitted changes are not in the clone"

container=bare-check-$$
podman run -d --rm --name "$container" --pids-limit=-1 --shm-size=4g \
    -v "$common:/src.git:ro" -v bare-machine-pip-cache:/root/.cache/pip "${PIP_MOUNTS[@]}" "${PIP_ENVS[@]}" \
    "$IMAGE" sleep infinity >/dev/null
trap 'podman rm -f -t 5 "$container" >/dev/null 2>&1 || true' EXIT
podman exec "$container" git clone -q --no-local --branch "$branch" /src.git /work/project

step() {  # step NAME COMMAND: run COMMAND in the clone, log to NAME.log, record its time and exit code
    local name=$1 started=$SECONDS rc=0
    shift
    echo "== $name: $*"
    podman exec -w /work/project "$container" bash -c "$*" > "$run_dir/$name.log" 2>&1 || rc=$?
    printf '%-12s exit %-3s %4ds  %s\n' "$name" "$rc" $((SECONDS - started)) "$*" | tee -a "$run_dir/summary.txt"
    tail -n 3 "$run_dir/$name.log"
    return 0
}

# a user who is not root and cannot sudo: stopped within seconds with the command to run, before any pip install
step nonroot "useradd -m -s /bin/bash check && su check -c \"git config --global --add safe.directory '*' \
    && git clone -q --no-local --branch $branch /src.git ~/project && cd ~/project && make demo\"; rc=\$?; \
    echo exit \$rc; [ \$rc = 2 ] && [ ! -e /home/check/project/.venv ]"
step demo "make demo"
# the stub without its libpython: one clear error within seconds (make demo would install it again)
step nolibpython "dpkg -r --force-depends libpython$(podman exec "$container" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') >/dev/null \
    && time timeout 170 .venv/bin/triton-patterns demo; rc=\$?; echo exit \$rc; [ \$rc = 1 ]"
[ "$what" = demo ] || step test "make test"
echo "summary ($run_dir/summary.txt):"
cat "$run_dir/summary.txt"
! grep -qv ' exit 0 ' "$run_dir/summary.txt"
