"""Docker image references: what ``docker run IMAGE`` accepts passes, anything else is refused."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from faas_common.validation import (
    IMAGE_NAME_MAX_LENGTH,
    ImageReference,
    ParsedImageReference,
    is_valid_image_reference,
    parse_image_reference,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("hello", ParsedImageReference(None, "hello", None, None)),
        ("alpine:3.20", ParsedImageReference(None, "alpine", "3.20", None)),
        ("library/ubuntu:22.04", ParsedImageReference(None, "library/ubuntu", "22.04", None)),
        ("acme/echo-fn", ParsedImageReference(None, "acme/echo-fn", None, None)),
        ("a/b/c/d", ParsedImageReference(None, "a/b/c/d", None, None)),
        ("my_org/my__app", ParsedImageReference(None, "my_org/my__app", None, None)),
        ("my.org/app", ParsedImageReference("my.org", "app", None, None)),
        ("a--b", ParsedImageReference(None, "a--b", None, None)),
        (
            "docker.io/library/busybox",
            ParsedImageReference("docker.io", "library/busybox", None, None),
        ),
        ("ghcr.io/acme/fn:v1.2.3", ParsedImageReference("ghcr.io", "acme/fn", "v1.2.3", None)),
        ("localhost/fn", ParsedImageReference("localhost", "fn", None, None)),
        ("localhost:5000/fn:dev", ParsedImageReference("localhost:5000", "fn", "dev", None)),
        ("Registry.Example.COM/fn", ParsedImageReference("Registry.Example.COM", "fn", None, None)),
        ("127.0.0.1:5000/team/fn", ParsedImageReference("127.0.0.1:5000", "team/fn", None, None)),
        ("[::1]:5000/fn:latest", ParsedImageReference("[::1]:5000", "fn", "latest", None)),
        (f"alpine@{DIGEST}", ParsedImageReference(None, "alpine", None, DIGEST)),
        (f"alpine:3.20@{DIGEST}", ParsedImageReference(None, "alpine", "3.20", DIGEST)),
        (
            f"localhost:5000/fn:v1@{DIGEST}",
            ParsedImageReference("localhost:5000", "fn", "v1", DIGEST),
        ),
        ("fn:_private", ParsedImageReference(None, "fn", "_private", None)),
        ("fn:UPPER.case-1", ParsedImageReference(None, "fn", "UPPER.case-1", None)),
        # Without a slash the host-looking word is the image name, as for Docker.
        ("localhost:5000", ParsedImageReference(None, "localhost", "5000", None)),
    ],
)
def test_valid_references_are_parsed(reference: str, expected: ParsedImageReference) -> None:
    assert parse_image_reference(reference) == expected
    assert is_valid_image_reference(reference)


def test_parsed_name_joins_domain_and_path() -> None:
    assert parse_image_reference("ghcr.io/acme/fn:v1").name == "ghcr.io/acme/fn"
    assert parse_image_reference("acme/fn:v1").name == "acme/fn"


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param(":latest", "no repository name", id="tag-only"),
        pytest.param(f"@{DIGEST}", "no repository name", id="digest-only"),
        pytest.param("Hello", "lowercase", id="uppercase-name"),
        pytest.param("UPPER/fn", "lowercase", id="uppercase-first-component"),
        pytest.param("ghcr.io/Acme/fn", "lowercase", id="uppercase-path-after-host"),
        pytest.param("fn:", "tag", id="empty-tag"),
        pytest.param("fn:.hidden", "tag", id="tag-starts-with-dot"),
        pytest.param("fn:-x", "tag", id="tag-starts-with-dash"),
        pytest.param("fn:" + "t" * 129, "tag", id="tag-129-chars"),
        pytest.param("fn:a b", "tag", id="tag-with-space"),
        pytest.param("fn@sha256:abc", "digest", id="short-digest"),
        pytest.param("fn@sha256:" + "A" * 64, "digest", id="uppercase-digest"),
        pytest.param("fn@md5:" + "0" * 32, "digest", id="unknown-algorithm"),
        pytest.param(f"fn@{DIGEST}@{DIGEST}", "digest", id="two-digests"),
        pytest.param("fn@", "digest", id="empty-digest"),
        pytest.param("-fn", "lowercase", id="leading-dash"),
        pytest.param("fn-", "lowercase", id="trailing-dash"),
        pytest.param("a..b", "lowercase", id="double-dot"),
        pytest.param("a___b", "lowercase", id="triple-underscore"),
        pytest.param("a//b", "lowercase", id="empty-component"),
        pytest.param("acme/", "lowercase", id="trailing-slash"),
        pytest.param("/acme", "lowercase", id="leading-slash"),
        pytest.param("ghcr.io/", "lowercase", id="host-without-path"),
        pytest.param("my_registry.io/fn", "registry host", id="underscore-in-host"),
        pytest.param("-bad.io/fn", "registry host", id="host-starts-with-dash"),
        pytest.param("host:port/fn", "registry host", id="non-numeric-port"),
        pytest.param(" alpine", "lowercase", id="leading-space"),
        pytest.param("alpine ", "lowercase", id="trailing-space"),
        pytest.param("alpine\n", "lowercase", id="trailing-newline"),
        pytest.param("alpine:latest\n", "tag", id="newline-after-tag"),
        pytest.param("alpine;rm -rf /", "lowercase", id="shell-metacharacters"),
        pytest.param("--privileged", "lowercase", id="option-lookalike"),
        pytest.param("caf\u00e9", "lowercase", id="non-ascii"),
        pytest.param("\uff41lpine", "lowercase", id="fullwidth-letter"),
        pytest.param("alpine:\u0663", "tag", id="non-ascii-digit-tag"),
    ],
)
def test_invalid_references_are_refused_with_a_reason(reference: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_image_reference(reference)
    assert not is_valid_image_reference(reference)


def test_name_length_limit() -> None:
    longest = "a" * IMAGE_NAME_MAX_LENGTH
    assert is_valid_image_reference(longest)
    assert is_valid_image_reference(f"{longest}:latest")
    with pytest.raises(ValueError, match="longer than 255"):
        parse_image_reference(longest + "a")
    host = "registry.example.com/"
    assert is_valid_image_reference(host + "b" * (IMAGE_NAME_MAX_LENGTH - len(host)))
    assert not is_valid_image_reference(host + "b" * (IMAGE_NAME_MAX_LENGTH - len(host) + 1))


def test_tag_length_limit() -> None:
    assert is_valid_image_reference("fn:" + "t" * 128)
    assert not is_valid_image_reference("fn:" + "t" * 129)


def test_huge_input_is_refused_quickly() -> None:
    assert not is_valid_image_reference("a-" * 100_000 + "!")
    assert not is_valid_image_reference("a" * 1_000_000)


class Function(BaseModel):
    image: ImageReference


def test_pydantic_field_accepts_and_keeps_a_valid_reference() -> None:
    assert Function(image="ghcr.io/acme/fn:v1").image == "ghcr.io/acme/fn:v1"


@pytest.mark.parametrize("value", ["Not/Valid", "", "fn:", 42, None])
def test_pydantic_field_refuses_invalid_values(value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        Function.model_validate({"image": value})
    (error,) = raised.value.errors()
    assert error["loc"] == ("image",)
