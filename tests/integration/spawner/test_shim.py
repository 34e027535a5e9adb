"""The static shim as a container's entrypoint, in a container hardened like the runtime's.

The shim is bind-mounted read-only over the read-only root of the busybox ``FROM scratch``
image and reads its frame from the container's stdin (``docker run -i``); the argv is the image's
ENTRYPOINT as the engine reports it, then the argument, as ``docker run IMAGE ARG`` would make it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spawner_service.runtime.shim import MAGIC, MAX_ELEMENT, ShimStatus, elements, encode_frame, u32
from tests.support.images import docker

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

SHIM_PATH = "/.faas/shim"
WAIT_SECONDS = 60
# A script for the image's ``sh -c`` ENTRYPOINT: the argument comes back as $0, byte for byte.
ECHO_ARGUMENT = 'printf "%s" "$0"'
IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

Run = Callable[..., subprocess.CompletedProcess[bytes]]


def hardened(name: str, shim: Path, image: str) -> list[str]:
    return [
        "docker", "run", "-i", "--rm", "--name", name,
        "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", "65534:65534", "--init",
        "--pids-limit", "64", "--memory", "64m", "--memory-swap", "64m",
        "--tmpfs", "/tmp:rw,noexec,nosuid,size=16m,uid=65534,gid=65534,mode=1777",
        "--mount", f"type=bind,source={shim},target={SHIM_PATH},readonly",
        "--entrypoint", SHIM_PATH,
        image,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def entrypoint(busybox: str) -> list[str]:
    config = json.loads(docker("image", "inspect", busybox, "--format", "{{json .Config}}"))
    value: list[str] = config["Entrypoint"]
    return value


@pytest.fixture
def run(shim_binary: Path, busybox: str) -> Iterator[Run]:
    """``run(stdin_bytes, keep_stdin_open=False)``: the finished container's status and output."""
    names: list[str] = []

    def start(stdin: bytes, *, keep_stdin_open: bool = False) -> subprocess.CompletedProcess[bytes]:
        names.append(f"faas-shim-test-{uuid.uuid4().hex[:12]}")
        command = hardened(names[-1], shim_binary, busybox)
        if not keep_stdin_open:
            return subprocess.run(
                command, input=stdin, capture_output=True, timeout=WAIT_SECONDS, check=False
            )
        with subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            process.stdin.write(stdin)
            process.stdin.flush()  # and left open: the shim must not wait for more
            process.wait(timeout=WAIT_SECONDS)  # the output is small: no pipe fills up
            out, err = process.stdout.read(), process.stderr.read()
            return subprocess.CompletedProcess(command, process.returncode, out, err)

    yield start
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


def call(entrypoint: list[str], script: str, argument: str, **kwargs: object) -> bytes:
    env = kwargs.get("env", IMAGE_ENV)
    cwd = kwargs.get("cwd", "/")
    assert isinstance(env, dict)
    assert isinstance(cwd, str)
    return encode_frame([*entrypoint, script, argument], env, cwd)


@pytest.mark.parametrize(
    "argument",
    [
        pytest.param("", id="empty"),
        pytest.param(
            "".join(chr(0x21 + i % 94) for i in range(MAX_ELEMENT - 1)) + "\n", id="131071-bytes"
        ),
        pytest.param("\nline one\r\n\tline two\n\n  ", id="newlines"),
        pytest.param("héllo wörld ∑ 中文 😀 \u200b", id="unicode"),
    ],
)
def test_argv_is_byte_exact(run: Run, entrypoint: list[str], argument: str) -> None:
    result = run(call(entrypoint, ECHO_ARGUMENT, argument))
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == argument.encode()


def test_env_and_working_directory_are_applied(run: Run, entrypoint: list[str]) -> None:
    script = 'printf "%s|%s|%s|" "$GREETING" "$(pwd)" "$(id -u)"; env | cut -d= -f1 | sort'
    env = IMAGE_ENV | {"GREETING": "hello, world"}
    result = run(call(entrypoint, script, "", env=env, cwd="/tmp"))
    assert (result.returncode, result.stderr) == (0, b"")
    # Only the frame's env, and what the shell sets itself: not the engine's HOSTNAME and HOME.
    assert result.stdout == b"hello, world|/tmp|65534|GREETING\nPATH\nPWD\nSHLVL\n"


def test_stdout_and_stderr_are_apart_and_the_exit_code_is_the_functions(
    run: Run, entrypoint: list[str]
) -> None:
    result = run(call(entrypoint, "echo result; echo log line >&2; exit 3", ""))
    assert (result.returncode, result.stdout, result.stderr) == (3, b"result\n", b"log line\n")


def test_stdin_is_closed_for_the_function(run: Run, entrypoint: list[str]) -> None:
    frame = call(entrypoint, "cat; echo end", "")
    result = run(frame + b"bytes after the frame\n")
    assert (result.returncode, result.stdout) == (0, b"end\n")


def test_the_function_runs_while_stdin_stays_open(run: Run, entrypoint: list[str]) -> None:
    result = run(call(entrypoint, "echo ran", ""), keep_stdin_open=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ran\n", b"")


def test_a_truncated_frame_is_refused(run: Run, entrypoint: list[str]) -> None:
    frame = call(entrypoint, "echo ran", "", cwd="/tmp")
    result = run(frame[:-2])
    assert (result.returncode, result.stdout) == (ShimStatus.TRUNCATED, b"")
    assert result.stderr == b"faas-shim: truncated frame\n"


def test_a_bad_magic_is_refused(run: Run, entrypoint: list[str]) -> None:
    frame = call(entrypoint, "echo ran", "")
    result = run(b"FSH\x00" + frame[len(MAGIC) :])
    assert (result.returncode, result.stdout) == (ShimStatus.BAD_MAGIC, b"")
    assert result.stderr == b"faas-shim: bad magic or unknown version\n"


def test_an_oversize_element_is_refused(run: Run, entrypoint: list[str]) -> None:
    argv = [arg.encode() for arg in [*entrypoint, "echo ran"]] + [b"x" * (MAX_ELEMENT + 1)]
    frame = MAGIC + elements(argv) + u32(0) + u32(0)
    result = run(frame)
    assert (result.returncode, result.stdout) == (ShimStatus.OVER_BOUND, b"")
    assert result.stderr == b"faas-shim: element over its bound\n"
