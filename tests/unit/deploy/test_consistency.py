"""The deployment files agree with each other and with the services' code.

Each test fails when one piece drifts from another: a service gains an endpoint the gateway does
not route, an upstream names a compose service that does not exist or a port the service does
not listen on, the gateway's jwt-auth consumer key differs from the `key` claim auth-service
issues, a service other than the gateway publishes a port, a compose variable is no setting of
the service it is given to, and so on. Everything here is parsed: nothing is started.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from auth_service.config import AuthSettings
from auth_service.main import create_app as create_auth_app
from faas_common.http import REQUEST_ID_HEADER
from faas_common.settings import CommonSettings
from publisher_service.config import PublisherSettings
from publisher_service.main import create_app as create_publisher_app
from registry_service.config import RegistrySettings
from registry_service.main import create_app as create_registry_app
from spawner_service.config import SpawnerSettings
from tests.support import deploy


@dataclass(frozen=True)
class HttpService:
    upstream: str  # the gateway's upstream id, and the service's path prefix without the slash
    settings: type[CommonSettings]
    port: int  # where it listens in compose and swarm (the seed's http://NAME:PORT)

    @property
    def prefix(self) -> str:
        return f"/{self.upstream}"

    @property
    def env_prefix(self) -> str:
        return str(self.settings.model_config.get("env_prefix"))


# The compose service names: what `docker compose up --scale NAME=N` and
# `docker service scale faas_NAME=N` take.
AUTH = "auth-service"
REGISTRY = "registry-service"
PUBLISHER = "publisher-service"
SPAWNER = "spawner-service"
HTTP_SERVICES: dict[str, HttpService] = {
    AUTH: HttpService("auth", AuthSettings, 8081),
    REGISTRY: HttpService("registry", RegistrySettings, 8082),
    PUBLISHER: HttpService("publisher", PublisherSettings, 8083),
}
PLATFORM_SERVICES: dict[str, type[CommonSettings]] = {
    AUTH: AuthSettings,
    REGISTRY: RegistrySettings,
    PUBLISHER: PublisherSettings,
    SPAWNER: SpawnerSettings,
}
EXPECTED_REPLICAS = {
    "nats-1": 1,
    "nats-2": 1,
    "nats-3": 1,
    "postgres": 1,
    AUTH: 3,
    REGISTRY: 3,
    PUBLISHER: 3,
    SPAWNER: 10,
    "apisix": 1,
}
GATEWAY = "apisix"
# Paths anyone may call through the gateway (no token): everything under /auth, and each
# service's probes and API documents.
OPEN_SUFFIXES = ("/health", "/ready", "/docs", "/openapi.json")
PROTECTED_PREFIXES = ("/registry", "/publisher")
# Variables the platform's containers get that are no setting of theirs.
NON_SETTINGS_VARIABLES = {"DOCKER_HOST"}  # read by the Docker SDK in the spawner
SAMPLE_PATH_PARAMETER = "sample-value"
MIN_APISIX_VERSION = (3, 17, 0)
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - the services' default listen address, compared only


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway() -> dict[str, Any]:
    return deploy.load_apisix_routes()


@pytest.fixture(scope="module")
def gateway_routes(gateway: dict[str, Any]) -> list[deploy.Route]:
    return deploy.routes(gateway)


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    # The factories connect nothing until their lifespan runs: building the apps is enough to
    # read their OpenAPI documents.
    return {
        AUTH: create_auth_app(AuthSettings(private_key_file=Path("unused.pem"))),
        REGISTRY: create_registry_app(RegistrySettings(jwt_public_key_file=Path("unused"))),
        PUBLISHER: create_publisher_app(PublisherSettings(jwt_public_key_file=Path("unused"))),
    }


def operations(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every operation in the app's OpenAPI document."""
    for template, methods in app.openapi()["paths"].items():
        path = re.sub(r"\{[^}]+\}", SAMPLE_PATH_PARAMETER, template)
        for method in methods:
            yield method.upper(), path


def is_open(path: str) -> bool:
    return path.startswith("/auth/") or path.endswith(OPEN_SUFFIXES)


def env_names(settings: type[BaseSettings]) -> set[str]:
    """Every environment variable name a settings class reads."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


# --- the gateway routes every endpoint, protected as intended -----------------------------------


@pytest.mark.parametrize("service", sorted(HTTP_SERVICES))
def test_every_endpoint_of_every_service_is_routed_to_it(
    service: str, apps: dict[str, FastAPI], gateway_routes: list[deploy.Route]
) -> None:
    http = HTTP_SERVICES[service]
    unrouted, misrouted = [], []
    for method, path in operations(apps[service]):
        assert path.startswith(f"{http.prefix}/"), f"{service} serves {path} outside {http.prefix}/"
        route = deploy.route_for(gateway_routes, path, method)
        if route is None:
            unrouted.append(f"{method} {path}")
        elif route.upstream_id != http.upstream:
            misrouted.append(f"{method} {path} -> {route.upstream_id} (route {route.id})")
    assert not unrouted, f"no gateway route for {unrouted}"
    assert not misrouted, f"routed to the wrong upstream: {misrouted}"


@pytest.mark.parametrize("service", sorted(HTTP_SERVICES))
def test_token_protection_matches_the_services(
    service: str, apps: dict[str, FastAPI], gateway_routes: list[deploy.Route]
) -> None:
    wrong = []
    for method, path in operations(apps[service]):
        route = deploy.route_for(gateway_routes, path, method)
        assert route is not None
        guarded = "jwt-auth" in route.plugins
        if guarded == is_open(path):
            wrong.append(f"{method} {path}: jwt-auth {'on' if guarded else 'off'} ({route.id})")
    assert not wrong, f"protection differs from the policy: {wrong}"


def test_the_documents_and_probes_outside_openapi_are_open(
    gateway_routes: list[deploy.Route],
) -> None:
    for http in HTTP_SERVICES.values():
        for suffix in OPEN_SUFFIXES:
            route = deploy.route_for(gateway_routes, f"{http.prefix}{suffix}", "GET")
            assert route is not None, f"{http.prefix}{suffix} is not routed"
            assert "jwt-auth" not in route.plugins, f"{http.prefix}{suffix} needs a token"


def test_paths_outside_the_services_are_not_routed(gateway_routes: list[deploy.Route]) -> None:
    for path in ("/", "/apisix/admin/routes", "/metrics", "/authx", "/registryx/functions"):
        assert deploy.route_for(gateway_routes, path, "GET") is None, f"{path} is routed"


def test_the_protected_catch_alls_cover_unknown_paths(gateway_routes: list[deploy.Route]) -> None:
    # A path a service may add later is still behind the token until the gateway says otherwise.
    for prefix in PROTECTED_PREFIXES:
        route = deploy.route_for(gateway_routes, f"{prefix}/not-yet-written", "POST")
        assert route is not None
        assert "jwt-auth" in route.plugins


def test_every_route_points_at_a_defined_upstream(gateway: dict[str, Any]) -> None:
    defined = deploy.upstreams(gateway)
    for route in deploy.routes(gateway):
        assert route.upstream_id in defined, f"route {route.id}: unknown upstream"
        assert route.patterns, f"route {route.id} matches no path"


# --- upstreams: compose services and the ports the services listen on ---------------------------


def test_the_platform_services_have_the_seeds_names(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    # `docker compose up --scale spawner-service=N`, `docker service scale faas_auth-service=N`.
    assert set(PLATFORM_SERVICES) <= set(compose_services)
    assert set(HTTP_SERVICES) < set(PLATFORM_SERVICES)
    for name in compose_services:
        assert name == name.lower(), f"{name}: compose service names are lowercase"


def test_each_http_service_listens_on_its_own_port_set_in_compose(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    for service, http in HTTP_SERVICES.items():
        env = deploy.environment_of(compose_services[service])
        assert env.get(f"{http.env_prefix}PORT") == str(http.port), (
            f"{service}: set {http.env_prefix}PORT={http.port}"
        )
        assert env.get(f"{http.env_prefix}HOST", ANY_ADDRESS) == ANY_ADDRESS
    assert len({http.port for http in HTTP_SERVICES.values()}) == len(HTTP_SERVICES)


def test_upstreams_are_compose_services_on_the_ports_they_listen_on(
    gateway: dict[str, Any], compose_services: dict[str, dict[str, Any]]
) -> None:
    found = deploy.upstreams(gateway)
    assert set(found) == {http.upstream for http in HTTP_SERVICES.values()}
    for service, http in HTTP_SERVICES.items():
        nodes = deploy.upstream_nodes(found[http.upstream])
        assert nodes == [(service, http.port)], f"upstream {http.upstream}: {nodes}"
        assert service in compose_services, f"upstream host {service} is no compose service"


def test_compose_healthchecks_probe_each_services_own_health_path(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    for service, http in HTTP_SERVICES.items():
        probe = " ".join(compose_services[service]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{http.port}{http.prefix}/health" in probe, probe
        assert deploy.healthcheck_ports(compose_services[service]) == {http.port}, probe


def test_the_publisher_route_waits_as_long_as_a_sync_activation(
    gateway: dict[str, Any], apps: dict[str, FastAPI]
) -> None:
    schemas = apps[REGISTRY].openapi()["components"]["schemas"]
    longest_function = max(
        schema["properties"]["timeout_seconds"].get("maximum", 0)
        for schema in schemas.values()
        if "timeout_seconds" in schema.get("properties", {})
    )
    fields = PublisherSettings.model_fields
    needed = (
        fields["queue_timeout_seconds"].default
        + longest_function
        + fields["reply_grace_seconds"].default
    )
    read = deploy.upstreams(gateway)[HTTP_SERVICES[PUBLISHER].upstream]["timeout"]["read"]
    assert read >= needed, f"publisher read timeout {read} s < {needed} s"


@pytest.mark.parametrize("service", sorted(HTTP_SERVICES))
def test_the_gateway_drops_idle_connections_before_the_service_closes_them(
    service: str, gateway: dict[str, Any], compose_services: dict[str, dict[str, Any]]
) -> None:
    """A request the gateway sends on a connection the service is closing at that moment is
    lost (a 502 for a call that may not be repeated), so the gateway's idle time is shorter."""
    http = HTTP_SERVICES[service]
    upstream = deploy.upstreams(gateway)[http.upstream]
    environment = deploy.environment_of(compose_services[service])
    keep_alive = float(
        environment.get(
            "KEEP_ALIVE_SECONDS", http.settings.model_fields["keep_alive_seconds"].default
        )
    )
    idle = float(upstream["keepalive_pool"]["idle_timeout"])
    assert 0 < idle < keep_alive, f"{http.upstream}: idle {idle} s, service keeps {keep_alive} s"


# --- the jwt-auth consumer and the tokens auth-service signs ------------------------------------


def test_the_consumer_key_is_the_key_claim_auth_service_issues(
    gateway: dict[str, Any], compose_services: dict[str, dict[str, Any]]
) -> None:
    consumers = gateway["consumers"]
    assert len(consumers) == 1, "the platform has exactly one jwt-auth consumer"
    conf = consumers[0]["plugins"]["jwt-auth"]
    key = deploy.apisix_variable(conf["key"])
    default_claim = CommonSettings.model_fields["jwt_consumer_key"].default
    if key is None:
        assert conf["key"] == default_claim
    else:
        assert key.default == default_claim, f"{conf['key']} falls back to another key"
        # The variable reaches the gateway with the value the services get.
        values = {
            name: deploy.environment_of(compose_services[name]).get(key.name, default_claim)
            for name in (GATEWAY, *PLATFORM_SERVICES)
        }
        assert len(set(values.values())) == 1, f"{key.name} differs: {values}"


def test_the_consumer_checks_rs256_with_the_public_key_only(gateway: dict[str, Any]) -> None:
    conf = gateway["consumers"][0]["plugins"]["jwt-auth"]
    assert conf["algorithm"] == "RS256"
    assert "private_key" not in conf
    assert "secret" not in conf
    variable = deploy.apisix_variable(conf["public_key"])
    assert variable is not None, "the key comes from the environment"
    assert variable.default is None, "the key has no fallback"
    entrypoint = deploy.GATEWAY_ENTRYPOINT.read_text(encoding="utf-8")
    assert f"export {variable.name}" in entrypoint


def test_the_gateway_reads_the_public_key_secret_the_services_read(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    gateway = compose_services[GATEWAY]
    key_file = deploy.environment_of(gateway)["JWT_PUBLIC_KEY_FILE"]
    assert key_file in deploy.secret_targets(gateway)
    for name in (REGISTRY, PUBLISHER):
        service = compose_services[name]
        assert deploy.environment_of(service)["JWT_PUBLIC_KEY_FILE"] == key_file
        assert key_file in deploy.secret_targets(service)


def test_only_auth_service_gets_the_private_key(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    holders = {
        name
        for name, svc in compose_services.items()
        if "jwt_private_key" in deploy.secret_names(svc)
    }
    assert holders == {AUTH}
    auth = compose_services[AUTH]
    assert deploy.environment_of(auth)["AUTH_PRIVATE_KEY_FILE"] in deploy.secret_targets(auth)
    assert deploy.environment_of(auth)["AUTH_GENERATE_KEYS"] == "false"


# --- the gateway's configuration ------------------------------------------------------------------


def test_apisix_runs_standalone_from_the_yaml_file() -> None:
    config = deploy.load_apisix_config()
    assert config["deployment"]["role"] == "data_plane"
    assert config["deployment"]["role_data_plane"]["config_provider"] == "yaml"
    assert "etcd" not in config["deployment"]
    assert "admin" not in config["deployment"]
    assert not config.get("apisix", {}).get("enable_admin", False)


def test_the_routes_file_is_marked_complete() -> None:
    lines = [line.strip() for line in deploy.APISIX_ROUTES.read_text().splitlines()]
    assert [line for line in lines if line][-1] == "#END", "APISIX waits for a final #END line"


def test_dns_answers_are_reresolved_quickly() -> None:
    valid = deploy.load_apisix_config()["apisix"]["dns_resolver_valid"]
    assert 0 < valid <= 10, "scaled replicas must be seen within seconds"


def test_the_body_cap_is_the_services_limit() -> None:
    http = deploy.load_apisix_config()["nginx_config"]["http"]
    limit = CommonSettings.model_fields["max_body_bytes"].default
    assert deploy.nginx_size(http["client_max_body_size"]) == limit


def test_metrics_are_exported_to_the_network_not_only_to_loopback() -> None:
    export = deploy.load_apisix_config()["plugin_attr"]["prometheus"]["export_addr"]
    assert export["ip"] != "127.0.0.1"


def test_global_rules_add_request_ids_and_metrics(gateway: dict[str, Any]) -> None:
    plugins: dict[str, Any] = {}
    for rule in gateway["global_rules"]:
        plugins.update(rule["plugins"])
    assert plugins["request-id"]["header_name"].lower() == REQUEST_ID_HEADER
    assert plugins["request-id"]["include_in_response"] is True
    assert "prometheus" in plugins


def test_login_is_rate_limited_per_client_address(gateway_routes: list[deploy.Route]) -> None:
    route = deploy.route_for(gateway_routes, "/auth/login", "POST")
    assert route is not None
    limit = route.plugins["limit-req"]
    assert (limit["key_type"], limit["key"]) == ("var", "remote_addr")
    assert limit["rejected_code"] == 429


def test_activations_are_counted_per_client_address(gateway_routes: list[deploy.Route]) -> None:
    route = deploy.route_for(gateway_routes, "/publisher/publish", "POST")
    assert route is not None
    assert "jwt-auth" in route.plugins
    limit = route.plugins["limit-count"]
    assert (limit["key_type"], limit["key"]) == ("var", "remote_addr")
    assert limit["rejected_code"] == 429
    for path in ("/publisher/executions", f"/publisher/executions/{SAMPLE_PATH_PARAMETER}"):
        other = deploy.route_for(gateway_routes, path, "GET")
        assert other is not None
        assert "limit-count" not in other.plugins, "reads are not counted"


def test_the_gateway_image_pins_an_apisix_release_that_pins_the_token_algorithm() -> None:
    version, base = deploy.gateway_base_image()
    numbers = tuple(int(part) for part in version.split("."))
    assert len(numbers) == 3, f"pin an exact release, not {version}"
    assert numbers >= MIN_APISIX_VERSION
    assert base == "apache/apisix:${APISIX_VERSION}-debian"


def test_the_gateway_listens_where_compose_publishes() -> None:
    listen = deploy.load_apisix_config()["apisix"]["node_listen"]
    published = deploy.services(deploy.load_compose())[GATEWAY]["ports"]
    assert [port["target"] for port in published] == listen


# --- compose: the topology ------------------------------------------------------------------------


def test_only_the_gateway_publishes_a_port(compose_services: dict[str, dict[str, Any]]) -> None:
    publishing = {name for name, svc in compose_services.items() if svc.get("ports")}
    assert publishing == {GATEWAY}
    (port,) = compose_services[GATEWAY]["ports"]
    assert str(port["published"]) == "80"
    assert port["mode"] == "host", "host mode keeps the client's address for the rate limits"


def test_no_service_has_a_container_name(compose_services: dict[str, dict[str, Any]]) -> None:
    named = {name for name, svc in compose_services.items() if "container_name" in svc}
    assert not named, f"a container_name breaks --scale and is ignored by swarm: {named}"


def test_the_replica_counts(compose_services: dict[str, dict[str, Any]]) -> None:
    counts = {name: deploy.replicas(svc) for name, svc in compose_services.items()}
    assert counts == EXPECTED_REPLICAS


def test_every_service_has_a_healthcheck_restart_policies_and_limits(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    for name, service in compose_services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name}: compose restart policy"
        deploy_section = service["deploy"]
        assert deploy_section["restart_policy"]["condition"] in {"any", "on-failure"}, name
        limits = deploy_section["resources"]["limits"]
        assert isinstance(limits["cpus"], str), f"{name}: swarm wants cpus quoted"
        assert limits["memory"], name


def test_the_file_keeps_to_what_docker_stack_deploy_accepts(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    refused_by_swarm = {"mem_limit", "memswap_limit", "pids_limit", "cpus", "group_add", "scale"}
    for name, service in compose_services.items():
        assert not refused_by_swarm & set(service), f"{name}: {refused_by_swarm & set(service)}"
        assert isinstance(service.get("depends_on", []), list), (
            f"{name}: long-form depends_on (conditions) is refused by docker stack deploy"
        )


def test_secrets_are_defined_files_under_the_secrets_directory(compose: dict[str, Any]) -> None:
    defined = compose["secrets"]
    used = set().union(*(deploy.secret_names(svc) for svc in deploy.services(compose).values()))
    assert used == set(defined) == {"db_password", "jwt_private_key", "jwt_public_key"}
    raw = deploy.load_yaml(deploy.COMPOSE_FILE)["secrets"]
    for name, secret in raw.items():
        assert secret["file"].startswith("${FAAS_SECRETS_DIR:-./.secrets}/"), name


def test_the_database_password_comes_only_from_the_secret(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    postgres = deploy.environment_of(compose_services["postgres"])
    assert "POSTGRES_PASSWORD" not in postgres
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    for name in (AUTH, REGISTRY):
        service = compose_services[name]
        env = deploy.environment_of(service)
        url = make_url(env["DATABASE_URL"])
        assert url.password is None, f"{name}: a password in DATABASE_URL"
        assert url.host == "postgres"
        assert url.host in compose_services
        assert (url.username, url.database) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        assert env["DATABASE_PASSWORD_FILE"] in deploy.secret_targets(service)


def test_the_services_settings_accept_the_compose_environment(
    compose_services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    password = tmp_path / "db_password"
    password.write_text("Zq8-long-random-password")
    for name, settings_class in PLATFORM_SERVICES.items():
        env = deploy.environment_of(compose_services[name])
        unknown = set(env) - env_names(settings_class) - NON_SETTINGS_VARIABLES
        assert not unknown, f"{name}: {sorted(unknown)} are not {settings_class.__name__} settings"
        with monkeypatch.context() as patch:
            for variable in env_names(settings_class):
                patch.delenv(variable, raising=False)
            for variable, value in env.items():
                patch.setenv(variable, value)
            if "DATABASE_PASSWORD_FILE" in env:
                patch.setenv("DATABASE_PASSWORD_FILE", str(password))
            settings = settings_class()
        assert settings.environment == "production"
        assert settings.nats_replicas == 3  # auth-service too: it writes the revocations
        if name in HTTP_SERVICES:
            assert getattr(settings, "port", None) == HTTP_SERVICES[name].port, name


def test_publishers_and_spawners_share_the_stream_settings(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    # Both bring the EXECUTIONS stream and the buckets in line with their settings at start-up:
    # every shared setting one of them gets, the other must get with the same value.
    only_one_side = {"JWT_PUBLIC_KEY_FILE", "JWT_JWKS_URL", "MAX_BODY_BYTES"}  # HTTP only
    shared = env_names(CommonSettings) - only_one_side
    publisher = deploy.environment_of(compose_services[PUBLISHER])
    spawner = deploy.environment_of(compose_services[SPAWNER])
    names = (set(publisher) | set(spawner)) & shared
    assert {"MAX_IN_FLIGHT", "MAX_IN_FLIGHT_PER_USER", "NATS_REPLICAS", "NATS_URL"} <= names
    differing = {name for name in names if publisher.get(name) != spawner.get(name)}
    assert not differing, f"publisher and spawner disagree on {sorted(differing)}"


def test_the_spawners_reach_the_hosts_docker_engine(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    spawner = compose_services[SPAWNER]
    # The image's own unprivileged user, with the socket's group as its primary group.
    dockerfile = (deploy.ROOT / "spawner-service" / "Dockerfile").read_text(encoding="utf-8")
    image_user = re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)
    uid, gid = str(spawner["user"]).split(":")
    assert [uid] == image_user[-1:], f"compose runs the spawner as {uid}, the image as {image_user}"
    assert gid == "0", "the group defaults to root's; bin/run.sh passes the socket's (DOCKER_GID)"
    assert deploy.load_yaml(deploy.COMPOSE_FILE)["services"][SPAWNER]["user"].endswith(
        ":${DOCKER_GID:-0}"
    )
    socket = deploy.environment_of(spawner)["DOCKER_HOST"].removeprefix("unix://")
    assert f"{socket}:{socket}" in spawner["volumes"]
    others = [name for name in compose_services if name != SPAWNER]
    for name in others:
        mounts = " ".join(str(volume) for volume in compose_services[name].get("volumes", []))
        assert "docker.sock" not in mounts, f"{name} must not get the Docker socket"


def test_the_spawners_share_the_pools_shim_volume_with_their_function_containers(
    compose: dict[str, Any], compose_services: dict[str, dict[str, Any]]
) -> None:
    spawner = compose_services[SPAWNER]
    env = deploy.environment_of(spawner)
    # The function containers name the volume to the host's engine: its engine name, not
    # compose's key for it (compose and swarm prefix keys with the project or stack name).
    volume = env["SPAWNER_POOL_SHIM_VOLUME"]
    keys = [key for key, spec in compose["volumes"].items() if (spec or {}).get("name") == volume]
    assert keys == ["faas-shim"], f"no volume is named {volume!r} as is"
    shim_dir = env.get(
        "SPAWNER_POOL_SHIM_DIR", SpawnerSettings.model_fields["pool_shim_dir"].default
    )
    assert f"faas-shim:{shim_dir}" in spawner["volumes"]
    assert int(env["SPAWNER_POOL_MAX_PARKED"]) > 0, "the pool is on in compose and swarm"
    for name, service in compose_services.items():
        if name != SPAWNER:
            mounts = [str(volume).split(":")[0] for volume in service.get("volumes", [])]
            assert "faas-shim" not in mounts, f"{name} must not get the shim volume"
    # The image has the shim where SPAWNER_POOL_SHIM says, and the volume's mount point is the
    # spawner's own (a new volume takes its owner).
    dockerfile = (deploy.ROOT / "spawner-service" / "Dockerfile").read_text(encoding="utf-8")
    (shim,) = re.findall(r"SPAWNER_POOL_SHIM=(\S+)", dockerfile)
    assert re.search(rf"^COPY --from=shim \S+ {re.escape(shim)}$", dockerfile, re.MULTILINE)
    uid = str(spawner["user"]).split(":")[0]
    assert f"chown {uid}:{uid} {shim_dir}" in dockerfile


# --- NATS: a three-node JetStream cluster ---------------------------------------------------------


def test_nats_nodes_streams_and_clients_agree(compose_services: dict[str, dict[str, Any]]) -> None:
    nodes = sorted(name for name in compose_services if name.startswith("nats-"))
    assert nodes == ["nats-1", "nats-2", "nats-3"]
    assert deploy.nats_routes() == [f"nats-route://{node}:6222" for node in nodes]
    client_urls = [f"nats://{node}:4222" for node in nodes]
    for name in (REGISTRY, PUBLISHER, SPAWNER):
        env = deploy.environment_of(compose_services[name])
        assert env["NATS_URL"].split(",") == client_urls, f"{name} does not get every node"
        assert int(env["NATS_REPLICAS"]) == len(nodes), f"{name}: replicas != cluster size"


def test_each_nats_node_has_a_stable_name_and_its_own_store(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    assert deploy.nats_setting("server_name") == "$NATS_SERVER_NAME"
    store = deploy.nats_setting("store_dir")
    volumes = set()
    for node in ("nats-1", "nats-2", "nats-3"):
        service = compose_services[node]
        assert deploy.environment_of(service)["NATS_SERVER_NAME"] == node
        (volume,) = service["volumes"]
        source, target = str(volume).split(":")
        assert target == store, f"{node}: the volume is not the JetStream store"
        volumes.add(source)
        assert source in deploy.load_compose()["volumes"]
    assert len(volumes) == 3, "every node needs its own store"


# --- bin/run.sh builds exactly the images compose runs ------------------------------------------


def test_run_sh_builds_the_images_compose_uses(compose_services: dict[str, dict[str, Any]]) -> None:
    built = {image.image: image for image in deploy.run_sh_images()}
    from_compose = {}
    for service in compose_services.values():
        if "build" not in service:
            continue
        image, tag = service["image"].rsplit(":", 1)
        assert tag == "latest"
        build = service["build"]
        from_compose[image] = deploy.BuiltImage(
            image,
            build.get("dockerfile", f"{build['context']}/Dockerfile").removeprefix("./"),
            build["context"],
        )
    assert built == from_compose


def test_the_windows_script_builds_the_same_images_and_has_the_same_modes() -> None:
    assert deploy.run_windows_images() == deploy.run_sh_images()
    text = deploy.RUN_PS1.read_text(encoding="utf-8")
    assert "[ValidateSet('local', 'compose', 'swarm', 'down', 'help')]" in text
    assert "$Mode = 'local'" in text, "local is the default, as in bin/run.sh"


def test_compose_and_swarm_scope_images_to_their_tenants(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    registry = deploy.environment_of(compose_services[REGISTRY])
    publisher = deploy.environment_of(compose_services[PUBLISHER])
    image_settings = {"IMAGE_POLICY", "IMAGE_ALLOW", "IMAGE_REGISTRIES", "IMAGE_REGISTRY_ALLOW"}

    assert registry["IMAGE_POLICY"] == "namespaced"
    assert image_settings <= set(registry)
    assert {name: publisher.get(name) for name in image_settings} == {
        name: registry[name] for name in image_settings
    }, "the publisher judges images at activation as the registry does at registration"
    assert (registry["MAX_FUNCTIONS_PER_USER"], registry["REGISTRY_MAX_ENV_BYTES"]) == (
        "100",
        "32768",
    )


@pytest.mark.parametrize("subnet", [None, "10.77.0.0/24"])
def test_forwarded_for_is_believed_only_from_the_gateways_network(subnet: str | None) -> None:
    compose = deploy.load_compose({"FAAS_BACKEND_SUBNET": subnet} if subnet else {})
    [backend] = [entry["subnet"] for entry in compose["networks"]["backend"]["ipam"]["config"]]
    services = deploy.services(compose)
    assert "backend" in services["apisix"]["networks"]
    assert ipaddress.ip_network(backend).is_private
    for name in HTTP_SERVICES:
        allowed = deploy.environment_of(services[name])["FORWARDED_ALLOW_IPS"]
        trusted = CommonSettings.model_validate({"FORWARDED_ALLOW_IPS": allowed}).trusted_proxies
        assert trusted == (backend,), name
    if subnet:
        assert backend == subnet
