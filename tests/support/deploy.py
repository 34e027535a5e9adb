"""Readers for the deployment files: docker-compose.yml, the gateway's APISIX configuration, the
NATS cluster configuration and bin/run.sh's image list, plus a model of APISIX route matching and
the compose service names and addresses the documentation mentions.

Only parsing: nothing here starts a container or a gateway.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from tests.support.infra import require

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
GATEWAY_DIR = ROOT / "api-gateway"
APISIX_CONFIG = GATEWAY_DIR / "config.yaml"
APISIX_ROUTES = GATEWAY_DIR / "apisix.yaml"
GATEWAY_DOCKERFILE = GATEWAY_DIR / "Dockerfile"
GATEWAY_ENTRYPOINT = GATEWAY_DIR / "entrypoint.sh"
NATS_CONFIG = ROOT / "nats" / "nats-server.conf"
RUN_SH = ROOT / "bin" / "run.sh"
RUN_PS1 = ROOT / "bin" / "run.windows.ps1"
FETCH_COMPOSE = ROOT / "bin" / "fetch-compose.sh"
README = ROOT / "README.md"
# The stack name of `docker stack deploy` and the compose project name (bin/run.sh's FAAS_PROJECT).
STACK = "faas"

_COMPOSE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
_APISIX_VARIABLE = re.compile(r"^\$\{\{\s*([A-Za-z0-9_]+)\s*(?::=\s*(.*?))?\s*\}\}$")
# `[scheme://][user@]host:port`, host a name (no dots, not starting with a digit): an address on
# the compose network. `127.0.0.1:8081`, `example.org:443` and image tags such as `nats:2.15-alpine`
# or `postgres:16-bookworm` do not match.
_SERVICE_ADDRESS = re.compile(
    r"(?:(?<=//)|(?<=@)|(?<![\w.:/@$-]))([A-Za-z][A-Za-z0-9_-]*):(\d{2,5})(?![\w.:-])"
)
_LOOPBACK_PORT = re.compile(r"127\.0\.0\.1[:/](\d{2,5})\b")
_SCALE_OPTION = re.compile(r"--scale[ =]([^\s=]+)=")
_FENCE = re.compile(r"^ *(```|~~~)[^\n]*\n(.*?)^ *\1 *$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")


# --- docker-compose.yml -------------------------------------------------------------------------


def interpolate(value: Any, environment: Mapping[str, str] | None = None) -> Any:
    """Compose-style ``${NAME}``, ``${NAME:-default}`` and ``${NAME-default}`` substitution."""
    env = environment or {}
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, operator, default = match.group(1), match.group(2), match.group(3)
            current = env.get(name)
            if operator == ":-" and not current:
                return default or ""
            if operator == "-" and current is None:
                return default or ""
            return current or ""

        return _COMPOSE_VARIABLE.sub(replace, value).replace("$$", "$")
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return cast(dict[str, Any], data)


def load_compose(environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with anchors merged and variables replaced by their defaults."""
    return cast(dict[str, Any], interpolate(load_yaml(COMPOSE_FILE), environment))


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], compose["services"])


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(entry.split("=", 1) for entry in raw)
    return {str(name): "" if value is None else str(value) for name, value in raw.items()}


def secret_names(service: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for entry in service.get("secrets") or []:
        names.add(entry if isinstance(entry, str) else str(entry["source"]))
    return names


def secret_targets(service: Mapping[str, Any]) -> set[str]:
    """Where each secret of the service appears in its container."""
    targets: set[str] = set()
    for entry in service.get("secrets") or []:
        if isinstance(entry, str):
            targets.add(f"/run/secrets/{entry}")
        else:
            target = str(entry.get("target") or entry["source"])
            targets.add(target if target.startswith("/") else f"/run/secrets/{target}")
    return targets


def replicas(service: Mapping[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def healthcheck_ports(service: Mapping[str, Any]) -> set[int]:
    """The loopback ports a service's healthcheck probes (``127.0.0.1:N`` or ``/127.0.0.1/N``)."""
    test = (service.get("healthcheck") or {}).get("test") or []
    text = " ".join(test) if isinstance(test, list) else str(test)
    return {int(port) for port in _LOOPBACK_PORT.findall(text)}


def listening_ports(compose: Mapping[str, Any], name: str) -> set[int]:
    """The ports docker-compose.yml says service ``name`` listens on: its own ``*_PORT``
    variables, the ports its healthcheck probes and the container ports it publishes, and every
    ``name:port`` another service's environment addresses it at (``NATS_URL``, ``DATABASE_URL``)."""
    all_services = services(compose)
    service = all_services[name]
    ports = healthcheck_ports(service)
    for variable, value in environment_of(service).items():
        if variable.endswith("_PORT") and value.isdigit():
            ports.add(int(value))
    for published in service.get("ports") or []:
        if isinstance(published, Mapping):
            ports.add(int(published["target"]))
    for other in all_services.values():
        for value in environment_of(other).values():
            ports |= {int(port) for host, port in service_addresses(value) if host == name}
    return ports


# --- the gateway ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApisixVariable:
    name: str
    default: str | None


def apisix_variable(value: str) -> ApisixVariable | None:
    """``${{NAME}}`` / ``${{NAME:=default}}`` when the whole value is one, else None."""
    match = _APISIX_VARIABLE.match(value.strip())
    if match is None:
        return None
    return ApisixVariable(match.group(1), match.group(2))


def load_apisix_routes() -> dict[str, Any]:
    return load_yaml(APISIX_ROUTES)


def load_apisix_config() -> dict[str, Any]:
    return load_yaml(APISIX_CONFIG)


def nginx_size(value: str | int) -> int:
    """An nginx size (``1m``, ``512k``, ``1048576``) in bytes."""
    text = str(value).strip().lower()
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


@dataclass
class Route:
    id: str
    patterns: list[str]
    plugins: dict[str, Any]
    upstream_id: str | None
    priority: int = 0
    methods: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> Route:
        patterns = list(raw.get("uris") or [])
        if raw.get("uri"):
            patterns.append(str(raw["uri"]))
        return cls(
            id=str(raw["id"]),
            patterns=patterns,
            plugins=dict(raw.get("plugins") or {}),
            upstream_id=None if raw.get("upstream_id") is None else str(raw["upstream_id"]),
            priority=int(raw.get("priority", 0)),
            methods=[str(method).upper() for method in raw.get("methods") or []],
        )

    def match(self, path: str, method: str) -> tuple[int, int] | None:
        """How specifically this route matches (exact: 1, prefix: 0; then the prefix length)."""
        if self.methods and method.upper() not in self.methods:
            return None
        best: tuple[int, int] | None = None
        for pattern in self.patterns:
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                score = (0, len(prefix)) if path.startswith(prefix) else None
            else:
                score = (1, len(pattern)) if path == pattern else None
            if score is not None and (best is None or score > best):
                best = score
        return best


def routes(config: Mapping[str, Any]) -> list[Route]:
    return [Route.from_config(raw) for raw in config.get("routes") or []]


def route_for(all_routes: list[Route], path: str, method: str) -> Route | None:
    """The route APISIX's radixtree router picks: an exact path before a prefix, the longest
    prefix first, and the highest priority among routes matching equally. Two routes matching
    equally with the same priority are ambiguous: an AssertionError."""
    scored = [(score, route) for route in all_routes if (score := route.match(path, method))]
    if not scored:
        return None
    scored.sort(key=lambda item: (item[0], item[1].priority), reverse=True)
    if len(scored) > 1:
        (first_score, first), (second_score, second) = scored[0], scored[1]
        assert (first_score, first.priority) != (second_score, second.priority), (
            f"{method} {path} matches routes {first.id} and {second.id} equally"
        )
    return scored[0][1]


def upstreams(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(raw["id"]): dict(raw) for raw in config.get("upstreams") or []}


def upstream_nodes(upstream: Mapping[str, Any]) -> list[tuple[str, int]]:
    nodes = upstream["nodes"]
    if isinstance(nodes, dict):  # the "host:port": weight form
        pairs = (str(address).rsplit(":", 1) for address in nodes)
        return [(host, int(port)) for host, port in pairs]
    return [(str(node["host"]), int(node["port"])) for node in nodes]


def gateway_base_image() -> tuple[str, str]:
    """(version, FROM line) of the gateway Dockerfile's APISIX base image."""
    text = GATEWAY_DOCKERFILE.read_text(encoding="utf-8")
    version = re.search(r"^ARG APISIX_VERSION=(\S+)$", text, re.MULTILINE)
    base = re.search(r"^FROM (\S+)", text, re.MULTILINE)
    assert version is not None, "the gateway Dockerfile pins no APISIX_VERSION"
    assert base is not None, "the gateway Dockerfile has no FROM line"
    return version.group(1), base.group(1)


def gateway_ports() -> set[int]:
    """The ports the gateway listens on per its APISIX configuration (traffic and metrics)."""
    config = load_apisix_config()
    ports = {int(port) for port in config["apisix"]["node_listen"]}
    ports.add(int(config["plugin_attr"]["prometheus"]["export_addr"]["port"]))
    return ports


# --- NATS -----------------------------------------------------------------------------------------


def nats_routes() -> list[str]:
    """The cluster route URLs of nats/nats-server.conf."""
    text = NATS_CONFIG.read_text(encoding="utf-8")
    block = re.search(r"routes\s*[:=]?\s*\[(.*?)\]", text, re.DOTALL)
    assert block is not None, "nats-server.conf has no cluster routes"
    lines = (line.split("#", 1)[0].strip().rstrip(",") for line in block.group(1).splitlines())
    return [line for line in lines if line]


def nats_setting(name: str) -> str:
    text = NATS_CONFIG.read_text(encoding="utf-8")
    match = re.search(rf"^\s*{re.escape(name)}\s*[:=]\s*(\S+)", text, re.MULTILINE)
    assert match is not None, f"nats-server.conf does not set {name}"
    return match.group(1)


# --- bin/run.sh -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    image: str
    dockerfile: str
    context: str


def run_sh_images() -> list[BuiltImage]:
    """The images bin/run.sh builds (its IMAGES list)."""
    text = RUN_SH.read_text(encoding="utf-8")
    block = re.search(r"^IMAGES=\((.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert block is not None, "bin/run.sh has no IMAGES list"
    entries = re.findall(r'"([^"]+)"', block.group(1))
    images = []
    for entry in entries:
        image, dockerfile, context = entry.split(":")
        images.append(BuiltImage(image, dockerfile, context))
    return images


def run_windows_images() -> list[BuiltImage]:
    """The images bin/run.windows.ps1 builds (its $Images list)."""
    text = RUN_PS1.read_text(encoding="utf-8")
    pattern = r"Image = '([^']+)'; Dockerfile = '([^']+)'; Context = '([^']+)'"
    return [BuiltImage(*match) for match in re.findall(pattern, text)]


# --- what the documentation says about the topology -----------------------------------------------


def service_addresses(text: str) -> list[tuple[str, str]]:
    """Every ``host:port`` (bare or in a URL) in ``text`` whose host is a name, ``localhost``
    excepted: (host, port) as written."""
    return [
        (host, port) for host, port in _SERVICE_ADDRESS.findall(text) if host.lower() != "localhost"
    ]


def is_placeholder(name: str) -> bool:
    """``NAME``, ``SERVICE``, ``<service-name>``: a stand-in for a name, not a name."""
    return bool(re.fullmatch(r"[A-Z_]+|<[^>]*>", name))


def markdown_code(text: str) -> list[str]:
    """The code of a Markdown document: each line of its fenced blocks, then its inline spans."""
    lines: list[str] = []
    for block in _FENCE.finditer(text):
        lines.extend(block.group(2).splitlines())
    prose = _FENCE.sub("", text)
    lines.extend(match.group(2).strip() for match in _INLINE_CODE.finditer(prose))
    return lines


def comment_lines(path: Path) -> list[str]:
    """The comments of a shell, PowerShell or YAML file (``# ...`` lines and ``<# ... #>``
    blocks), one line each: what a reader copies commands from."""
    text = path.read_text(encoding="utf-8")
    stripped = (line.strip() for line in text.splitlines())
    comments = [line[1:] for line in stripped if line.startswith("#")]
    for block in re.finditer(r"<#(.*?)#>", text, re.DOTALL):
        comments.extend(block.group(1).splitlines())
    return comments


def scaled_services(line: str) -> list[tuple[str, int | None]]:
    """The services a command line scales, with their counts: ``--scale NAME=N`` (compose) and
    ``faas_NAME=N`` / ``faas_NAME`` in a ``docker service`` command (swarm)."""
    found: list[tuple[str, int | None]] = []
    for match in _SCALE_OPTION.finditer(line):
        found.append((match.group(1), _count_after(line, match.end())))
    if "docker service" in line:
        for match in re.finditer(rf"(?<![\w$-]){STACK}_([^\s=`'\")]+)(=?)", line):
            count = _count_after(line, match.end()) if match.group(2) else None
            found.append((match.group(1).rstrip(".,;:"), count))
    return found


def _count_after(line: str, position: int) -> int | None:
    digits = re.match(r"\d+", line[position:])
    return int(digits.group(0)) if digits else None


@dataclass(frozen=True)
class TopologyRow:
    names: list[str]
    replicas: int
    port: int | None


def readme_topology(text: str) -> list[TopologyRow]:
    """The rows of the table under README.md's ``### Topology`` heading."""
    section = re.search(r"^### Topology\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert section is not None, "README.md has no Topology section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    column = {name: header.index(name) for name in ("service", "replicas", "port")}
    table = []
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        replicas = re.match(r"\d+", cells[column["replicas"]])
        port = re.fullmatch(r"\d+", cells[column["port"]])
        assert replicas is not None, f"no replica count in {row}"
        table.append(
            TopologyRow(
                names=re.findall(r"`([^`]+)`", cells[column["service"]]),
                replicas=int(replicas.group(0)),
                port=int(port.group(0)) if port else None,
            )
        )
    return table


# --- the Docker Compose v2 binary -----------------------------------------------------------------


def compose_command() -> list[str]:
    """How to run Docker Compose v2 here: FAAS_COMPOSE_BINARY, the docker plugin, or the binary
    bin/fetch-compose.sh downloads once (into .data/tools). Skips the test when none can be had,
    and fails it instead in CI (FAAS_REQUIRE_INFRA=1)."""
    override = os.environ.get("FAAS_COMPOSE_BINARY")
    if override:
        return [override]
    if shutil.which("docker") is not None:
        plugin = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if plugin.returncode == 0 and "v2." in plugin.stdout:
            return ["docker", "compose"]
    try:
        fetched = subprocess.run(
            [str(FETCH_COMPOSE)], capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        require("docker compose", "bin/fetch-compose.sh did not finish within 600 s")
    if fetched.returncode != 0:
        lines = fetched.stderr.strip().splitlines()
        require("docker compose", f"bin/fetch-compose.sh failed: {lines[-1] if lines else '?'}")
    return [fetched.stdout.strip().splitlines()[-1]]
