"""Images are tenant-scoped in a stack that runs them as compose and swarm do
(``IMAGE_POLICY=namespaced``): alice's image on the shared engine is hers whatever bob calls it,
the operator's ``IMAGE_ALLOW`` prefixes are everyone's, and an image on a loopback registry is
refused before the engine ever sees it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import User, register, running_stack
from tests.support.images import busybox_image, docker

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

HTTP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Secret:
    reference: str
    """``alice/secret-<hex>:1``: an image under alice's namespace, present on the engine."""
    image_id: str


@dataclass(frozen=True)
class Tenants:
    alice: User
    bob: User
    shared: str
    """An image under the operator's ``IMAGE_ALLOW`` prefix."""


@pytest.fixture(scope="module")
def secret() -> Iterator[Secret]:
    reference = f"alice/secret-{uuid.uuid4().hex[:8]}:1"
    docker("tag", busybox_image(), reference)
    image_id = docker("image", "inspect", "--format", "{{.Id}}", reference).strip()
    try:
        yield Secret(reference, image_id)
    finally:
        docker("rmi", reference)  # the tag only: the image keeps its other name


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    shared = busybox_image()  # faas-test/busybox:1
    with (
        running_stack(
            Path(tmp_path_factory.mktemp("images")),
            IMAGE_POLICY="namespaced",
            IMAGE_ALLOW="docker.io/faas-test/",
        ) as stack,
        httpx.Client(base_url=stack.url, timeout=HTTP_TIMEOUT) as client,
    ):
        yield Tenants(
            alice=register(client, "alice", "wonderland-42"),
            bob=register(client, "bob", "builder-1234"),
            shared=shared,
        )


def create(user: User, name: str, image: str) -> httpx.Response:
    return user.post("/registry/functions", json={"name": name, "image": image})


def run(user: User, name: str, argument: str) -> httpx.Response:
    return user.post("/publisher/publish", json={"name": name, "argument": argument})


def test_alice_runs_the_image_under_her_namespace(tenants: Tenants, secret: Secret) -> None:
    assert create(tenants.alice, "secret", secret.reference).status_code == 201

    response = run(tenants.alice, "secret", "echo mine")

    assert response.status_code == 200, response.text
    assert response.json()["result"] == "mine"


@pytest.mark.parametrize(
    "spelling", ["as is", "docker.io", "index.docker.io", "image id", "id prefix"]
)
def test_bob_cannot_name_alices_image_in_any_spelling(
    tenants: Tenants, secret: Secret, spelling: str
) -> None:
    image = {
        "as is": secret.reference,
        "docker.io": f"docker.io/{secret.reference}",
        "index.docker.io": f"index.docker.io/{secret.reference}",
        "image id": secret.image_id,
        "id prefix": secret.image_id.removeprefix("sha256:")[:12],
    }[spelling]

    response = create(tenants.bob, f"steal-{spelling.replace(' ', '-').replace('.', '-')}", image)

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "image_not_allowed"


def test_an_allowed_prefix_is_everyones(tenants: Tenants) -> None:
    assert create(tenants.bob, "shared", tenants.shared).status_code == 201

    response = run(tenants.bob, "shared", "echo ours")

    assert response.status_code == 200, response.text
    assert response.json()["result"] == "ours"


@pytest.mark.parametrize("image", ["127.0.0.1:4222/bob/x:1", "localhost:8080/bob/x"])
def test_a_loopback_registry_is_refused_at_registration(tenants: Tenants, image: str) -> None:
    response = create(tenants.bob, "loop", image)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "image_registry_not_allowed"
