"""Image failures as users read them, and declared volumes as the runtime mounts them: what the
engine said (texts as Docker 20.10 words them) maps to one fixed sentence per cause."""

from __future__ import annotations

from typing import Any

import pytest

from spawner_service.runtime import images
from spawner_service.runtime.images import (
    IMAGE_NOT_FOUND,
    MAX_VOLUMES,
    PULL_FAILED,
    REGISTRY_REFUSED,
    REGISTRY_UNREACHABLE,
    ImageProblem,
    ImageUnavailable,
    classify,
    declared_volumes,
    scratch_tmpfs,
)

BANNER = 'INFO {"server_id":"NATS-SECRET","version":"2.10","auth_required":false}'

ENGINE_TEXTS = {
    "closed-port": (
        'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
        REGISTRY_UNREACHABLE,
    ),
    "foreign-banner": (
        'Get "http://127.0.0.1:8091/v2/": net/http: HTTP/1.x transport connection broken: '
        f'malformed HTTP status code "{BANNER}"',
        REGISTRY_UNREACHABLE,
    ),
    "banner-before-the-request": (
        'Get "http://127.0.0.1:36923/v2/": readLoopPeekFailLocked: <nil>',
        REGISTRY_UNREACHABLE,
    ),
    "closed-before-the-request": (
        'Get "http://127.0.0.1:8091/v2/": http: server closed idle connection',
        REGISTRY_UNREACHABLE,
    ),
    "banner-quoting-denied": (
        'Get "http://127.0.0.1:8091/v2/": net/http: HTTP/1.x transport connection broken: '
        'malformed HTTP status code "access denied: image not found"',
        REGISTRY_UNREACHABLE,
    ),
    "silent-host": (
        'Get "http://127.0.0.1:8091/v2/": context deadline exceeded (Client.Timeout exceeded '
        "while awaiting headers)",
        REGISTRY_UNREACHABLE,
    ),
    "no-such-host": (
        'Get "https://nowhere.invalid/v2/": dial tcp: lookup nowhere.invalid: no such host',
        REGISTRY_UNREACHABLE,
    ),
    "not-a-registry": (
        "error parsing HTTP 404 response body: unexpected end of JSON input",
        REGISTRY_UNREACHABLE,
    ),
    "no-credentials": (
        'Head "http://127.0.0.1:5000/v2/x/y/manifests/1": no basic auth credentials',
        REGISTRY_REFUSED,
    ),
    "hub-denied": (
        "pull access denied for alice/secret, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied",
        REGISTRY_REFUSED,
    ),
    "manifest-unknown": ("manifest unknown", IMAGE_NOT_FOUND),
    "tag-not-found": (
        "manifest for registry.example.com/alice/fn:9 not found: manifest unknown",
        IMAGE_NOT_FOUND,
    ),
    "disk-full": ("write /var/lib/docker/tmp/x: no space left on device", PULL_FAILED),
}


@pytest.mark.parametrize("name", list(ENGINE_TEXTS))
def test_engine_texts_map_to_fixed_problems(name: str) -> None:
    text, problem = ENGINE_TEXTS[name]
    assert classify(text) == problem


def test_a_problem_reads_one_fixed_sentence_and_keeps_the_engine_text_for_the_log() -> None:
    text, _ = ENGINE_TEXTS["foreign-banner"]
    error = ImageUnavailable(classify(text), text)
    assert error.problem.detail == (
        "The image's registry could not be reached (registry_unreachable)"
    )
    assert str(error) == error.problem.detail
    assert "NATS-SECRET" not in error.problem.detail
    assert error.engine_text == text


def test_every_problem_has_its_own_code_and_sentence() -> None:
    problems = [v for v in vars(images).values() if isinstance(v, ImageProblem)]
    assert len({p.code for p in problems}) == len(problems) >= 7
    assert len({p.sentence for p in problems}) == len(problems)


def test_declared_volumes_are_normalised() -> None:
    attrs: dict[str, Any] = {"Config": {"Volumes": {"/data/": {}, "/var//cache": {}, "/tmp": {}}}}
    assert declared_volumes(attrs) == ["/data", "/tmp", "/var/cache"]
    assert declared_volumes({"Config": {"Volumes": None}}) == []
    assert declared_volumes({}) == []


def test_an_image_with_too_many_volumes_is_refused() -> None:
    volumes: dict[str, Any] = {f"/v{i}": {} for i in range(MAX_VOLUMES + 1)}
    with pytest.raises(ImageUnavailable) as refused:
        declared_volumes({"Config": {"Volumes": volumes}})
    assert refused.value.problem.code == "too_many_volumes"
    at_most: dict[str, Any] = {f"/v{i}": {} for i in range(MAX_VOLUMES)}
    assert len(declared_volumes({"Config": {"Volumes": at_most}})) == MAX_VOLUMES


def test_the_scratch_budget_is_split_in_equal_parts() -> None:
    assert scratch_tmpfs(64, []) == {
        "/tmp": "rw,noexec,nosuid,size=64m,uid=65534,gid=65534,mode=1777"
    }
    split = scratch_tmpfs(64, ["/data", "/tmp"])  # /tmp declared again is /tmp
    assert list(split) == ["/tmp", "/data"]
    assert all(",size=32m," in options for options in split.values())
    tiny = scratch_tmpfs(1, [f"/v{i}" for i in range(MAX_VOLUMES)])
    assert all(",size=60k," in options for options in tiny.values())  # never 0 (unlimited)
