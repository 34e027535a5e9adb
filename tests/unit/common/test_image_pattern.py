"""The image reference pattern the OpenAPI documents carry: every reference the parser accepts
matches it, so a client validating against the document never refuses a valid image."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faas_common.validation import IMAGE_REFERENCE_PATTERN, is_valid_image_reference
from registry_service.schemas import FunctionCreate

PATTERN = re.compile(IMAGE_REFERENCE_PATTERN)
DIGEST = "sha256:" + "0123456789abcdef" * 4
VALID = [
    "hello",
    "alpine:3.20",
    "library/ubuntu:22.04",
    "a/b/c/d",
    "my_org/my__app",
    "a--b",
    "my.org/app",
    "docker.io/library/busybox",
    "ghcr.io/acme/fn:v1.2.3",
    "localhost/fn",
    "localhost:5000/fn:dev",
    "Registry.Example.COM/fn",
    "127.0.0.1:5000/team/fn",
    "registry:5000/fn",
    "[::1]:5000/fn:latest",
    f"alpine@{DIGEST}",
    f"localhost:5000/fn:v1@{DIGEST}",
    "fn:_private",
    "fn:UPPER.case-1",
    "localhost:5000",
]
INVALID = ["Hello", "UPPER/fn", "fn:", "fn:.x", "-fn", "a//b", "ghcr.io/", "fn@sha256:abc", ""]


@pytest.mark.parametrize("reference", VALID)
def test_valid_references_match(reference: str) -> None:
    assert is_valid_image_reference(reference)
    assert PATTERN.fullmatch(reference)


@pytest.mark.parametrize("reference", INVALID)
def test_invalid_references_do_not_match(reference: str) -> None:
    assert not is_valid_image_reference(reference)
    assert not PATTERN.fullmatch(reference)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.text(alphabet="ab0_.-/:@[]Z", max_size=24))
def test_whatever_the_parser_accepts_matches(reference: str) -> None:
    if is_valid_image_reference(reference):
        assert PATTERN.fullmatch(reference), reference


def test_the_document_carries_the_pattern() -> None:
    schema = FunctionCreate.model_json_schema()["properties"]["image"]
    assert schema["pattern"] == IMAGE_REFERENCE_PATTERN
    assert schema["type"] == "string"
