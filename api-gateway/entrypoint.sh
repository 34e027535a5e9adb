#!/usr/bin/env bash
# Gateway entrypoint: put the token public key into the environment, then start APISIX.
#
# apisix.yaml names the key as ${{JWT_PUBLIC_KEY}}. Compose and swarm hand it over as the
# jwt_public_key secret (a file), so it is read here from JWT_PUBLIC_KEY_FILE unless
# JWT_PUBLIC_KEY is already set. The image's own entrypoint then renders nginx.conf from
# config.yaml and runs APISIX in the foreground.
set -euo pipefail

if [[ -z "${JWT_PUBLIC_KEY:-}" ]]; then
    key_file="${JWT_PUBLIC_KEY_FILE:-/run/secrets/jwt_public_key}"
    if [[ ! -r "${key_file}" ]]; then
        echo "gateway: cannot read the token public key ${key_file}" \
            "(set JWT_PUBLIC_KEY_FILE or JWT_PUBLIC_KEY)" >&2
        exit 1
    fi
    JWT_PUBLIC_KEY="$(<"${key_file}")"
    export JWT_PUBLIC_KEY
fi

if [[ "${JWT_PUBLIC_KEY}" != "-----BEGIN PUBLIC KEY-----"* ]]; then
    echo "gateway: the token public key is not a PEM public key (-----BEGIN PUBLIC KEY-----)" >&2
    exit 1
fi

# APISIX_ENTRYPOINT: the image's own entrypoint (overridable to test this script alone).
exec "${APISIX_ENTRYPOINT:-/docker-entrypoint.sh}" "$@"
