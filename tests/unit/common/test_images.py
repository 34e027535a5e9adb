"""Image references normalised as Docker does, the image policy, and internal registry hosts."""

from __future__ import annotations

import ipaddress

import pytest

from faas_common.images import (
    ImagePolicy,
    ImageRefused,
    is_image_id,
    is_internal_address,
    literal_address,
    normalise_image,
    parse_allow_prefixes,
    parse_registries,
    registry_host_verdict,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("reference", "normalised"),
    [
        ("alice/x", "docker.io/alice/x:latest"),
        ("docker.io/alice/x", "docker.io/alice/x:latest"),
        ("index.docker.io/alice/x:latest", "docker.io/alice/x:latest"),
        ("registry-1.docker.io/alice/x", "docker.io/alice/x:latest"),
        ("Docker.IO/alice/x", "docker.io/alice/x:latest"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("Registry.Example.com/team/fn:V1", "registry.example.com/team/fn:V1"),
        ("registry.example.com/fn", "registry.example.com/fn:latest"),
        ("localhost/fn", "localhost/fn:latest"),
        ("localhost:5000/fn:dev", "localhost:5000/fn:dev"),
        (f"alice/x@{DIGEST}", f"docker.io/alice/x@{DIGEST}"),
        (f"alice/x:v1@{DIGEST}", f"docker.io/alice/x:v1@{DIGEST}"),
        ("[::1]:5000/fn", "[::1]:5000/fn:latest"),
    ],
)
def test_every_spelling_of_an_image_normalises_to_one_reference(
    reference: str, normalised: str
) -> None:
    assert normalise_image(reference).reference == normalised


def test_normalising_refuses_what_is_not_a_reference() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        normalise_image("UPPER/x")


@pytest.mark.parametrize(
    ("reference", "is_id"),
    [
        (DIGEST, True),
        ("sha256:86207db6", True),
        ("86207db6f948", True),
        ("cafe", True),
        ("86207db6:latest", False),
        ("alice/86207db6", False),
        ("busybox", False),
        ("sha256", False),
    ],
)
def test_image_ids_are_what_the_engine_may_read_as_an_id(reference: str, is_id: bool) -> None:
    assert is_image_id(reference) is is_id


NAMESPACED = ImagePolicy(mode="namespaced")


@pytest.mark.parametrize(
    "reference",
    [
        "alice/x",
        "docker.io/alice/x",
        "index.docker.io/alice/x:latest",
        "alice/team/x:v2",
        f"alice/x@{DIGEST}",
    ],
)
def test_namespaced_admits_the_users_own_namespace_in_every_spelling(reference: str) -> None:
    assert NAMESPACED.engine_reference(reference, "alice") == normalise_image(reference).reference


@pytest.mark.parametrize(
    "reference",
    [
        "bob/x",
        "docker.io/bob/x",
        "alicex/y",
        "alice",
        "library/alice",
        "busybox",
        "registry.example.com/alice/x",
        "127.0.0.1:5000/alice/x",
    ],
)
def test_namespaced_refuses_every_other_repository(reference: str) -> None:
    with pytest.raises(ImageRefused, match="not allowed"):
        NAMESPACED.engine_reference(reference, "alice")


@pytest.mark.parametrize("reference", [DIGEST, "sha256:86207db6", "86207db6f948"])
def test_namespaced_refuses_image_ids(reference: str) -> None:
    with pytest.raises(ImageRefused, match="Image ids are not allowed"):
        NAMESPACED.engine_reference(reference, "alice")


def test_the_namespace_is_the_lowercased_username() -> None:
    assert NAMESPACED.engine_reference("alice/x", "Alice") == "docker.io/alice/x:latest"


def test_namespaced_registries_add_hosts_where_the_namespace_is_the_users() -> None:
    policy = ImagePolicy(
        mode="namespaced", registries=parse_registries("Registry.Example.com") | {"docker.io"}
    )

    assert (
        policy.engine_reference("registry.example.com/alice/x:1", "alice")
        == "registry.example.com/alice/x:1"
    )
    assert policy.engine_reference("alice/x", "alice") == "docker.io/alice/x:latest"
    with pytest.raises(ImageRefused):
        policy.engine_reference("other.example.com/alice/x", "alice")


def test_the_allow_list_admits_normalised_prefixes_for_everyone() -> None:
    policy = ImagePolicy(
        mode="namespaced",
        allow=parse_allow_prefixes("index.docker.io/library/, registry.example.com/shared/"),
    )

    assert policy.engine_reference("busybox", "bob") == "docker.io/library/busybox:latest"
    assert (
        policy.engine_reference("docker.io/library/busybox:1.36", "bob")
        == "docker.io/library/busybox:1.36"
    )
    assert (
        policy.engine_reference("registry.example.com/shared/tool", "bob")
        == "registry.example.com/shared/tool:latest"
    )
    for refused in ("alice/x", "registry.example.com/sharedx/tool", "docker.io.example.com/x"):
        with pytest.raises(ImageRefused):
            policy.engine_reference(refused, "bob")


def test_any_admits_everything_and_hands_ids_to_the_engine_unchanged() -> None:
    policy = ImagePolicy()

    assert policy.engine_reference("bob/x", "alice") == "docker.io/bob/x:latest"
    assert policy.engine_reference(DIGEST, "alice") == DIGEST
    assert policy.engine_reference("86207db6", "alice") == "86207db6"


@pytest.mark.parametrize("entry", ["library/", "docker.io", "busybox", "/x"])
def test_allow_entries_must_start_with_a_registry_host_and_a_slash(entry: str) -> None:
    with pytest.raises(ValueError, match="IMAGE_ALLOW entry"):
        parse_allow_prefixes(entry)


@pytest.mark.parametrize(
    "entry", ["registry.example.com/shared", "docker.io/library/python", "docker.io/library/py"]
)
def test_allow_entries_must_end_a_path_component(entry: str) -> None:
    with pytest.raises(ValueError, match=f"IMAGE_ALLOW entry {entry!r} must end with '/'"):
        parse_allow_prefixes(entry)


def test_allow_entries_end_with_a_slash_a_colon_or_name_a_digest() -> None:
    pinned = f"docker.io/library/busybox@{DIGEST}"
    policy = ImagePolicy(
        mode="namespaced",
        allow=parse_allow_prefixes(
            f"registry.example.com/shared/, docker.io/library/python:, {pinned}"
        ),
    )

    assert policy.engine_reference("python:3.12", "bob") == "docker.io/library/python:3.12"
    assert policy.engine_reference(f"busybox@{DIGEST}", "bob") == pinned
    for refused in ("registry.example.com/shared-evil/x", "python3:1", "busybox", "pythonx"):
        with pytest.raises(ImageRefused):
            policy.engine_reference(refused, "bob")


@pytest.mark.parametrize("username", ["library", "Library", "docker", "localhost"])
def test_a_reserved_name_is_never_a_users_namespace(username: str) -> None:
    for reference in (f"{username.lower()}/x", "busybox", f"docker.io/{username.lower()}/x:1"):
        with pytest.raises(ImageRefused, match="not allowed"):
            NAMESPACED.engine_reference(reference, username)


def test_registry_entries_are_hosts() -> None:
    assert parse_registries(" Localhost:5000 ,index.docker.io,, [::1]") == {
        "localhost:5000",
        "docker.io",
        "[::1]",
    }
    with pytest.raises(ValueError, match="host or host:port"):
        parse_registries("registry.example.com/team")


INTERNAL_REGISTRIES = [
    "127.0.0.1:8091",
    "127.1:5000",
    "2130706433:5000",
    "0x7f.0.0.1:5000",
    "10.0.0.1",
    "172.16.0.1:5000",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.0:5000",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "[::1]:5000",
    "[::]",
    "[fe80::1]",
    "[fc00::1]",
    "[fd12:3456::1]",
    "[fec0::1]",
    "[ff02::1]",
    "[::ffff:7f00:1]",
    "[64:ff9b::a00:1]",
    "[2002:7f00:1::1]",
    "localhost:5000",
    "localhost",
    "registry.localhost",
]


@pytest.mark.parametrize("registry", INTERNAL_REGISTRIES)
def test_internal_registry_hosts_are_refused(registry: str) -> None:
    image = normalise_image(f"{registry}/team/fn:1")

    assert registry_host_verdict(image, frozenset()) == "internal"


@pytest.mark.parametrize("registry", ["8.8.8.8:5000", "[2606:4700::1111]"])
def test_global_address_literals_are_allowed(registry: str) -> None:
    image = normalise_image(f"{registry}/team/fn:1")

    assert registry_host_verdict(image, frozenset()) == "allowed"


@pytest.mark.parametrize("reference", ["alice/x", "docker.io/alice/x", "index.docker.io/a/b"])
def test_docker_hub_is_never_checked(reference: str) -> None:
    assert registry_host_verdict(normalise_image(reference), frozenset()) == "allowed"


def test_other_names_are_decided_by_their_addresses() -> None:
    image = normalise_image("registry.example.com/team/fn")

    assert registry_host_verdict(image, frozenset()) == "resolve"


def test_the_operator_allows_a_host_on_one_port_or_on_every_port() -> None:
    one_port = parse_registries("127.0.0.1:5000")
    every_port = parse_registries("localhost,[::1]")

    assert registry_host_verdict(normalise_image("127.0.0.1:5000/x"), one_port) == "allowed"
    assert registry_host_verdict(normalise_image("127.0.0.1:5001/x"), one_port) == "internal"
    assert registry_host_verdict(normalise_image("127.0.0.1/x"), one_port) == "internal"
    assert registry_host_verdict(normalise_image("localhost:5000/x"), every_port) == "allowed"
    assert registry_host_verdict(normalise_image("localhost/x"), every_port) == "allowed"
    assert registry_host_verdict(normalise_image("[::1]:5000/x"), every_port) == "allowed"


def test_literal_addresses_in_every_spelling_the_resolver_reads_without_a_lookup() -> None:
    assert literal_address("127.1") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("2130706433") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("::1") == ipaddress.ip_address("::1")
    assert literal_address("registry.example.com") is None


@pytest.mark.parametrize(("address", "internal"), [("93.184.215.14", False), ("10.1.2.3", True)])
def test_internal_addresses(address: str, internal: bool) -> None:
    assert is_internal_address(ipaddress.ip_address(address)) is internal
