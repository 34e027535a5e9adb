#!/usr/bin/env bash
# Start the FaaS platform.
#   ./bin/run.sh [local]           the local stack on http://localhost:8080 (default; Ctrl-C stops it)
#   ./bin/run.sh compose           the production topology with Docker Compose, on http://localhost
#   ./bin/run.sh swarm             the same as a swarm stack (makes a one-node swarm if needed)
#   ./bin/run.sh down [--volumes]  stop the compose project or the stack (--volumes: delete data)
# Local stack: FAAS_PORT (8080), FAAS_HOST (127.0.0.1), FAAS_NATS_PORT (4222), FAAS_DATA_DIR
# (.data), LOG_LEVEL (INFO). compose and swarm: FAAS_HTTP_PORT (80), FAAS_SECRETS_DIR (.secrets),
# FAAS_PROJECT (faas), FAAS_IMAGE_TAG (latest), FAAS_WAIT_SECONDS (300), FAAS_SWARM_ADVERTISE_ADDR.
# Services: auth-service (port 8081), registry-service (8082), publisher-service (8083),
# spawner-service, apisix, nats-1..3, postgres. Scale one by that name (first export the
# variables README.md's "Scale" lists, DOCKER_GID above all):
#   docker compose -p faas up -d --scale spawner-service=20   |   docker service scale faas_spawner-service=20
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-local}"

# shellcheck source=bin/ensure-uv.sh
. bin/ensure-uv.sh

# --- compose / swarm / down ---------------------------------------------------------------------

PROJECT="${FAAS_PROJECT:-faas}"
HTTP_PORT="${FAAS_HTTP_PORT:-80}"
IMAGE_TAG="${FAAS_IMAGE_TAG:-latest}"
SECRETS_DIR="${FAAS_SECRETS_DIR:-.secrets}"
WAIT_SECONDS="${FAAS_WAIT_SECONDS:-300}"
COMPOSE_FILE="docker-compose.yml"
# Images built from this repository, as "image:Dockerfile:context"; their names and tags are the
# ones docker-compose.yml uses.
IMAGES=(
  "faas-platform/auth-service:auth-service/Dockerfile:."
  "faas-platform/registry-service:registry-service/Dockerfile:."
  "faas-platform/publisher-service:publisher-service/Dockerfile:."
  "faas-platform/spawner-service:spawner-service/Dockerfile:."
  "faas-platform/api-gateway:api-gateway/Dockerfile:api-gateway"
)
COMPOSE=()

say() {
  echo "==> $*" >&2
}

die() {
  echo "error: $*" >&2
  exit 1
}

usage_error() {
  echo "error: $*" >&2
  echo "usage: ./bin/run.sh [local | compose | swarm | down [--volumes]]   (--help for more)" >&2
  exit 2
}

require_docker() {
  command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (https://docs.docker.com/engine/install/)"
  docker info >/dev/null 2>&1 || die "no Docker engine answers \`docker info\`: start Docker first"
}

# Sets COMPOSE to the command running Docker Compose v2: the plugin, a docker-compose v2 binary,
# or (Linux x86_64) the binary bin/fetch-compose.sh downloads once.
find_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
    COMPOSE=(docker-compose)
  else
    say "Docker Compose v2 not found; fetching the pinned binary (bin/fetch-compose.sh)"
    local binary
    binary="$(bin/fetch-compose.sh)" || die "no Docker Compose v2: install the compose plugin (https://docs.docker.com/compose/install/)"
    COMPOSE=("${binary}")
  fi
}

compose() {
  "${COMPOSE[@]}" --project-name "${PROJECT}" --file "${COMPOSE_FILE}" "$@"
}

random_hex() {
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# Generates the secrets once: the database password and the token key pair. Existing files are
# never overwritten. The directory is private to the user (0700); the files are readable by
# every user *inside the containers* (0644), which run as their own unprivileged users and get
# these files bind-mounted by compose as they are.
ensure_secrets() {
  mkdir -p "${SECRETS_DIR}"
  chmod 700 "${SECRETS_DIR}"
  local password="${SECRETS_DIR}/db_password"
  local private_key="${SECRETS_DIR}/jwt_private_key.pem"
  local public_key="${SECRETS_DIR}/jwt_public_key.pem"
  local created=()

  if [[ ! -s "${password}" ]]; then
    (umask 077 && random_hex >"${password}.tmp")
    chmod 644 "${password}.tmp"
    mv "${password}.tmp" "${password}"
    created+=("db_password")
  fi

  if [[ ! -s "${private_key}" ]]; then
    [[ -s "${public_key}" ]] && die "${public_key} exists without ${private_key}: restore the private key, or remove the public key to make a new pair"
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to generate the token key pair"
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "${private_key}.tmp" 2>/dev/null) ||
      die "openssl could not generate an RSA key"
    chmod 644 "${private_key}.tmp"
    mv "${private_key}.tmp" "${private_key}"
    created+=("jwt_private_key.pem")
  fi

  if [[ ! -s "${public_key}" ]]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to derive the token public key"
    openssl pkey -in "${private_key}" -pubout -out "${public_key}.tmp" 2>/dev/null ||
      die "openssl could not read ${private_key}"
    chmod 644 "${public_key}.tmp"
    mv "${public_key}.tmp" "${public_key}"
    created+=("jwt_public_key.pem")
  fi

  if ((${#created[@]})); then
    say "generated secrets in ${SECRETS_DIR}/: ${created[*]}"
  else
    say "using the existing secrets in ${SECRETS_DIR}/"
  fi
}

build_images() {
  local entry image dockerfile context
  for entry in "${IMAGES[@]}"; do
    IFS=: read -r image dockerfile context <<<"${entry}"
    say "building ${image}:${IMAGE_TAG}"
    docker build --tag "${image}:${IMAGE_TAG}" --file "${dockerfile}" "${context}"
  done
}

stack_running() {
  [[ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" == "active" ]] &&
    docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "${PROJECT}"
}

compose_running() {
  [[ -n "$(docker ps --quiet --filter "label=com.docker.compose.project=${PROJECT}")" ]]
}

# Prints the HTTP status of GET http://127.0.0.1:HTTP_PORT/PATH (empty when nothing answers).
http_status() {
  local path="$1" line=""
  { exec 3<>"/dev/tcp/127.0.0.1/${HTTP_PORT}"; } 2>/dev/null || return 0
  printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "${path}" >&3 || true
  IFS= read -r -t 5 line <&3 || true
  exec 3<&- 3>&-
  line="${line#HTTP/* }"
  echo "${line%% *}"
}

wait_for_gateway() {
  local deadline=$((SECONDS + WAIT_SECONDS)) pending path
  say "waiting for the platform behind http://localhost:${HTTP_PORT} (up to ${WAIT_SECONDS} s)"
  while :; do
    pending=()
    for path in /auth/ready /registry/ready /publisher/ready; do
      [[ "$(http_status "${path}")" == "200" ]] || pending+=("${path}")
    done
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      echo "error: not ready after ${WAIT_SECONDS} s: ${pending[*]} (through the gateway)" >&2
      return 1
    fi
    sleep 2
  done
}

print_url() {
  local url="http://localhost"
  [[ "${HTTP_PORT}" == "80" ]] || url="${url}:${HTTP_PORT}"
  say "the platform is up: ${url}"
  echo "${url}"
}

export_settings() {
  # Read by docker-compose.yml when docker compose / docker stack interpolate it.
  FAAS_SECRETS_DIR="$(cd "${SECRETS_DIR}" && pwd)"
  export FAAS_SECRETS_DIR FAAS_HTTP_PORT="${HTTP_PORT}" FAAS_IMAGE_TAG="${IMAGE_TAG}"
}

# The group owning the Docker socket as the containers see it, given to the spawners (they run
# as a non-root user): this host's socket on Linux; on Docker Desktop the engine's socket lives
# in a VM, so one of the images just built is asked. DOCKER_GID set by the caller wins.
export_docker_gid() {
  if [[ -z "${DOCKER_GID:-}" ]]; then
    if [[ "$(uname -s)" == "Linux" && -S /var/run/docker.sock ]]; then
      DOCKER_GID="$(stat -c %g /var/run/docker.sock)"
    else
      DOCKER_GID="$(docker run --rm --entrypoint python \
        --volume /var/run/docker.sock:/var/run/docker.sock \
        "faas-platform/spawner-service:${IMAGE_TAG}" \
        -c "import os; print(os.stat('/var/run/docker.sock').st_gid)" 2>/dev/null || true)"
    fi
  fi
  [[ "${DOCKER_GID:-}" =~ ^[0-9]+$ ]] || DOCKER_GID=0
  export DOCKER_GID
}

run_compose() {
  require_docker
  find_compose
  stack_running && die "the swarm stack '${PROJECT}' is running: ./bin/run.sh down first"
  ensure_secrets
  export_settings
  build_images
  export_docker_gid
  say "starting the compose project '${PROJECT}'"
  compose up --detach --no-build --remove-orphans
  if ! wait_for_gateway; then
    echo "see: ${COMPOSE[*]} -p ${PROJECT} ps   and   ${COMPOSE[*]} -p ${PROJECT} logs [SERVICE, e.g. auth-service]" >&2
    exit 1
  fi
  print_url
}

run_swarm() {
  require_docker
  local cli major
  cli="$(docker version --format '{{.Client.Version}}' 2>/dev/null || true)"
  major="${cli%%.*}"
  if ! [[ "${major}" =~ ^[0-9]+$ ]] || ((major < 23)); then
    die "docker stack deploy needs Docker CLI 23 or newer to read docker-compose.yml (this is '${cli}')"
  fi
  compose_running && die "the compose project '${PROJECT}' is running: ./bin/run.sh down first"
  case "$(docker info --format '{{.Swarm.LocalNodeState}}')" in
    active)
      [[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" == "true" ]] ||
        die "this node is a swarm worker: run ./bin/run.sh swarm on a manager"
      ;;
    inactive)
      say "initialising a one-node swarm (docker swarm init)"
      local init=(docker swarm init)
      [[ -n "${FAAS_SWARM_ADVERTISE_ADDR:-}" ]] && init+=(--advertise-addr "${FAAS_SWARM_ADVERTISE_ADDR}")
      "${init[@]}" >/dev/null || die "docker swarm init failed (set FAAS_SWARM_ADVERTISE_ADDR to this host's address)"
      ;;
    *) die "the swarm state of this node is '$(docker info --format '{{.Swarm.LocalNodeState}}')'" ;;
  esac
  ensure_secrets
  export_settings
  build_images
  export_docker_gid
  say "deploying the stack '${PROJECT}'"
  # The images were just built on this node: do not ask a registry for their digests.
  docker stack deploy --resolve-image never --compose-file "${COMPOSE_FILE}" "${PROJECT}"
  if ! wait_for_gateway; then
    echo "see: docker stack ps ${PROJECT}   and   docker service logs ${PROJECT}_<service> (e.g. ${PROJECT}_auth-service)" >&2
    exit 1
  fi
  print_url
}

run_down() {
  local volumes="$1" stopped=0
  require_docker
  if compose_running; then
    find_compose
    say "stopping the compose project '${PROJECT}'"
    if [[ "${volumes}" == "yes" ]]; then
      compose down --volumes --remove-orphans
    else
      compose down --remove-orphans
    fi
    stopped=1
  fi
  if stack_running; then
    say "removing the stack '${PROJECT}'"
    docker stack rm "${PROJECT}"
    if [[ "${volumes}" == "yes" ]]; then
      local deadline=$((SECONDS + 300))
      while [[ -n "$(docker ps --all --quiet --filter "label=com.docker.stack.namespace=${PROJECT}")" ]]; do
        ((SECONDS < deadline)) || die "the stack's containers did not stop within 300 s; remove its volumes later"
        sleep 2
      done
      local volume
      for volume in $(docker volume ls --quiet --filter "label=com.docker.stack.namespace=${PROJECT}"); do
        docker volume rm "${volume}" >/dev/null
      done
    fi
    stopped=1
  fi
  if ((stopped)); then
    say "stopped; the secrets stay in ${SECRETS_DIR}/"
  else
    say "nothing to stop: no compose project or stack named '${PROJECT}' is running"
  fi
}

case "$mode" in
  local)
    ensure_uv
    uv sync --frozen --quiet
    exec "${UV_PROJECT_ENVIRONMENT:-.venv}/bin/python" bin/localstack.py
    ;;
  compose | swarm)
    (($# <= 1)) || usage_error "'$mode' takes no arguments"
    "run_${mode}"
    ;;
  down)
    (($# <= 2)) || usage_error "too many arguments for down"
    case "${2:-}" in
      "") run_down no ;;
      --volumes) run_down yes ;;
      *) usage_error "unknown option '$2' for down (expected: --volumes)" ;;
    esac
    ;;
  -h|--help|help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    usage_error "unknown mode '$mode' (expected: local, compose, swarm or down)"
    ;;
esac
