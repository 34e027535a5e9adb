"""Images for function containers: bounded pulls, fixed failure sentences, declared volumes.

**Failures.** Whatever the engine or a registry answers, a user reads one of the fixed
``ImageProblem`` sentences, each with a stable code; the engine's own text (which quotes what a
registry host replied, whatever service listens there) goes only to the spawner's log. Network
failures are recognised first, so that the quoted reply of something that is not a registry can
never select another sentence: a closed port and a port answering with a foreign banner read the
same.

**Pulls.** ``pull_blocking`` asks the engine for the image over the Docker API itself (the SDK's
``pull`` waits without any timeout): the engine may stay silent at most ``connect`` seconds
(reaching the registry, then between two progress messages), and the whole pull may take at most
``total`` seconds. An abandoned pull closes its connection, which cancels it in the engine.

**Volumes.** A ``VOLUME`` in an image would become an anonymous host volume (writable, unlimited,
outside the read-only root): ``scratch_tmpfs`` mounts a tmpfs over each declared path instead,
sharing the ``/tmp`` budget in equal parts.
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions
from docker.auth import get_config_header, resolve_repository_name
from docker.utils import parse_repository_tag

CONTAINER_TMP = "/tmp"  # noqa: S108 - the function container's /tmp (a private tmpfs)
TMPFS_OPTIONS = "rw,noexec,nosuid,size={size},uid=65534,gid=65534,mode=1777"
"""A tmpfs over a directory of the image keeps that directory's mode: say it."""
MAX_VOLUMES = 16
"""Declared volumes an image may have (each takes a share of the scratch budget)."""


@dataclass(frozen=True)
class ImageProblem:
    """Why an image cannot be used, as a user reads it: a stable code and a fixed sentence."""

    code: str
    sentence: str

    @property
    def detail(self) -> str:
        return f"{self.sentence} ({self.code})"


IMAGE_NOT_FOUND = ImageProblem("image_not_found", "The image was not found in its registry")
REGISTRY_UNREACHABLE = ImageProblem(
    "registry_unreachable", "The image's registry could not be reached"
)
REGISTRY_REFUSED = ImageProblem(
    "registry_refused", "The registry refused the pull (not authorised, or no such repository)"
)
PULL_TIMED_OUT = ImageProblem("pull_timed_out", "The image pull did not finish in time")
INVALID_REFERENCE = ImageProblem("invalid_reference", "The image reference is not valid")
PULL_FAILED = ImageProblem("pull_failed", "The image could not be pulled")
TOO_MANY_VOLUMES = ImageProblem(
    "too_many_volumes", f"The image declares more than {MAX_VOLUMES} volumes"
)

_UNREACHABLE = (
    "dial tcp",
    "connection refused",
    "connection reset",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "no route to host",
    "transport connection broken",
    "readlooppeekfaillocked",  # the host wrote and hung up before the request went out
    "server closed idle connection",
    "malformed http",
    "server gave http response",
    "error parsing http",
    "tls:",
    "x509",
    "deadline exceeded",
    "timeout",
    "eof",
)
"""Markers of a registry host that could not be talked to (checked first: what follows them in
the engine's text may be the host's own reply)."""
_REFUSED = (
    "denied",
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "forbidden",
    "docker login",
)
_NOT_FOUND = ("manifest unknown", "not found", "does not exist", "no such image")


class ImageUnavailable(Exception):
    """The image is not present and cannot be pulled (or its reference is invalid)."""

    def __init__(self, problem: ImageProblem, engine_text: str = "") -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.engine_text = engine_text
        """What the engine said, for the spawner's log only."""


def classify(engine_text: str) -> ImageProblem:
    """The fixed problem for what the engine said about a failed pull."""
    text = engine_text.lower()
    for markers, problem in (
        (_UNREACHABLE, REGISTRY_UNREACHABLE),
        (_REFUSED, REGISTRY_REFUSED),
        (_NOT_FOUND, IMAGE_NOT_FOUND),
    ):
        if any(marker in text for marker in markers):
            return problem
    return PULL_FAILED


def _read_timed_out(exc: requests.RequestException) -> bool:
    """A read timeout, before the answer (``ReadTimeout``) or while streaming it."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)


def _answer_text(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text


def pull_blocking(api: Any, image: str, *, connect: float, total: float) -> None:
    """Pull ``image`` through ``api`` (a ``docker.APIClient``); ``ImageUnavailable`` when it
    fails or takes too long, ``requests`` errors (``OSError``) when the engine cannot be reached.
    """
    repository, tag = parse_repository_tag(image)
    headers: dict[str, str] = {}
    auth = get_config_header(api, resolve_repository_name(repository)[0])
    if auth:
        headers["X-Registry-Auth"] = auth
    give_up = time.monotonic() + total
    try:
        response = api.post(
            f"{api.base_url}/v{api.api_version}/images/create",
            params={"fromImage": repository, "tag": tag or "latest"},
            headers=headers,
            stream=True,
            timeout=(connect, connect),
        )
        with response:
            if response.status_code >= 400:
                text = _answer_text(response)
                raise ImageUnavailable(classify(text), text)
            _follow(response, give_up)
    except requests.RequestException as exc:
        if _read_timed_out(exc):
            raise ImageUnavailable(PULL_TIMED_OUT, f"the engine was silent: {exc}") from exc
        raise


def _follow(response: requests.Response, give_up: float) -> None:
    """Read the pull's progress messages to the end; the last error one names the failure."""
    for line in response.iter_lines():
        if time.monotonic() > give_up:
            raise ImageUnavailable(PULL_TIMED_OUT, "the pull took longer than its total bound")
        try:
            event = json.loads(line) if line else None
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("error"):
            text = str(event["error"])
            raise ImageUnavailable(classify(text), text)


def declared_volumes(attrs: dict[str, Any]) -> list[str]:
    """The paths an image's config declares as volumes (``VOLUME``), normalised, sorted."""
    volumes = (attrs.get("Config") or {}).get("Volumes") or {}
    paths = {posixpath.normpath(str(path)) for path in volumes}
    if len(paths - {CONTAINER_TMP}) > MAX_VOLUMES:
        raise ImageUnavailable(TOO_MANY_VOLUMES, f"{len(paths)} volumes")
    return sorted(paths)


def _size(kib: int) -> str:
    return f"{kib // 1024}m" if kib % 1024 == 0 else f"{kib}k"


def scratch_tmpfs(budget_mb: int, volumes: list[str]) -> dict[str, str]:
    """``/tmp`` and a tmpfs over each declared volume, sharing ``budget_mb`` in equal parts
    (whole KiB; a volume declared at ``/tmp`` is ``/tmp``)."""
    paths = [CONTAINER_TMP, *(path for path in volumes if path != CONTAINER_TMP)]
    share = budget_mb * 1024 // len(paths)
    return {path: TMPFS_OPTIONS.format(size=_size(share)) for path in paths}
