"""End to end: activations through ``./bin/run.sh`` over HTTP, with the real Docker engine and the
real nats-server, checking what a user sees (status, ``code``, the execution record).

One stack serves the whole module (``SPAWNER_MAX_CONTAINERS=4``); the concurrency-limit test
starts a second, small one of its own. Each stack's spawner has its own instance id, so the
containers it creates are told apart from those of anyone else using the engine (by their
``faas.spawner`` label): Docker's events count them, and none may be left at the end. The
spawner runs with its prewarm pool, as by default: a call runs in a container created for it
(Docker's ``create`` event carries its execution id) or takes a parked one (renamed after its
execution); while the stack runs, only parked containers may stay, none once it stopped.

Function images are built locally (no registry is reachable): ``busybox`` (ENTRYPOINT ``sh -c``:
the argument is a shell script), and two Python images ``FROM python:3.11-slim``, as a function
author writes them: ``echo`` writes its argument to stdout exactly, ``hello`` upper-cases it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from spawner_service.runtime.docker import pooled_owner
from tests.e2e.stack import Stack, User, register, running_stack
from tests.support.images import build, busybox_image, docker, image_exists, python_base_image

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

T = TypeVar("T")

MAX_CONTAINERS = 4
MISSING_IMAGE = "127.0.0.1:1/missing:1"
ARGV_LIMIT = 131_071
"""Largest argument in UTF-8 bytes (the kernel's limit for one argv element, NUL excluded)."""
POLL_SECONDS = 30.0
HTTP_TIMEOUT = 90.0

ECHO_SCRIPT = "import sys; sys.stdout.write(sys.argv[1])\n"
HELLO_SCRIPT = "import sys\nprint(sys.argv[1].upper())\n"


# --- images -----------------------------------------------------------------------------------


def python_function_image(name: str, script: str) -> str:
    """A function image as an author writes one: ``FROM python:3.11-slim``, a script,
    ``ENTRYPOINT ["python", "/app.py"]``. The tag follows the content."""
    python_base_image()  # the local stand-in for python:3.11-slim
    dockerfile = 'FROM python:3.11-slim\nCOPY app.py /app.py\nENTRYPOINT ["python", "/app.py"]\n'
    digest = hashlib.sha256((dockerfile + script).encode()).hexdigest()[:12]
    tag = f"faas-e2e/{name}:{digest}"
    if not image_exists(tag):
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp)
            (context / "app.py").write_text(script)
            build(context, tag, dockerfile)
    return tag


@dataclass(frozen=True)
class Images:
    busybox: str
    echo: str
    hello: str


@pytest.fixture(scope="module")
def images() -> Images:
    return Images(
        busybox=busybox_image(),
        echo=python_function_image("echo", ECHO_SCRIPT),
        hello=python_function_image("hello", HELLO_SCRIPT),
    )


# --- Docker's view ----------------------------------------------------------------------------


def container_events(since: float, until: float, event: str, *labels: str) -> list[dict[str, str]]:
    """The attributes (labels, name, image) of every container ``event`` (``create``,
    ``rename``, ...) between the two epoch times of containers whose labels include all of
    ``labels`` (``key=value``), from Docker's events."""
    args = ["events", "--since", f"{since:.3f}", "--until", f"{until:.3f}"]
    for item in ("type=container", f"event={event}", *(f"label={label}" for label in labels)):
        args += ["--filter", item]
    lines = docker(*args, "--format", "{{json .Actor.Attributes}}", timeout=60).splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def executions_run(since: float, until: float, instance: str) -> list[str]:
    """The execution id of every call made since ``since`` that the spawner ``instance`` ran
    in a container by ``until``: created for it, or parked and renamed for it (parks
    themselves run none). A call made before ``since`` is left out even if its container's
    rename (sent before its frame, answered off the call's path) landed after it."""
    spawner = f"faas.spawner={instance}"
    created = container_events(since, until, "create", spawner)
    cold = [c["faas.execution-id"] for c in created if "faas.execution-id" in c]
    renamed = container_events(since, until, "rename", spawner)
    taken = [pooled_owner({"Labels": c, "Names": [c.get("name", "")]}) for c in renamed]
    ran = cold + [owner[0] for owner in taken if owner is not None]
    return [execution_id for execution_id in ran if made_at(execution_id) >= since]


def made_at(execution_id: str) -> float:
    """When the execution was made (epoch seconds): its id starts with that time in ns."""
    return int(execution_id[:16], 16) / 1e9


def containers_of(instance: str, *, parked: bool = True) -> list[str]:
    """Containers (any state) a spawner with this instance id created and did not remove;
    without ``parked``, those waiting in its prewarm pool for a call are left out."""
    output = docker(
        "ps",
        "-a",
        "--filter",
        "label=faas.managed-by",
        "--filter",
        f"label=faas.spawner={instance}",
        "--format",
        "{{.ID}} {{.Names}}",
    )
    rows = [line.split() for line in output.splitlines() if line.strip()]
    return [row[0] for row in rows if parked or not row[1].startswith("faas-pool-")]


def no_container_left(instance: str, within: float = 10.0) -> list[str]:
    """Containers of ``instance`` still there after ``within`` seconds, parked ones aside."""
    deadline = time.monotonic() + within
    left = containers_of(instance, parked=False)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = containers_of(instance, parked=False)
    return left


def parked_of(instance: str, image: str) -> list[str]:
    """Running containers of ``image`` the spawner ``instance`` has parked in its pool."""
    output = docker(
        "ps",
        "--filter",
        "label=faas.pool=parked",
        "--filter",
        f"label=faas.spawner={instance}",
        "--filter",
        f"ancestor={image}",
        "--filter",
        "status=running",
        "--format",
        "{{.ID}} {{.Names}}",
    )
    rows = [line.split() for line in output.splitlines() if line.strip()]
    return [row[0] for row in rows if row[1].startswith("faas-pool-")]


# --- the stack and its users ------------------------------------------------------------------


@dataclass
class Platform:
    stack: Stack
    instance: str
    alice: User
    bob: User
    images: Images


@contextlib.contextmanager
def platform_on(tmp_path: Path, images: Images, **env: str) -> Iterator[Platform]:
    """A stack with ``env``, its users alice and bob; afterwards no container of its spawner
    may be left, neither while it still runs nor once it stopped."""
    instance = f"e2e-activations-{uuid.uuid4().hex[:8]}"
    with running_stack(tmp_path, SPAWNER_INSTANCE_ID=instance, **env) as stack:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        with httpx.Client(base_url=stack.url, timeout=HTTP_TIMEOUT, limits=limits) as client:
            alice = register(client, "alice", "wonderland-42")
            bob = register(client, "bob", "builder-1234")
            yield Platform(stack, instance, alice, bob, images)
            left_running = no_container_left(instance)
    (tmp_path / "stack.log").write_text(stack.log())  # for a look after a failure
    left = containers_of(instance)
    assert left_running == [], f"containers left while the stack ran: {left_running}"
    assert left == [], f"containers left after the stack stopped: {left}"
    assert errors_logged(stack) == []


def errors_logged(stack: Stack) -> list[str]:
    """Log lines of level error or worse (a crashed worker, an unhandled exception)."""
    found = []
    for line in stack.output:
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            level = "error" if "Traceback" in line else None
        if level in {"error", "critical"}:
            found.append(line)
    return found


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, images: Images) -> Iterator[Platform]:
    with platform_on(
        tmp_path_factory.mktemp("activations"),
        images,
        SPAWNER_MAX_CONTAINERS=str(MAX_CONTAINERS),
        # MISSING_IMAGE's loopback registry is refused unless the operator allows it.
        IMAGE_REGISTRY_ALLOW=MISSING_IMAGE.split("/", 1)[0],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def alice(platform: Platform) -> User:
    return platform.alice


@pytest.fixture(scope="module")
def bob(platform: Platform) -> User:
    return platform.bob


@pytest.fixture(scope="module")
def echo(alice: User, images: Images) -> str:
    """Alice's function that writes its argument to stdout exactly."""
    alice.create_function("echo", images.echo, timeout_seconds=30)
    return "echo"


@pytest.fixture(scope="module")
def sh(alice: User, images: Images) -> str:
    """Alice's busybox function: the argument is a shell script."""
    alice.create_function("sh", images.busybox, timeout_seconds=30, memory_mb=64)
    return "sh"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- calls ------------------------------------------------------------------------------------


def publish(
    user: User,
    name: str,
    argument: str,
    *,
    is_async: bool = False,
    key: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"name": name, "argument": argument}
    if is_async:
        body["async"] = True
    headers = {"Idempotency-Key": key} if key is not None else {}
    return user.post("/publisher/publish", json=body, headers=headers)


def succeeded(response: httpx.Response) -> dict[str, Any]:
    """The record of a sync call that must have succeeded."""
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    assert record["status"] == "succeeded", record
    assert record["exit_code"] == 0
    assert record["error"] is None
    return record


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error body of a call answered with ``status`` and ``code``."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["detail"]  # a sentence, or FastAPI's list of problems for a 422
    return body


def history(user: User, function: str) -> list[dict[str, Any]]:
    response = user.get("/publisher/executions", params={"function": function, "limit": 100})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["executions"]
    return records


def poll(user: User, status_url: str) -> dict[str, Any]:
    """The record at ``status_url`` once it is final (or as it is after POLL_SECONDS)."""
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        response = user.get(status_url)
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        if record["status"] not in {"queued", "running"} or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def in_parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run every call on its own thread, all released at once; results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def still_serves(user: User, sh: str) -> None:
    """The platform answers a normal call right after a misbehaving one."""
    record = succeeded(publish(user, sh, "echo still here"))
    assert record["result"] == "still here"


# --- the argument arrives byte for byte -------------------------------------------------------


def _hundred_kb() -> str:
    pattern = "ünïcødé 😀 中文 e\u0301 $(id) `id` ;|&<>*?~ \"'\\ -- \t\r\n"
    text = pattern * (100_000 // len(pattern.encode()) + 1)
    while len(text.encode()) > 100_000:
        text = text[:-1]
    return text + "END"


EXACT_ARGUMENTS = {
    "ascii": "hello world",
    "emoji": "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈",
    "cjk": "中文字符 日本語 한국어",
    "combining_marks": "e\u0301 a\u0308 n\u0303 Z\u0351\u0334\u0336 \u0301",
    "rtl_and_invisible": "مرحبا \u200b\u200d\u2060\ufeff",
    "line_separators": "a\u0085b\u2028c\u2029d\x0be\x0cf",
    "control_characters": "\x01\x07\x1b[31mred\x1b[0m\x7f",
    "newlines_inside": "line 1\nline 2\r\nline 3\n\n\tend",
    "leading_newline": "\nstarts with a newline",
    "quotes": "'single' \"double\" `back` \\backslash\\ \\n \\x00",
    "command_substitution": "$(id) `id` ${HOME} $PATH $((1+1)) $0 $@",
    "shell_metacharacters": ";|&<>*?~ && || ; rm -rf / # !! %s %n {a,b} [ab] 2>&1 \\",
    "leading_dashes": "--help",
    "single_dash_option": "-c",
    "double_dash": "--",
    "lone_dash": "-",
    "spaces_only": "   ",
    "empty": "",
    "100_kb": _hundred_kb(),
    "argv_limit": "a" * (ARGV_LIMIT - 1) + "z",
}


@pytest.mark.parametrize("argument", EXACT_ARGUMENTS.values(), ids=EXACT_ARGUMENTS.keys())
def test_the_result_is_the_argument_byte_for_byte(alice: User, echo: str, argument: str) -> None:
    record = succeeded(publish(alice, echo, argument))
    assert record["function"] == echo
    assert record["result"] == argument
    assert record["result"].encode() == argument.encode()


@pytest.mark.parametrize(
    ("argument", "result"),
    [
        ("ends with a newline\n", "ends with a newline"),
        ("two newlines\n\n", "two newlines\n"),
        ("\n", ""),
        ("crlf\r\n", "crlf\r"),
        ("newline then space\n ", "newline then space\n "),
    ],
    ids=["one", "two", "only_a_newline", "crlf", "not_last"],
)
def test_one_trailing_newline_is_removed(
    alice: User, echo: str, argument: str, result: str
) -> None:
    assert succeeded(publish(alice, echo, argument))["result"] == result


@pytest.mark.parametrize(
    "argument", ["nul \x00 inside", "lone surrogate \ud800"], ids=["nul", "lone_surrogate"]
)
def test_an_argument_argv_cannot_carry_is_refused(
    alice: User, images: Images, argument: str
) -> None:
    name = unique("refused")
    alice.create_function(name, images.echo)
    # Sent as JSON escapes (\u0000, \ud800): a lone surrogate has no UTF-8 form of its own.
    body = json.dumps({"name": name, "argument": argument})
    response = alice.post(
        "/publisher/publish", content=body, headers={"Content-Type": "application/json"}
    )
    refused(response, 422, "validation_error")
    assert history(alice, name) == []


def test_the_readme_hello_function(alice: User, images: Images) -> None:
    name = unique("hello")
    alice.create_function(name, images.hello, timeout_seconds=10)
    response = publish(alice, name, "hello world")
    record = succeeded(response)
    assert record["result"] == "HELLO WORLD"
    assert record["logs"] == ""
    assert record["duration_ms"] > 0
    # Its first call: a container started for it (removed after the call).
    assert {"create", "start", "run"} <= set(record["timings"])
    assert not {"pool", "remove"} & set(record["timings"])
    assert "run;dur=" in response.headers["Server-Timing"]


def test_a_function_called_again_has_its_next_call_take_a_parked_container(
    platform: Platform, images: Images
) -> None:
    alice = platform.alice
    name = unique("warm")
    alice.create_function(name, images.hello, timeout_seconds=10)
    for argument in ("first", "again"):
        assert succeeded(publish(alice, name, argument))["result"] == argument.upper()
    # Called twice (SPAWNER_POOL_PARK_AFTER_CALLS): the spawner parks a container of the
    # function's image, env and memory.
    deadline = time.monotonic() + POLL_SECONDS
    while not parked_of(platform.instance, images.hello) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert parked_of(platform.instance, images.hello)
    time.sleep(0.5)  # its start answered: the spawner counts it as parked
    response = publish(alice, name, "second")
    record = succeeded(response)
    assert record["result"] == "SECOND"
    assert {"pool", "run"} <= set(record["timings"])
    assert not {"pull", "create", "start", "remove"} & set(record["timings"])
    assert "pool;dur=" in response.headers["Server-Timing"]


# --- parallel calls ---------------------------------------------------------------------------


def test_parallel_calls_each_get_their_own_result(platform: Platform, echo: str) -> None:
    alice = platform.alice
    arguments = [f"call {index}: {'é' * index} {uuid.uuid4().hex}" for index in range(16)]
    since = time.time()
    responses = in_parallel([functools.partial(publish, alice, echo, a) for a in arguments])
    until = time.time() + 0.5
    records = [succeeded(response) for response in responses]
    assert [record["result"] for record in records] == arguments
    assert len({record["execution_id"] for record in records}) == len(arguments)
    # One container per call, no more (MAX_CONTAINERS at a time: the rest queued).
    assert sorted(executions_run(since, until, platform.instance)) == sorted(
        record["execution_id"] for record in records
    )


# --- concurrency limits -----------------------------------------------------------------------

MAX_IN_FLIGHT = 3
MAX_IN_FLIGHT_PER_USER = 2
SLEEPER = "sleep 2; echo slept"


def test_a_burst_over_the_limits_gets_429s_and_the_accepted_calls_succeed(
    tmp_path: Path, images: Images
) -> None:
    with platform_on(
        tmp_path,
        images,
        MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        MAX_IN_FLIGHT_PER_USER=str(MAX_IN_FLIGHT_PER_USER),
        SPAWNER_MAX_CONTAINERS=str(MAX_CONTAINERS),
    ) as small:
        burst_over_the_limits(small)


def burst_over_the_limits(platform: Platform) -> None:
    alice, bob = platform.alice, platform.bob
    for user in (alice, bob):
        user.create_function("sleepy", platform.images.busybox, timeout_seconds=20)
        succeeded(publish(user, "sleepy", "echo warm"))  # image inspected, first call done

    # Cluster-wide: 4 calls of each user at once, each holding its slot for 2 s or more.
    since = time.time()
    users = [alice, bob] * 4
    responses = in_parallel([functools.partial(publish, u, "sleepy", SLEEPER) for u in users])
    until = time.time() + 0.5
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 429}, [response.text for response in responses]
    accepted = [r for r in responses if r.status_code == 200]
    rejected = [r for r in responses if r.status_code == 429]
    assert 1 <= len(accepted) <= MAX_IN_FLIGHT, statuses
    for user in (alice, bob):  # also within each user's own limit
        mine = [r for u, r in zip(users, responses, strict=True) if u is user]
        assert [r.status_code for r in mine].count(200) <= MAX_IN_FLIGHT_PER_USER, statuses
    assert len(rejected) >= len(users) - MAX_IN_FLIGHT
    for response in accepted:
        assert succeeded(response)["result"] == "slept"
    for response in rejected:
        body = refused(response, 429, "concurrency_limit")
        assert int(response.headers["Retry-After"]) >= 1
        assert body["execution"]["status"] == "rejected"
        assert body["execution"]["error"] == "concurrency_limit"
    # Only the accepted calls ran a container; the rejected ones never queued.
    assert sorted(executions_run(since, until, platform.instance)) == sorted(
        r.json()["execution_id"] for r in accepted
    )
    kept = [record for user in (alice, bob) for record in history(user, "sleepy")]
    assert sorted(record["status"] for record in kept) == sorted(
        ["succeeded"] * (2 + len(accepted)) + ["rejected"] * len(rejected)
    )

    # Per user: alice alone cannot take more than her share, and bob still gets a slot.
    first = in_parallel(
        [functools.partial(publish, alice, "sleepy", SLEEPER)] * 4
        + [functools.partial(_after, 0.5, functools.partial(publish, bob, "sleepy", SLEEPER))]
    )
    alices, bobs = first[:4], first[4]
    assert sorted(r.status_code for r in alices) == [200] * MAX_IN_FLIGHT_PER_USER + [429] * (
        4 - MAX_IN_FLIGHT_PER_USER
    ), [r.text for r in alices]
    assert succeeded(bobs)["result"] == "slept"

    # Capacity comes back as soon as the calls in flight are finished.
    assert succeeded(publish(alice, "sleepy", "echo again"))["result"] == "again"


def _after(seconds: float, call: Callable[[], T]) -> T:
    time.sleep(seconds)
    return call()


# --- functions that misbehave -----------------------------------------------------------------


def run_misbehaving(
    alice: User, image: str, argument: str, **fields: Any
) -> tuple[httpx.Response, float]:
    name = unique("bad")
    alice.create_function(name, image, **fields)
    started = time.monotonic()
    response = publish(alice, name, argument)
    return response, time.monotonic() - started


def test_a_function_over_its_timeout_is_504_timed_out(alice: User, images: Images, sh: str) -> None:
    response, elapsed = run_misbehaving(alice, images.busybox, "sleep 30", timeout_seconds=2)
    body = refused(response, 504, "timed_out")
    assert elapsed < 12, elapsed
    record = body["execution"]
    assert record["status"] == "timed_out"
    assert record["error"] == "timed_out"
    assert record["result"] is None
    assert record["detail"] == "killed after the 2 s timeout"
    still_serves(alice, sh)


def test_a_non_zero_exit_is_502_function_failed_with_its_logs(
    alice: User, images: Images, sh: str
) -> None:
    response, _ = run_misbehaving(
        alice, images.busybox, "echo partial; echo something went wrong >&2; exit 3"
    )
    body = refused(response, 502, "function_failed")
    record = body["execution"]
    assert record["status"] == "failed"
    assert record["error"] == "function_failed"
    assert record["exit_code"] == 3
    assert record["result"] == "partial"
    assert "something went wrong" in record["logs"]
    assert record["detail"] == "exited with status 3"
    assert body["detail"] == record["detail"]
    still_serves(alice, sh)


@pytest.mark.parametrize(
    "script", ["yes", "head -c 10000000 /dev/zero"], ids=["endless", "ten_megabytes"]
)
def test_huge_output_is_502_output_too_large(
    alice: User, images: Images, sh: str, script: str
) -> None:
    response, elapsed = run_misbehaving(alice, images.busybox, script, timeout_seconds=20)
    body = refused(response, 502, "output_too_large")
    assert elapsed < 15, elapsed
    record = body["execution"]
    assert record["status"] == "failed"
    assert record["error"] == "output_too_large"
    assert record["result"] is None  # never a silently cut result
    still_serves(alice, sh)


def test_an_image_that_cannot_be_pulled_is_502_image_unavailable(alice: User, sh: str) -> None:
    response, elapsed = run_misbehaving(alice, MISSING_IMAGE, "anything")
    body = refused(response, 502, "image_unavailable")
    assert elapsed < 15, elapsed
    record = body["execution"]
    assert record["status"] == "failed"
    assert record["error"] == "image_unavailable"
    # A fixed sentence: the engine's text (it quotes the registry host) never reaches a user.
    assert record["detail"] == "The image's registry could not be reached (registry_unreachable)"
    still_serves(alice, sh)


def test_a_memory_hog_is_killed_502_function_failed(alice: User, images: Images, sh: str) -> None:
    hog = 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}'
    response, elapsed = run_misbehaving(
        alice, images.busybox, hog, memory_mb=32, timeout_seconds=30
    )
    body = refused(response, 502, "function_failed")
    assert elapsed < 20, elapsed
    record = body["execution"]
    assert record["exit_code"] == 137
    assert record["detail"] == "killed: out of memory (limit 32 MiB)"
    still_serves(alice, sh)


def test_a_python_memory_hog_is_killed_502_function_failed(
    alice: User, images: Images, sh: str
) -> None:
    # The same from Python: one allocation far over memory_mb.
    hog = python_function_image("hog", "b = bytearray(200 * 1024 * 1024)\nprint(len(b))\n")
    response, elapsed = run_misbehaving(alice, hog, "x", memory_mb=32, timeout_seconds=30)
    body = refused(response, 502, "function_failed")
    assert elapsed < 20, elapsed
    record = body["execution"]
    assert record["status"] == "failed"
    assert record["exit_code"] == 137
    assert record["detail"] == "killed: out of memory (limit 32 MiB)"
    still_serves(alice, sh)


def test_a_fork_bomb_is_contained(alice: User, images: Images, sh: str) -> None:
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 10"
    response, elapsed = run_misbehaving(alice, images.busybox, bomb, timeout_seconds=5)
    assert response.status_code in {502, 504}, response.text
    body = response.json()
    assert body["code"] == {502: "function_failed", 504: "timed_out"}[response.status_code]
    assert elapsed < 25, elapsed
    assert "can't fork" in (body["execution"]["logs"] or "")
    still_serves(alice, sh)


def test_a_function_has_no_network(alice: User, images: Images, sh: str) -> None:
    script = (
        "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '; "
        "nc -w 2 1.1.1.1 80 </dev/null && echo connected"
    )
    response, elapsed = run_misbehaving(alice, images.busybox, script, timeout_seconds=20)
    body = refused(response, 502, "function_failed")
    assert elapsed < 15, elapsed
    record = body["execution"]
    assert record["result"] == "lo"  # the only interface: loopback
    assert "Network is unreachable" in record["logs"]
    still_serves(alice, sh)


# --- whose function, whose execution ----------------------------------------------------------


def test_another_users_function_does_not_exist_for_you(alice: User, bob: User, echo: str) -> None:
    theirs = refused(publish(bob, echo, "hi"), 404, "function_not_found")
    missing = refused(publish(bob, unique("nothing"), "hi"), 404, "function_not_found")
    assert theirs == missing  # existence never leaks
    assert history(bob, echo) == []
    succeeded(publish(alice, echo, "still alice's"))


def test_an_async_call_is_polled_to_its_result(alice: User, bob: User, echo: str) -> None:
    argument = f"async {uuid.uuid4().hex} ✓"
    response = publish(alice, echo, argument, is_async=True)
    assert response.status_code == 202, response.text
    accepted = response.json()
    execution_id = accepted["execution_id"]
    assert accepted["status_url"] == f"/publisher/executions/{execution_id}"
    assert response.headers["Location"] == accepted["status_url"]

    first = alice.get(accepted["status_url"])
    assert first.status_code == 200, first.text
    assert first.json()["status"] in {"queued", "running", "succeeded"}
    record = poll(alice, accepted["status_url"])
    assert record["status"] == "succeeded", record
    assert record["execution_id"] == execution_id
    assert record["function"] == echo
    assert record["result"] == argument
    assert record["finished_at"] >= record["created_at"]

    listed = history(alice, echo)
    assert execution_id in [item["execution_id"] for item in listed]
    assert next(item for item in listed if item["execution_id"] == execution_id) == record

    refused(bob.get(accepted["status_url"]), 404, "execution_not_found")
    assert execution_id not in [item["execution_id"] for item in history(bob, echo)]


def test_an_async_failure_is_polled_to_its_record(alice: User, sh: str) -> None:
    response = publish(alice, sh, "echo before; echo bad input >&2; exit 4", is_async=True)
    assert response.status_code == 202, response.text
    record = poll(alice, response.json()["status_url"])
    assert record["status"] == "failed"
    assert record["error"] == "function_failed"
    assert record["exit_code"] == 4
    assert record["result"] == "before"
    assert "bad input" in record["logs"]


def test_output_that_is_not_utf8_is_decoded_with_replacements(alice: User, sh: str) -> None:
    record = succeeded(publish(alice, sh, "printf 'a\\377b\\n'"))
    assert record["result"] == "a\ufffdb"


def test_a_changed_or_deleted_function_is_called_as_it_is_now(alice: User, images: Images) -> None:
    name = unique("changing")
    alice.create_function(name, images.busybox)
    assert succeeded(publish(alice, name, "echo shell"))["result"] == "shell"
    changed = alice.client.patch(
        f"/registry/functions/{name}", json={"image": images.echo}, headers=alice.headers
    )
    assert changed.status_code == 200, changed.text
    assert succeeded(publish(alice, name, "echo shell"))["result"] == "echo shell"
    deleted = alice.client.delete(f"/registry/functions/{name}", headers=alice.headers)
    assert deleted.status_code == 204, deleted.text
    refused(publish(alice, name, "echo shell"), 404, "function_not_found")


# --- idempotency ------------------------------------------------------------------------------


def test_the_same_idempotency_key_runs_one_container(platform: Platform) -> None:
    alice, bob = platform.alice, platform.bob
    name = unique("once")
    for user in (alice, bob):
        user.create_function(name, platform.images.busybox, timeout_seconds=20)
    # Each run prints a fresh random number: two runs would be seen in the results.
    script = "sleep 1; echo $RANDOM$RANDOM$RANDOM; cat /proc/sys/kernel/random/uuid"
    key = f"key-{uuid.uuid4().hex}"

    since = time.time()
    racing = in_parallel([functools.partial(publish, alice, name, script, key=key)] * 2)
    retried = publish(alice, name, script, key=key)
    until = time.time() + 0.5
    records = [succeeded(response) for response in [*racing, retried]]
    assert len({record["execution_id"] for record in records}) == 1, records
    assert len({record["result"] for record in records}) == 1, records
    execution_id = records[0]["execution_id"]

    ran = executions_run(since, until, platform.instance)
    assert ran.count(execution_id) == 1, ran
    assert [record["execution_id"] for record in history(alice, name)] == [execution_id]

    # The key with another request is a conflict; the same key is another user's own.
    refused(publish(alice, name, "echo other", key=key), 409, "idempotency_key_reused")
    theirs = succeeded(publish(bob, name, script, key=key))
    assert theirs["execution_id"] != execution_id
    assert [record["execution_id"] for record in history(alice, name)] == [execution_id]


# --- argument size ----------------------------------------------------------------------------


def test_an_argument_over_the_argv_limit_is_413_and_queues_nothing(platform: Platform) -> None:
    alice = platform.alice
    name = unique("limits")
    alice.create_function(name, platform.images.echo, timeout_seconds=20)
    since = time.time()
    for argument in ("a" * (ARGV_LIMIT + 1), "😀" * ((ARGV_LIMIT + 1) // 4)):
        assert len(argument.encode()) == ARGV_LIMIT + 1
        body = refused(publish(alice, name, argument), 413, "argument_too_large")
        assert "execution" not in body
    assert history(alice, name) == []
    assert executions_run(since, time.time(), platform.instance) == []
    # One byte less fits, emoji included.
    fits = "😀" * ((ARGV_LIMIT - 3) // 4) + "abc"
    assert len(fits.encode()) == ARGV_LIMIT
    assert succeeded(publish(alice, name, fits))["result"] == fits
    assert len(history(alice, name)) == 1


# --- last -------------------------------------------------------------------------------------


def test_no_container_is_left_behind(platform: Platform) -> None:
    """Runs last in this module: every activation above removed its container."""
    assert no_container_left(platform.instance) == []
