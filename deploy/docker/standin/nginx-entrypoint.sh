#!/bin/sh
# The nginx image's template step: /etc/nginx/templates/*.template -> $NGINX_ENVSUBST_OUTPUT_DIR
# (default /etc/nginx/conf.d), filling only the variables whose names match $NGINX_ENVSUBST_FILTER.
set -eu
out=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
vars=$(env | cut -d= -f1 | grep -E "${NGINX_ENVSUBST_FILTER:-.}" | sed 's/^/$/' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
    [ -f "$template" ] || continue
    envsubst "$vars" < "$template" > "$out/$(basename "$template" .template)"
done
exec "$@"
