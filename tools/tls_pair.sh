#!/usr/bin/env bash
# tools/tls_pair.sh DIR: a self-signed certificate for localhost and 127.0.0.1 (DIR/tls.crt, DIR/tls.key)
# for the gateway of the compose stack (tools/stack.sh) and of the triton pod (tools/kube_play.py),
# made unless DIR already has one.
set -euo pipefail
dir=${1:?usage: tools/tls_pair.sh DIR}
[ -f "$dir/tls.crt" ] && exit 0
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
chmod 644 "$dir/tls.key"  # nginx in the container reads it as another user
echo "made a self-signed certificate for localhost in $dir"
