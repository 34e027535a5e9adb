"""Calls, bursts and checks of the fault-injection suite, over each service's own port.

- ``Api``: one logged-in user; registers functions on registry-service and activates them on a
  chosen publisher (``POST /publisher/publish``), reads records (``GET /publisher/executions``).
- ``Call`` / ``Answer``: one activation as the client sees it, every attempt kept.
- ``Burst``: a bounded number of calls on a bounded thread pool, spread over the publishers,
  with an optional ``Retry`` policy (keyed calls retried on the other publisher when they got no
  answer). The test thread injects its fault while the burst runs (``wait_finished``).
- ``examine`` / ``Outcome.problems``: per execution id — final status reached, the right output,
  at most one container created (exactly one for a success), no container left — as a list of
  problems, so one failure report shows every invariant that broke.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.topology import Topology

TERMINAL = frozenset({"succeeded", "failed", "timed_out", "rejected"})
HTTP_TIMEOUT = 120.0
"""Longer than any sync call may take (queue timeout + function timeout + reply grace)."""
HISTORY_LIMIT = 100
POLL_SECONDS = 0.5


@dataclass
class Answer:
    """One HTTP attempt of a call: a status and body, or no answer at all (``error``)."""

    publisher: str
    status: int | None
    body: Any = None
    retry_after: str | None = None
    error: str | None = None
    at: float = field(default_factory=time.time)

    @property
    def execution_id(self) -> str | None:
        """The execution the answer names: the record (200), the accepted id (202) or the
        record under ``execution`` of an error body."""
        if not isinstance(self.body, dict):
            return None
        found = self.body.get("execution_id")
        if found is None and isinstance(self.body.get("execution"), dict):
            found = self.body["execution"].get("execution_id")
        return str(found) if found is not None else None

    @property
    def code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("code"), str):
            return str(self.body["code"])
        return None

    @property
    def record_error(self) -> str | None:
        """The ``error`` of the record in the answer (a 200 record, or ``execution``)."""
        if not isinstance(self.body, dict):
            return None
        record = self.body.get("execution", self.body)
        if isinstance(record, dict) and isinstance(record.get("error"), str):
            return str(record["error"])
        return None

    def describe(self) -> str:
        if self.status is None:
            return f"{self.publisher}: no answer ({self.error})"
        text = json.dumps(self.body)[:300] if self.body is not None else ""
        return f"{self.publisher}: {self.status} {text}"


@dataclass
class Call:
    index: int
    function: str
    argument: str
    publisher: str
    """The publisher the first attempt goes to."""
    key: str | None = None
    is_async: bool = False
    answers: list[Answer] = field(default_factory=list)

    @property
    def final(self) -> Answer | None:
        return self.answers[-1] if self.answers else None

    @property
    def execution_ids(self) -> set[str]:
        return {answer.execution_id for answer in self.answers if answer.execution_id}


@dataclass(frozen=True)
class Retry:
    """Retry a call with the same body and key against the other publisher while it gets no
    answer (connection refused or cut) or a 503; bounded in attempts and in time."""

    attempts: int = 8
    seconds: float = 150.0
    pause: float = 0.5
    max_retry_after: float = 3.0

    def wanted(self, answer: Answer) -> bool:
        return answer.status is None or answer.status == 503

    def delay(self, answer: Answer) -> float:
        if answer.retry_after is not None:
            with contextlib.suppress(ValueError):
                return min(float(answer.retry_after), self.max_retry_after)
        return self.pause


class Api:
    """One user of a running topology."""

    def __init__(self, topology: Topology, token: str) -> None:
        self.topology = topology
        self.token = token
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        headers = {"Authorization": f"Bearer {token}"}
        self.registry = httpx.Client(base_url=topology.registry_url, headers=headers, timeout=30.0)
        self.publishers = {
            name: httpx.Client(
                base_url=topology.publisher_url(name),
                headers=headers,
                timeout=HTTP_TIMEOUT,
                limits=limits,
            )
            for name in topology.publishers
        }

    @classmethod
    def login(cls, topology: Topology, username: str, password: str) -> Api:
        credentials = {"username": username, "password": password}
        with httpx.Client(base_url=topology.auth_url, timeout=30.0) as client:
            response = client.post("/auth/register", json=credentials)
            assert response.status_code == 201, response.text
            response = client.post("/auth/login", json=credentials)
            assert response.status_code == 200, response.text
        return cls(topology, str(response.json()["access_token"]))

    def close(self) -> None:
        self.registry.close()
        for client in self.publishers.values():
            client.close()

    @property
    def publisher_names(self) -> list[str]:
        return sorted(self.publishers)

    def other_publisher(self, name: str) -> str:
        names = self.publisher_names
        return names[(names.index(name) + 1) % len(names)]

    # --- functions ----------------------------------------------------------------------------

    def create_function(self, name: str, image: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "description": f"faults: {name}", "image": image, **fields}
        response = self.registry.post("/registry/functions", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def delete_function(self, name: str, *, seconds: float = 60.0) -> list[int | None]:
        """DELETE until the registry answers 204 (or 404 after an attempt that may have
        landed), retrying 5xx and lost connections within ``seconds``; every status seen."""
        seen: list[int | None] = []
        deadline = time.monotonic() + seconds
        for _ in range(int(seconds / POLL_SECONDS) + 2):  # bounded in count and in time
            try:
                status: int | None = self.registry.delete(f"/registry/functions/{name}").status_code
            except httpx.TransportError:
                status = None
            seen.append(status)
            if status == 204 or (status == 404 and len(seen) > 1):
                return seen
            if status is not None and status < 500 and status != 404:
                raise AssertionError(f"DELETE {name} answered {status}")
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        raise AssertionError(f"DELETE {name} kept failing: {seen}")

    # --- activations --------------------------------------------------------------------------

    def publish(self, publisher: str, call: Call) -> Answer:
        body: dict[str, Any] = {"name": call.function, "argument": call.argument}
        if call.is_async:
            body["async"] = True
        headers = {"Idempotency-Key": call.key} if call.key is not None else {}
        try:
            response = self.publishers[publisher].post(
                "/publisher/publish", json=body, headers=headers
            )
        except httpx.TransportError as exc:
            return Answer(publisher, None, error=f"{type(exc).__name__}: {exc}")
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = response.text
        return Answer(
            publisher,
            response.status_code,
            body=parsed,
            retry_after=response.headers.get("Retry-After"),
        )

    def perform(self, call: Call, retry: Retry | None = None) -> None:
        """Run ``call`` to its final answer (one attempt, or as ``retry`` allows)."""
        target = call.publisher
        deadline = time.monotonic() + (retry.seconds if retry is not None else 0.0)
        attempts = retry.attempts if retry is not None else 1
        for attempt in range(1, attempts + 1):
            answer = self.publish(target, call)
            call.answers.append(answer)
            if retry is None or not retry.wanted(answer) or attempt == attempts:
                return
            if time.monotonic() > deadline:
                return
            time.sleep(retry.delay(answer))
            target = self.other_publisher(target)

    # --- records ------------------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> httpx.Response | None:
        """GET from the first publisher that answers (one may be down)."""
        for name in self.publisher_names:
            with contextlib.suppress(httpx.TransportError):
                response = self.publishers[name].get(path, params=params, timeout=30.0)
                if response.status_code < 500:
                    return response
        return None

    def record(self, execution_id: str) -> dict[str, Any] | None:
        """The record, or None (404, or no publisher answered)."""
        response = self._get(f"/publisher/executions/{execution_id}")
        if response is None or response.status_code != 200:
            return None
        found: dict[str, Any] = response.json()
        return found

    def history(self, function: str) -> list[dict[str, Any]] | None:
        """The newest records of ``function`` (None: no publisher answered)."""
        response = self._get("/publisher/executions", function=function, limit=HISTORY_LIMIT)
        if response is None or response.status_code != 200:
            return None
        records: list[dict[str, Any]] = response.json()["executions"]
        return records


def make_calls(
    api: Api,
    function: str,
    count: int,
    *,
    label: str,
    keyed: bool = False,
    is_async: bool = False,
) -> list[Call]:
    """``count`` calls with unique arguments, alternating between the publishers."""
    names = api.publisher_names
    run = uuid.uuid4().hex[:8]
    return [
        Call(
            index=index,
            function=function,
            argument=f"{label}-{index}-{run}",
            publisher=names[index % len(names)],
            key=f"{label}-{run}-{index}" if keyed else None,
            is_async=is_async,
        )
        for index in range(count)
    ]


class Burst:
    """Calls run on ``workers`` threads; the test thread injects a fault meanwhile."""

    def __init__(
        self, api: Api, calls: Sequence[Call], *, workers: int, retry: Retry | None = None
    ) -> None:
        self.api = api
        self.calls = list(calls)
        self.retry = retry
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="burst")
        self._futures: list[Future[None]] = []
        self._finished = 0
        self._condition = threading.Condition()

    @property
    def finished(self) -> int:
        with self._condition:
            return self._finished

    def start(self) -> Burst:
        self._futures = [self._pool.submit(self._run, call) for call in self.calls]
        return self

    def _run(self, call: Call) -> None:
        try:
            self.api.perform(call, self.retry)
        finally:
            with self._condition:
                self._finished += 1
                self._condition.notify_all()

    def wait_finished(self, count: int, timeout: float) -> bool:
        """Until ``count`` calls have their final answer (False after ``timeout`` seconds)."""
        with self._condition:
            return self._condition.wait_for(lambda: self._finished >= count, timeout)

    def finish(self, timeout: float) -> list[Call]:
        """Every call's final answer; ``AssertionError`` naming the unfinished ones otherwise."""
        done, pending = wait_futures(self._futures, timeout=timeout)
        self._pool.shutdown(wait=not pending, cancel_futures=True)
        if pending:
            stuck = [call.argument for call in self.calls if call.final is None]
            raise AssertionError(f"{len(pending)} calls unfinished after {timeout:.0f} s: {stuck}")
        for future in done:
            future.result()  # a bug of the harness itself surfaces here
        return self.calls


# --- checks -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    calls: list[Call]
    records: dict[str, dict[str, Any]]
    """Every execution id seen (answers, history), with its last record read."""
    unsettled: list[str]
    """Execution ids whose record never became final (or could never be read)."""
    creates: Counter[str]
    """Container ``create`` events per execution id, from Docker's events."""
    left: list[dict[str, str]]
    """Managed containers of this topology still there at the end."""

    @property
    def answers(self) -> list[Answer]:
        return [answer for call in self.calls for answer in call.answers]

    def statuses(self) -> Counter[str]:
        return Counter(
            str(answer.status) if answer.status is not None else "no-answer"
            for answer in self.answers
        )

    @property
    def server_errors(self) -> list[Answer]:
        return [a for a in self.answers if a.status is not None and a.status >= 500]

    def summary(self) -> str:
        statuses = ", ".join(f"{key}: {value}" for key, value in sorted(self.statuses().items()))
        return (
            f"calls={len(self.calls)} attempts={len(self.answers)} [{statuses}] "
            f"5xx={len(self.server_errors)} executions={len(self.records)} "
            f"unsettled={len(self.unsettled)} containers={sum(self.creates.values())} "
            f"left={len(self.left)}"
        )

    def problems(self) -> list[str]:
        """Per execution id: final status, right output, one container at most (exactly one
        for a success), nothing left; and every 200 answer carries its call's output."""
        found: list[str] = []
        argument_of: dict[str, str] = {}
        for call in self.calls:
            for execution_id in call.execution_ids:
                if argument_of.setdefault(execution_id, call.argument) != call.argument:
                    found.append(f"{execution_id}: named by two different calls")
            for answer in call.answers:
                if answer.status == 200:
                    body = answer.body if isinstance(answer.body, dict) else {}
                    if body.get("status") != "succeeded" or body.get("result") != call.argument:
                        found.append(
                            f"call {call.argument!r}: 200 with {answer.describe()} "
                            f"(expected result {call.argument!r})"
                        )
        arguments = {call.argument for call in self.calls}
        for execution_id in sorted(self.unsettled):
            record = self.records.get(execution_id)
            status = record.get("status") if record else "no record"
            found.append(f"{execution_id}: never final (last seen {status})")
        for execution_id, record in sorted(self.records.items()):
            if record.get("status") == "succeeded":
                expected = argument_of.get(execution_id)
                result = record.get("result")
                if (expected is not None and result != expected) or (
                    expected is None and result not in arguments
                ):
                    found.append(
                        f"{execution_id}: succeeded with result {result!r}, expected "
                        f"{expected if expected is not None else 'one of the arguments'!r}"
                    )
                if self.creates.get(execution_id, 0) == 0:
                    found.append(f"{execution_id}: succeeded, but no container create was seen")
        for execution_id, count in sorted(self.creates.items()):
            if count > 1:
                status = self.records.get(execution_id, {}).get("status", "no record")
                found.append(
                    f"{execution_id}: {count} containers created, a second start ({status})"
                )
        for container in self.left:
            found.append(
                f"container {container['id']} of {container['spawner']} for "
                f"{container['execution_id']} left ({container['state']})"
            )
        return found


def settle(
    api: Api, functions: Iterable[str], execution_ids: Iterable[str], *, seconds: float
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Poll the functions' histories and the given records until every one is final, for at
    most ``seconds``; the records seen and the ids that never became final."""
    wanted = set(execution_ids)
    names = list(functions)
    records: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + seconds
    unsettled: list[str] = []
    for _ in range(int(seconds / POLL_SECONDS) + 2):  # bounded in count and in time
        for name in names:
            for record in api.history(name) or []:
                records[str(record["execution_id"])] = record
        for execution_id in sorted(wanted):
            if records.get(execution_id, {}).get("status") not in TERMINAL:
                found = api.record(execution_id)
                if found is not None:
                    records[execution_id] = found
        unsettled = sorted(
            execution_id
            for execution_id in wanted | records.keys()
            if records.get(execution_id, {}).get("status") not in TERMINAL
        )
        if not unsettled or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    return records, unsettled


def examine(
    topology: Topology,
    api: Api,
    calls: Sequence[Call],
    *,
    functions: Iterable[str],
    since: float,
    settle_seconds: float,
    left_seconds: float = 20.0,
) -> Outcome:
    """Settle every execution, count containers created since ``since``, look for leftovers."""
    calls = list(calls)
    ids = {execution_id for call in calls for execution_id in call.execution_ids}
    records, unsettled = settle(api, functions, ids, seconds=settle_seconds)
    deadline = time.monotonic() + left_seconds
    left = topology.managed_containers()
    for _ in range(int(left_seconds / POLL_SECONDS) + 1):  # bounded in count and in time
        if not left or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
        left = topology.managed_containers()
    creates = topology.containers_created(since)
    return Outcome(calls, records, unsettled, creates, left)
