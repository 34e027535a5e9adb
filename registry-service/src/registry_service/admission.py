"""What a function may be made of: its image (policy and registry host) and its environment.

``Admission.check`` runs before a create or an update touches the database, in this order:

1. the registry host (``faas_common.images.registry_host_verdict``): an internal address, or a
   name that resolves to one or does not resolve at all, is a 422
   ``image_registry_not_allowed`` whatever the policy and the namespace (one fixed sentence for
   every case: the answer never tells which internal names exist). A name is resolved with the
   injected ``HostResolver`` (``SystemResolver`` in production: its own threads, answers kept a
   minute), bounded by
   ``REGISTRY_RESOLVE_TIMEOUT_SECONDS``; every address it gives must be global;
2. the image policy (``IMAGE_POLICY``): a reference outside it is a 403 ``image_not_allowed``;
3. the environment's size (``REGISTRY_MAX_ENV_BYTES``): 422 ``env_too_large``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from faas_common.images import (
    ImagePolicy,
    ImageRefused,
    is_image_id,
    is_internal_address,
    normalise_image,
    registry_host_verdict,
)
from registry_service.exceptions import EnvTooLarge, ImageNotAllowed, ImageRegistryNotAllowed

logger = logging.getLogger("registry.admission")


class HostResolver(Protocol):
    async def __call__(self, host: str) -> Sequence[str]:
        """The addresses ``host`` resolves to; ``OSError`` when it does not resolve."""


def _getaddrinfo(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


class SystemResolver:
    """The C resolver's answer (``getaddrinfo``), as the Docker engine's host would see it.

    A lookup cannot be cancelled: one a DNS server never answers holds its thread for the C
    resolver's own timeout. So lookups run on a few threads of their own (never the loop's
    default executor, which database and NATS connections use too), and every answer, a failure
    or a lookup still running included, is kept for ``cache_seconds``: a tenant repeating a name
    that hangs waits on the same lookup instead of taking another thread.
    """

    def __init__(
        self,
        *,
        threads: int = 4,
        cache_seconds: float = 60.0,
        max_names: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._cache_seconds = cache_seconds
        self._max_names = max_names
        self._clock = clock
        self._answers: dict[str, tuple[float, asyncio.Future[list[str]]]] = {}

    async def __call__(self, host: str) -> Sequence[str]:
        now = self._clock()
        cached = self._answers.get(host)
        if cached is None or cached[0] <= now:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="registry-dns")
            lookup = asyncio.get_running_loop().run_in_executor(self._pool, _getaddrinfo, host)
            lookup.add_done_callback(_consume_exception)
            cached = (now + self._cache_seconds, lookup)
            self._remember(host, cached)
        # Shielded: a caller's timeout must not cancel the lookup other callers wait on.
        return await asyncio.shield(cached[1])

    def _remember(self, host: str, answer: tuple[float, asyncio.Future[list[str]]]) -> None:
        self._answers.pop(host, None)
        self._answers[host] = answer
        while len(self._answers) > self._max_names:  # the oldest names go first
            del self._answers[next(iter(self._answers))]


def _consume_exception(future: asyncio.Future[list[str]]) -> None:
    if not future.cancelled():
        future.exception()  # read: a failed lookup nobody awaits any more is not an error


system_resolver: HostResolver = SystemResolver()


def env_bytes(env: Mapping[str, str]) -> int:
    """The environment's size as the process sees it: ``NAME=value`` in UTF-8, summed."""
    return sum(len(f"{name}={value}".encode()) for name, value in env.items())


@dataclass(frozen=True, slots=True)
class Admission:
    policy: ImagePolicy
    registry_allow: frozenset[str]
    resolver: HostResolver
    resolve_timeout: float
    max_env_bytes: int
    max_functions: int

    async def check(
        self, *, username: str, image: str | None, env: Mapping[str, str] | None
    ) -> None:
        """Refuse what a create or an update sets (``None``: not set) with a ``ServiceError``."""
        if image is not None:
            await self.check_registry(image)
            try:
                self.policy.engine_reference(image, username)
            except ImageRefused as exc:
                raise ImageNotAllowed(str(exc)) from exc
        if env is not None and (size := env_bytes(env)) > self.max_env_bytes:
            raise EnvTooLarge(
                f"The environment is {size} bytes (NAME=value, UTF-8, summed); "
                f"at most {self.max_env_bytes} bytes are allowed"
            )

    async def check_registry(self, image: str) -> None:
        if is_image_id(image):
            return  # no registry: the policy decides
        normalised = normalise_image(image)
        verdict = registry_host_verdict(normalised, self.registry_allow)
        if verdict == "internal" or (
            verdict == "resolve" and not await self._resolves_globally(normalised.host)
        ):
            raise ImageRegistryNotAllowed()

    async def _resolves_globally(self, host: str) -> bool:
        try:
            async with asyncio.timeout(self.resolve_timeout):
                addresses = await self.resolver(host)
        except (OSError, TimeoutError, UnicodeError) as exc:
            logger.info(
                "image registry host does not resolve", extra={"host": host, "error": repr(exc)}
            )
            return False
        if not addresses:
            return False
        try:
            parsed = [ipaddress.ip_address(address.partition("%")[0]) for address in addresses]
        except ValueError:
            return False
        return not any(is_internal_address(address) for address in parsed)
