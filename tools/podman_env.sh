# Sourced by tools/bare_machine_check.sh and tools/images.sh (bash): podman as root on these
# machines, base images built from the Debian archive, and what pip inside a container needs.
#
#   podman_install [PACKAGES]       podman, runc, uidmap, slirp4netns, fuse-overlayfs, mmdebstrap, catatonit (pods' infra
#                                   container: podman kube play) and PACKAGES, when missing
#   podman_conf DIR                 writes DIR/containers.conf and exports CONTAINERS_CONF
#   debian_image NAME [PACKAGES]    imports NAME from `mmdebstrap --variant=minbase bookworm` unless it exists
#   pip_mounts                      fills the array PIP_MOUNTS (-v ...) and PIP_ENVS (-e PIP_...)

podman_install() {  # podman_install [MORE PACKAGES]: installs those of them that are missing
    local package missing=()
    for package in podman runc uidmap slirp4netns fuse-overlayfs mmdebstrap catatonit "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} = 0 ] && return
    echo "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# runc: Debian's default crun fails here (setrlimit RLIMIT_NOFILE not permitted, then "cgroups in
# hybrid mode not supported"); the ulimits are what the servers need within the sandbox's hard limits
podman_conf() {
    mkdir -p "$1"
    export CONTAINERS_CONF=$1/containers.conf
    cat > "$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
}

debian_image() {  # built, not pulled: Debian's own packages, minbase
    local image=$1 include=${2:-} tmp
    podman image exists "$image" && return 0
    echo "building $image with mmdebstrap (the Debian archive; no image registry is needed)"
    tmp=$(mktemp -d)
    mmdebstrap --quiet --variant=minbase ${include:+--include="$include"} bookworm "$tmp/rootfs.tar"
    podman import -q "$tmp/rootfs.tar" "$image" >/dev/null
    rm -rf "$tmp"
}

# what the host's pip reads: its config files, and the local paths in them or in PIP_* (folders of
# wheels, file:// indexes with the folder of files beside them, constraint files); PyPI needs the
# host's CA bundle
pip_mounts() {
    local conf path name
    PIP_MOUNTS=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    for conf in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip"; do
        [ -e "$conf" ] && PIP_MOUNTS+=(-v "$conf:${conf/#$HOME//root}:ro")
    done
    for path in $(python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*='\(.*\)'$/\1/p" | tr ' ' '\n' \
                  | sed -n 's|^file://||; /^\//p' | sort -u); do
        [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
        case "$path" in /etc/ssl/*|/etc/xdg/pip*|/etc/pip.conf) continue ;; esac
        [ -e "$path" ] && PIP_MOUNTS+=(-v "$path:$path:ro")
    done
    PIP_ENVS=()
    while IFS='=' read -r name _; do PIP_ENVS+=(-e "$name"); done < <(env | grep '^PIP_' || true)
}
