"""Image references as the Docker engine reads them, and the platform's image policy.

Pure functions of the standard library only (no web, database or NATS import): the registry
judges references with them at registration and update, the publisher again at activation.

**Normalisation** follows docker/distribution (``ParseNormalizedNamed`` then ``TagNameOnly``), so
every spelling that names one image is judged as one reference:

- the first component is the registry host when it contains ``.`` or ``:`` or is ``localhost``;
  otherwise the registry is ``docker.io``; hosts are lowercased (DNS names are case-insensitive)
  and ``index.docker.io`` / ``registry-1.docker.io`` are ``docker.io``;
- a one-component repository on ``docker.io`` is under ``library/``;
- no tag and no digest means ``:latest``; a digest is kept (with the tag when both are given).

``alice/x``, ``docker.io/alice/x`` and ``index.docker.io/alice/x:latest`` all normalise to
``docker.io/alice/x:latest``. That fully-qualified reference is what the engine is given: a
fully-qualified name never falls back to an image-id prefix match, so the engine runs the image
that was judged.

**Image ids.** ``sha256:<hex>`` and a bare hex string (``3f5a``) are what the engine may resolve
as an image id (or id prefix) rather than a repository. ``IMAGE_POLICY=namespaced`` refuses them;
``any`` hands them to the engine unchanged (``docker run`` semantics for the single developer).

**Policy** (``ImagePolicy``): ``any`` admits every reference; ``namespaced`` admits a reference
when its repository is under the user's own namespace (``<username>/...``, username lowercased)
on one of the namespaced registries (``docker.io`` plus ``IMAGE_REGISTRIES``), or when the
normalised reference starts with one of the operator's ``IMAGE_ALLOW`` prefixes. A reserved name
(``faas_common.validation.RESERVED_USERNAMES``: ``library``, Docker Hub's official images, among
them) is never a user's namespace, even for an account that took it before it was reserved.

**Registry hosts** (``registry_host_verdict``): a registry host that is a loopback, private
(RFC 1918, 100.64/10), link-local, unique-local, site-local, unspecified, multicast or reserved
address, or the name ``localhost`` (and ``*.localhost``), is internal and refused unless the host
or ``host:port`` is in ``IMAGE_REGISTRY_ALLOW``. Other names need resolving (the registry service
does that, with an injectable resolver); ``docker.io`` is never checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from faas_common.validation import RESERVED_USERNAMES, parse_image_reference

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", "registry-1.docker.io"})
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"

PolicyMode = Literal["any", "namespaced"]
HostVerdict = Literal["allowed", "internal", "resolve"]

_IMAGE_ID = re.compile(r"(?:sha256:)?[a-f0-9]{1,64}")
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ImageRefused(ValueError):
    """The policy does not admit a reference; the message is a sentence for the user."""


@dataclass(frozen=True, slots=True)
class NormalisedImage:
    registry: str
    """Lowercased ``host[:port]`` (``docker.io`` for Docker Hub)."""
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.path}"

    @property
    def reference(self) -> str:
        """The fully-qualified reference (Docker's normalised string)."""
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"

    @property
    def host(self) -> str:
        """The registry host without its port (an IPv6 literal without its brackets)."""
        return split_registry(self.registry)[0]


def normalise_registry(registry: str) -> str:
    registry = registry.lower()
    return DOCKER_HUB if registry in DOCKER_HUB_ALIASES else registry


def split_registry(registry: str) -> tuple[str, int | None]:
    """``host[:port]`` as ``(host, port)``; ``[::1]:5000`` is ``("::1", 5000)``."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, colon, port = registry.partition(":")
    return host, int(port) if colon else None


def normalise_image(reference: str) -> NormalisedImage:
    """The reference as the engine reads it; ``ValueError`` when it is not a valid reference."""
    parsed = parse_image_reference(reference)
    registry = normalise_registry(parsed.domain) if parsed.domain else DOCKER_HUB
    path = parsed.path
    if registry == DOCKER_HUB and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    tag = parsed.tag
    if tag is None and parsed.digest is None:
        tag = DEFAULT_TAG
    return NormalisedImage(registry=registry, path=path, tag=tag, digest=parsed.digest)


def is_image_id(reference: str) -> bool:
    """Whether the engine may read ``reference`` as an image id or id prefix."""
    return _IMAGE_ID.fullmatch(reference) is not None


# --- Policy -----------------------------------------------------------------------------------


def parse_allow_prefixes(text: str) -> tuple[str, ...]:
    """``IMAGE_ALLOW``: comma-separated prefixes of normalised references.

    Each entry starts with a registry host and a ``/`` (``docker.io/library/``), so a prefix can
    never match another host (``docker.io`` alone would match ``docker.io.example.com/...``), and
    ends a component: with ``/`` (a namespace), ``:`` (every tag of one repository) or a digest
    (``...@sha256:...``, one image), so ``registry.example.com/shared`` cannot also admit
    ``registry.example.com/shared-evil``. The host is normalised like a reference's (lowercase,
    Docker Hub aliases are ``docker.io``).
    """
    prefixes = []
    for entry in _entries(text):
        registry, slash, rest = entry.partition("/")
        if not slash or not _looks_like_registry(registry):
            raise ValueError(
                f"IMAGE_ALLOW entry {entry!r} must start with a registry host and '/', "
                "e.g. docker.io/library/ or registry.example.com/shared/"
            )
        if not (entry.endswith(("/", ":")) or "@" in entry):
            raise ValueError(
                f"IMAGE_ALLOW entry {entry!r} must end with '/' (a namespace) or ':' (every tag "
                "of one repository), or name a digest, e.g. registry.example.com/shared/ or "
                "docker.io/library/python:"
            )
        prefixes.append(f"{normalise_registry(registry)}/{rest}")
    return tuple(prefixes)


def parse_registries(text: str) -> frozenset[str]:
    """``IMAGE_REGISTRIES``, ``IMAGE_REGISTRY_ALLOW``: comma-separated ``host`` / ``host:port``."""
    registries = set()
    for entry in _entries(text):
        if "/" in entry or not entry.strip("[]:"):
            raise ValueError(f"registry entry {entry!r} must be a host or host:port")
        registries.add(normalise_registry(entry))
    return frozenset(registries)


def _entries(text: str) -> Iterable[str]:
    return (entry.strip() for entry in text.split(",") if entry.strip())


def _looks_like_registry(component: str) -> bool:
    return component == "localhost" or "." in component or ":" in component


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    mode: PolicyMode = "any"
    allow: tuple[str, ...] = ()
    """Prefixes of normalised references admitted for everyone (``IMAGE_ALLOW``)."""
    registries: frozenset[str] = field(default_factory=lambda: frozenset({DOCKER_HUB}))
    """Registries on which ``<username>/`` is the user's namespace."""

    def engine_reference(self, reference: str, username: str) -> str:
        """The reference to give the engine for ``username``; ``ImageRefused`` when not admitted.

        ``ValueError`` (``ImageRefused`` too) when ``reference`` is not a valid reference.
        """
        if is_image_id(reference):
            if self.mode == "any":
                return reference
            raise ImageRefused(
                "Image ids are not allowed: name the image by its repository "
                f"({username.lower()}/NAME:TAG)"
            )
        try:
            image = normalise_image(reference)
        except ValueError as exc:
            raise ImageRefused(f"Invalid image reference: {exc}") from exc
        if self.mode == "any" or self.admits(image, username):
            return image.reference
        raise ImageRefused(
            f"Image {reference!r} is not allowed: use an image under your own namespace "
            f"({username.lower()}/...) or one the operator allows"
        )

    def admits(self, image: NormalisedImage, username: str) -> bool:
        namespace, slash, _ = image.path.partition("/")
        own = namespace == username.lower() and namespace not in RESERVED_USERNAMES
        if slash and own and image.registry in self.registries:
            return True
        return any(image.reference.startswith(prefix) for prefix in self.allow)


# --- Registry hosts ---------------------------------------------------------------------------


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one, in any spelling the C resolver accepts as one
    without a lookup (``127.1``, ``0x7f.0.0.1``, ``2130706433``); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_internal_address(address: IPAddress) -> bool:
    """Loopback, private, shared (100.64/10), link-local, unique- or site-local, unspecified,
    multicast or reserved: anything that is not a global unicast address. An IPv6 address that
    embeds an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged by that one too."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo is not None:
            embedded.append(address.teredo[1])
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and is_internal_address(inner) for inner in embedded):
            return True
        if address.is_site_local:
            return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address in _SHARED_ADDRESS_SPACE
    )


def registry_allowed(registry: str, allow: frozenset[str]) -> bool:
    """Whether the operator allows ``registry`` (its ``host:port``, or its host on any port)."""
    host, _ = split_registry(registry)
    return registry in allow or host in allow or f"[{host}]" in allow


def registry_host_verdict(image: NormalisedImage, allow: frozenset[str]) -> HostVerdict:
    """``allowed`` (Docker Hub, an operator-allowed host, a global address), ``internal``
    (refuse), or ``resolve``: a name whose addresses decide (``is_internal_address`` on each)."""
    if image.registry == DOCKER_HUB or registry_allowed(image.registry, allow):
        return "allowed"
    host = image.host
    address = literal_address(host)
    if address is not None:
        return "internal" if is_internal_address(address) else "allowed"
    if host == "localhost" or host.endswith(".localhost"):
        return "internal"
    return "resolve"
