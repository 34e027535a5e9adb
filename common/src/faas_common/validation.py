"""Validation shared by services: function names and Docker image references.

The grammar is Docker's distribution reference grammar::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [ domain "/" ] path
    domain           := host [ ":" port ]
    host             := domain-name | "[" IPv6 "]"
    domain-name      := domain-component ( "." domain-component )*
    domain-component := [A-Za-z0-9] | [A-Za-z0-9] [A-Za-z0-9-]* [A-Za-z0-9]
    path             := path-component ( "/" path-component )*
    path-component   := alnum ( separator alnum )*
    alnum            := [a-z0-9]+
    separator        := "." | "_" | "__" | "-"+
    tag              := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest           := "sha256:" 64 lowercase hex digits

with ``name`` at most 255 characters. As Docker does when it normalises a name, the first
component is the registry host only when it contains a ``.`` or a ``:`` or is ``localhost``;
otherwise the whole name is a repository path, which is lowercase (``UPPER/x`` is refused rather
than read as a registry called ``UPPER``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from faas_common.contract import ID_PATTERN

IMAGE_NAME_MAX_LENGTH = 255

FUNCTION_NAME_PATTERN = ID_PATTERN
"""A function's name: one token of a KV key or subject (no ``.``, ``*``, ``>`` or spaces)."""

USERNAME_PATTERN = r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$"
"""A canonical username: a Docker repository path component (the image policy uses
``<username>/...`` as a namespace), lowercase alphanumerics separated by ``.``, ``_``, ``__`` or
runs of ``-``. auth-service stores only such names and every verifier refuses a token naming
another."""
USERNAME_RE = re.compile(USERNAME_PATTERN)
USERNAME_MIN, USERNAME_MAX = 3, 64
RESERVED_USERNAMES = frozenset({"library", "docker", "localhost"})
"""Names no account may take: image namespaces with a meaning of their own (``library/`` is
Docker Hub's official images, ``docker/`` Docker's own, ``localhost/`` a registry host)."""


def is_username(value: str) -> bool:
    """Whether ``value`` is a canonical username (reserved names included: old accounts)."""
    return USERNAME_MIN <= len(value) <= USERNAME_MAX and USERNAME_RE.fullmatch(value) is not None


_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[A-Fa-f0-9:]+\]"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class ParsedImageReference:
    """The parts of a valid image reference (``domain`` is None for Docker Hub names)."""

    domain: str | None
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path


def parse_image_reference(reference: str) -> ParsedImageReference:
    """Split ``reference`` into its parts; ``ValueError`` (with the reason) when it is invalid."""
    if not reference:
        raise ValueError("image reference is empty")
    rest, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValueError("image digest must be sha256: followed by 64 lowercase hex digits")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(
                "image tag must be 1-128 characters of [A-Za-z0-9_.-], not starting with . or -"
            )
    if not rest:
        raise ValueError("image reference has no repository name")
    if len(rest) > IMAGE_NAME_MAX_LENGTH:
        raise ValueError(f"image name is longer than {IMAGE_NAME_MAX_LENGTH} characters")
    domain: str | None = None
    path = rest
    first, slash_found, remainder = rest.partition("/")
    if slash_found and (first == "localhost" or "." in first or ":" in first):
        if not _DOMAIN.fullmatch(first):
            raise ValueError(f"invalid registry host {first!r} in image reference")
        domain, path = first, remainder
    if not _PATH.fullmatch(path):
        raise ValueError(
            "image repository path must be lowercase letters and digits, "
            "separated by '/', '.', '_', '__' or '-'"
        )
    return ParsedImageReference(domain=domain, path=path, tag=tag, digest=digest or None)


def is_valid_image_reference(reference: str) -> bool:
    try:
        parse_image_reference(reference)
    except ValueError:
        return False
    return True


def _check_image_reference(reference: str) -> str:
    parse_image_reference(reference)
    return reference


_PORT = r"(?::[0-9]+)?"
_REGISTRY = (
    rf"(?:localhost{_PORT}|{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+{_PORT}"
    rf"|{_DOMAIN_COMPONENT}:[0-9]+|{_IPV6}{_PORT})"
)
IMAGE_REFERENCE_PATTERN = (
    rf"^(?:{_REGISTRY}/)?{_PATH.pattern}(?::{_TAG.pattern})?(?:@{_DIGEST.pattern})?$"
)
"""The grammar above as one regular expression for the OpenAPI documents (JSON Schema's
``pattern``). It accepts every reference ``parse_image_reference`` accepts; the parser alone also
checks the name's length and that a first component with a ``.`` is a valid host."""

ImageReference = Annotated[
    str,
    AfterValidator(_check_image_reference),
    Field(json_schema_extra={"pattern": IMAGE_REFERENCE_PATTERN}),
]
"""A ``str`` field that must be a valid Docker image reference (pydantic type)."""


def _integral(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


IntegralNumber = BeforeValidator(_integral)
"""Makes a strict ``int`` field JSON Schema's ``integer``: ``135`` and ``135.0`` are 135; ``135.5``,
``"135"`` and ``true`` are refused. Put it last, after the field's constraints, so that they stay
in the JSON schema: ``Annotated[int, Field(strict=True, ge=1), IntegralNumber]``."""
