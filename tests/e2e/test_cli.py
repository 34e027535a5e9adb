"""End to end: the ``faas`` command line against the local stack, as a user types it.

The README's "Command line" block runs verbatim (after the steps of "Run a function" that build
``hello-python:latest``), one shell for all of it, each step's stdout, stderr and exit status
kept apart; then failures a user meets: a failing function, a timeout, an unknown function, a
bad token, a gateway that does not answer.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.readme import Step, walkthrough
from tests.e2e.stack import Stack, free_port, running_stack
from tests.support.images import busybox_image, python_base_image

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

BIN = Path(sys.executable).parent
"""The virtualenv's scripts: ``uv sync`` puts ``faas`` there."""
SCRIPT_TIMEOUT = 300


@dataclass(frozen=True)
class Ran:
    command: str
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli-stack")) as running:
        yield running


def cli_env(stack: Stack, config_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAAS_")}
    return env | {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "FAAS_CONFIG_DIR": str(config_dir),
        "FAAS_GATEWAY": stack.url,
        **extra,
    }


def _between(text: str, start: str, end: str) -> str:
    begin = text.index(start) + len(start)
    return text[begin : text.index(end, begin)]


def run_steps(stack: Stack, steps: list[Step], *, cwd: Path, env: dict[str, str]) -> list[Ran]:
    """Run ``steps`` in one bash, as pasted into a terminal; each one's outputs and status."""
    lines = ["set -u"]
    for index, step in enumerate(steps):
        lines.append(f"printf '@@step {index}\\n'; printf '@@step {index}\\n' >&2")
        lines.append(step.command.replace("localhost:8080", f"127.0.0.1:{stack.port}"))
        lines.append(f"printf '\\n@@exit {index} %s\\n' \"$?\"; printf '\\n@@end {index}\\n' >&2")
    result = subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
        cwd=cwd,
        env=env,
    )
    ran: list[Ran] = []
    for index, step in enumerate(steps):
        out = _between(result.stdout, f"@@step {index}\n", f"\n@@exit {index} ")
        status = _between(result.stdout, f"\n@@exit {index} ", "\n")
        err = _between(result.stderr, f"@@step {index}\n", f"\n@@end {index}\n")
        ran.append(Ran(step.command, int(status), out, err))
    return ran


def image_steps() -> list[Step]:
    """The steps of "Run a function" up to the build of ``hello-python:latest``."""
    steps = walkthrough("activation")
    last = next(i for i, step in enumerate(steps) if step.command.startswith("docker build"))
    return steps[: last + 1]


def output_of(ran: list[Ran], command: str) -> Ran:
    [found] = [step for step in ran if step.command == command]
    return found


def test_readme_command_line_runs_verbatim(stack: Stack, tmp_path: Path) -> None:
    python_base_image()  # the Dockerfile's FROM python:3.11-slim, made locally (no registry)
    config_dir = tmp_path / "config"
    steps = image_steps() + walkthrough("cli")
    env = cli_env(stack, config_dir, DOCKER_BUILDKIT="0")

    ran = run_steps(stack, steps, cwd=tmp_path, env=env)

    failed = [step for step in ran if step.exit_code != 0]
    assert not failed, failed
    assert output_of(ran, "faas whoami").stdout.startswith("dave (id ")
    listed = output_of(ran, "faas fn list").stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [
        ["NAME", "IMAGE"],
        ["shout", "hello-python:latest"],
    ]
    said = output_of(ran, 'faas invoke shout "hello from the cli"')
    assert said.stdout == "HELLO FROM THE CLI\n"
    assert output_of(ran, 'echo "piped in" | faas invoke shout').stdout == "PIPED IN\n"
    waited = output_of(ran, "faas executions wait $EXECUTION --timeout 60")
    assert waited.stdout == "LATER\n"
    record = json.loads(output_of(ran, "faas --json executions get $EXECUTION").stdout)
    assert record["status"] == "succeeded"
    assert record["result"] == "LATER"
    history = output_of(ran, "faas executions list --function shout").stdout
    assert record["execution_id"] in history
    assert output_of(ran, "faas fn delete shout").stdout == "deleted shout\n"
    assert output_of(ran, "faas logout").stdout == "logged out\n"

    kept = config_dir / "credentials.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert json.loads(kept.read_text()) == {}


@dataclass
class User:
    stack: Stack
    config_dir: Path

    def faas(self, *args: str, input: str | None = None, **env: str) -> Ran:
        result = subprocess.run(
            [str(BIN / "faas"), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=SCRIPT_TIMEOUT,
            check=False,
            env=cli_env(self.stack, self.config_dir, **env),
        )
        return Ran(" ".join(args), result.returncode, result.stdout, result.stderr)

    def ok(self, *args: str, input: str | None = None) -> str:
        ran = self.faas(*args, input=input)
        assert ran.exit_code == 0, ran
        return ran.stdout


@pytest.fixture(scope="module")
def erin(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> User:
    user = User(stack, tmp_path_factory.mktemp("erin") / "config")
    user.ok("register", "erin", "--password-stdin", input="erin-password-1\n")
    user.ok("login", "erin", "--password-stdin", input="erin-password-1\n")
    user.ok("fn", "create", "sh", "--image", busybox_image(), "--timeout", "2", "--memory", "64")
    return user


def test_a_failing_function_exits_4_with_its_logs(erin: User) -> None:
    ran = erin.faas("invoke", "sh", "echo partial; echo oops >&2; exit 3")

    assert ran.exit_code == 4
    assert ran.stdout == ""
    assert "oops" in ran.stderr
    assert "error: function_failed: " in ran.stderr


def test_a_function_past_its_timeout_exits_5(erin: User) -> None:
    ran = erin.faas("invoke", "sh", "sleep 10")

    assert ran.exit_code == 5
    assert "error: timed_out: " in ran.stderr


def test_an_async_call_is_waited_for(erin: User) -> None:
    execution_id = erin.ok("invoke", "sh", "sleep 1; echo done; echo noted >&2", "--async").strip()

    waited = erin.faas("executions", "wait", execution_id, "--timeout", "60")

    assert waited.exit_code == 0, waited
    assert waited.stdout == "done\n"
    assert waited.stderr == "noted\n"
    assert erin.ok("logs", execution_id) == "noted\n"


def test_usage_and_lookup_errors(erin: User) -> None:
    missing = erin.faas("invoke", "nothing-here", "x")
    usage = erin.faas("fn", "create", "x", "--image", "y:1", "--env", "NOEQUALS")

    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: function_not_found: ")
    assert usage.exit_code == 2


def test_a_bad_token_says_to_log_in(erin: User) -> None:
    ran = erin.faas("whoami", FAAS_TOKEN="not.a.token")

    assert ran.exit_code == 3
    assert "run `faas login USERNAME`" in ran.stderr


def test_a_gateway_that_does_not_answer(erin: User) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"

    ran = erin.faas("--gateway", nowhere, "fn", "list", FAAS_TOKEN="any")

    assert ran.exit_code == 7
    assert ran.stderr == f"error: cannot reach the gateway at {nowhere}\n"
