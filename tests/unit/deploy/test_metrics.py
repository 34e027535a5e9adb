"""The metrics topology: deploy/prometheus.yml scrapes every platform service (and APISIX's
exporter) on the ports docker-compose.yml gives them, and nothing public reaches a metrics
endpoint: no published port, no gateway route. Everything here is parsed: nothing is started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from auth_service.config import AuthSettings
from auth_service.main import create_app as create_auth_app
from faas_common.settings import CommonSettings
from publisher_service.config import PublisherSettings
from publisher_service.main import create_app as create_publisher_app
from registry_service.config import RegistrySettings
from registry_service.main import create_app as create_registry_app
from spawner_service.config import SpawnerSettings
from tests.support import deploy

PROMETHEUS = deploy.ROOT / "deploy" / "prometheus.yml"
GATEWAY = "apisix"
APISIX_METRICS_PATH = "/apisix/prometheus/metrics"
PLATFORM_SERVICES: dict[str, type[CommonSettings]] = {
    "auth-service": AuthSettings,
    "registry-service": RegistrySettings,
    "publisher-service": PublisherSettings,
    "spawner-service": SpawnerSettings,
}
PREFIXES = ("/auth", "/registry", "/publisher")


@pytest.fixture(scope="module")
def jobs() -> dict[str, dict[str, Any]]:
    config = deploy.load_yaml(PROMETHEUS)
    return {str(job["job_name"]): job for job in config["scrape_configs"]}


def targets(job: dict[str, Any]) -> list[tuple[str, int]]:
    """(name, port) of each DNS name the job resolves."""
    found = []
    for entry in job.get("dns_sd_configs") or []:
        assert entry.get("type", "SRV") == "A", f"{job['job_name']}: an A lookup with a port"
        found += [(str(name), int(entry["port"])) for name in entry["names"]]
    return found


def metrics_port(compose_services: dict[str, dict[str, Any]], name: str) -> int:
    """The port the service's settings give its metrics server with compose's environment."""
    env = deploy.environment_of(compose_services[name])
    default = PLATFORM_SERVICES[name].model_fields["metrics_port"].default
    return int(env.get("METRICS_PORT", default))


def apisix_export_port() -> int:
    export = deploy.load_apisix_config()["plugin_attr"]["prometheus"]["export_addr"]
    return int(export["port"])


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    return {
        "/auth": create_auth_app(AuthSettings(private_key_file=Path("unused.pem"))),
        "/registry": create_registry_app(RegistrySettings(jwt_public_key_file=Path("unused"))),
        "/publisher": create_publisher_app(PublisherSettings(jwt_public_key_file=Path("unused"))),
    }


def test_every_platform_service_is_scraped_on_the_metrics_port_it_has_in_compose(
    jobs: dict[str, dict[str, Any]], compose_services: dict[str, dict[str, Any]]
) -> None:
    for name in PLATFORM_SERVICES:
        assert name in jobs, f"deploy/prometheus.yml has no job {name}"
        port = metrics_port(compose_services, name)
        assert targets(jobs[name]) == [(name, port)], name
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"


def test_the_metrics_ports_are_the_services_defaults_and_differ_from_their_api_ports(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    ports = {name: metrics_port(compose_services, name) for name in PLATFORM_SERVICES}
    for name, settings in PLATFORM_SERVICES.items():
        assert ports[name] == settings.model_fields["metrics_port"].default, name
        api = {
            int(value)
            for variable, value in deploy.environment_of(compose_services[name]).items()
            if variable.endswith("_PORT") and variable != "METRICS_PORT" and value.isdigit()
        }
        assert ports[name] not in api, name
    assert len(set(ports.values())) == len(ports)


def test_every_job_targets_a_compose_service(
    jobs: dict[str, dict[str, Any]], compose_services: dict[str, dict[str, Any]]
) -> None:
    for job in jobs.values():
        for name, _ in targets(job):
            assert name in compose_services, f"job {job['job_name']} scrapes no service {name}"


def test_apisix_is_scraped_on_its_own_internal_exporter(jobs: dict[str, dict[str, Any]]) -> None:
    assert targets(jobs[GATEWAY]) == [(GATEWAY, apisix_export_port())]
    assert jobs[GATEWAY]["metrics_path"] == APISIX_METRICS_PATH


def test_each_replica_is_scraped_on_its_own_in_swarm_too(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    # A virtual IP would hand each scrape to any replica: the name must resolve to every task.
    for name in PLATFORM_SERVICES:
        assert compose_services[name]["deploy"]["endpoint_mode"] == "dnsrr", name


def test_no_metrics_port_is_published(compose_services: dict[str, dict[str, Any]]) -> None:
    metrics = {metrics_port(compose_services, name) for name in PLATFORM_SERVICES}
    metrics.add(apisix_export_port())
    for name, service in compose_services.items():
        published = service.get("ports") or []
        if name != GATEWAY:
            assert not published, f"{name} publishes {published}"
        for entry in published:
            target = int(entry["target"]) if isinstance(entry, dict) else int(str(entry)[-4:])
            assert target not in metrics, f"{name} publishes the metrics port {target}"


def test_no_gateway_route_reaches_a_metrics_endpoint(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    config = deploy.load_apisix_routes()
    routes = deploy.routes(config)
    for path in ("/metrics", APISIX_METRICS_PATH, "/apisix/prometheus/metrics/x"):
        assert deploy.route_for(routes, path, "GET") is None, f"{path} is routed"
    metrics = {metrics_port(compose_services, name) for name in PLATFORM_SERVICES}
    metrics.add(apisix_export_port())
    for upstream_id, upstream in deploy.upstreams(config).items():
        for host, port in deploy.upstream_nodes(upstream):
            assert port not in metrics, f"upstream {upstream_id} reaches {host}:{port}"
    exposing = [route.id for route in routes if "public-api" in route.plugins]
    assert not exposing, f"routes {exposing} expose the gateway's own metrics"


def test_the_routed_api_ports_serve_no_metrics(apps: dict[str, FastAPI]) -> None:
    # /auth/metrics and the like reach the services' API ports through /auth/*: nothing there.
    for prefix, app in apps.items():
        paths = {str(getattr(route, "path", "")) for route in app.routes}
        assert not {path for path in paths if "metrics" in path}, prefix
        assert all(path.startswith(prefix) for path in app.openapi()["paths"]), prefix
