"""What the Docker engine makes of the references ``faas_common.images`` hands it: a bare hex
string may be an image-id prefix, a fully-qualified reference never is, and the normalised form
of a local name is the same image."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from docker.errors import ImageNotFound

from faas_common.images import ImagePolicy, ImageRefused, normalise_image
from tests.support.images import busybox_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def local_image() -> str:
    return busybox_image()


def test_a_hex_prefix_names_an_image_by_id_but_its_normalised_form_does_not(
    engine: docker.DockerClient, local_image: str
) -> None:
    image_id = engine.images.get(local_image).id
    prefix = image_id.removeprefix("sha256:")[:12]

    assert engine.images.get(prefix).id == image_id  # the engine's id-prefix fallback
    with pytest.raises(ImageNotFound):
        engine.images.get(normalise_image(prefix).reference)
    with pytest.raises(ImageRefused, match="Image ids are not allowed"):
        ImagePolicy(mode="namespaced").engine_reference(prefix, "alice")


def test_the_normalised_reference_of_a_local_name_is_the_same_image(
    engine: docker.DockerClient, local_image: str
) -> None:
    reference = ImagePolicy().engine_reference(local_image, "alice")

    assert reference == f"docker.io/{local_image}"
    assert engine.images.get(reference).id == engine.images.get(local_image).id
