"""The static shim as a container's entrypoint, in a container hardened like the runtime's.

The shim is bind-mounted read-only over the read-only root of the busybox ``FROM scratch``
image and reads its frame from the container's stdin (``docker run -i``); the argv is the image's
ENTRYPOINT as the engine reports it, then the argument, as ``docker run IMAGE ARG`` would make it.
Its stdout records are read until the end record (not until the container's end).
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
from tests.support.shim import ShimRun, run_shim

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

SHIM_PATH = "/.faas/shim"
WAIT_SECONDS = 60
# A script for the image's ``sh -c`` ENTRYPOINT: the argument comes back as $0, byte for byte.
ECHO_ARGUMENT = 'printf "%s" "$0"'
WORKDIR = "/tmp"
"""The container's working directory (``--workdir``): an empty frame cwd keeps it."""

Run = Callable[..., ShimRun]


def hardened(name: str, shim: Path, image: str, env: dict[str, str]) -> list[str]:
    return [
        "docker", "run", "-i", "--rm", "--name", name,
        "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", "65534:65534", "--init",
        "--pids-limit", "64", "--memory", "64m", "--memory-swap", "64m",
        "--tmpfs", "/tmp:rw,noexec,nosuid,size=16m,uid=65534,gid=65534,mode=1777",
        "--mount", f"type=bind,source={shim},target={SHIM_PATH},readonly",
        "--workdir", WORKDIR,
        *[f"--env={key}={value}" for key, value in env.items()],
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
    """``run(stdin_bytes, keep_stdin_open=False, env={})``: the container's records and status
    (``env``: the container's own, as ``docker run --env``)."""
    names: list[str] = []

    def start(
        stdin: bytes, *, keep_stdin_open: bool = False, env: dict[str, str] | None = None
    ) -> ShimRun:
        names.append(f"faas-shim-test-{uuid.uuid4().hex[:12]}")
        command = hardened(names[-1], shim_binary, busybox, env or {})
        return run_shim(command, stdin, keep_stdin_open=keep_stdin_open, within=WAIT_SECONDS)

    yield start
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


def call(entrypoint: list[str], script: str, argument: str, **kwargs: object) -> bytes:
    env = kwargs.get("env", {})
    cwd = kwargs.get("cwd", "")
    assert isinstance(env, dict)
    assert isinstance(cwd, str)
    return encode_frame([*entrypoint, script, argument], env, cwd)


def exited(status: int) -> tuple[bytes, int]:
    return (b"X", status)


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
    assert (result.status, result.err) == (0, b"")
    assert result.decoded() == (argument.encode(), exited(0))


def test_the_environment_is_the_containers_with_the_frames_entries(
    run: Run, entrypoint: list[str]
) -> None:
    script = 'printf "%s|%s|%s|" "$GREETING" "$REPLACED" "$(id -u)"; env | cut -d= -f1 | sort'
    env = {"GREETING": "hello, world", "REPLACED": "by the frame"}
    result = run(
        call(entrypoint, script, "", env=env), env={"REPLACED": "container's", "KEPT": "1"}
    )
    assert (result.status, result.err) == (0, b"")
    # The engine's HOSTNAME, HOME and PATH and the container's own env stay, once each; the
    # shell adds PWD and SHLVL.
    names = b"GREETING\nHOME\nHOSTNAME\nKEPT\nPATH\nPWD\nREPLACED\nSHLVL\n"
    assert result.decoded() == (b"hello, world|by the frame|65534|" + names, exited(0))


def test_a_frame_path_replaces_the_images(run: Run, entrypoint: list[str]) -> None:
    result = run(call(entrypoint, 'printf "%s" "$PATH"', "", env={"PATH": "/bin"}))
    assert result.decoded() == (b"/bin", exited(0))


@pytest.mark.parametrize(("cwd", "expected"), [("", WORKDIR), ("/", "/"), ("/bin", "/bin")])
def test_the_working_directory(run: Run, entrypoint: list[str], cwd: str, expected: str) -> None:
    result = run(call(entrypoint, "pwd", "", cwd=cwd))
    assert result.decoded() == (f"{expected}\n".encode(), exited(0))


def test_stdout_is_in_records_and_stderr_apart(run: Run, entrypoint: list[str]) -> None:
    result = run(call(entrypoint, "echo result; echo log line >&2; exit 3", ""))
    assert result.status == 0
    # stdout and stderr in records of their own, both before the end record
    assert result.out == b"D" + u32(7) + b"result\n" + b"L" + u32(9) + b"log line\n" + b"X" + u32(3)
    assert result.err == b""


def test_a_killed_function_is_128_plus_the_signal(run: Run, entrypoint: list[str]) -> None:
    result = run(call(entrypoint, "echo before; kill -KILL $$", ""))
    assert result.decoded() == (b"before\n", exited(137))


def test_a_forged_end_record_is_only_output(run: Run, entrypoint: list[str]) -> None:
    result = run(call(entrypoint, r"printf 'X\000\000\000\000'; exit 5", ""))
    assert result.records == [(b"D", b"X\0\0\0\0"), (b"X", 5)]


def test_a_missing_program_and_one_that_cannot_be_executed(run: Run) -> None:
    missing = run(encode_frame(["no-such-program"], {}, ""))
    assert missing.decoded() == (b"", (b"E", ShimStatus.NOT_FOUND))
    directory = run(encode_frame(["/bin"], {}, ""))
    assert directory.decoded() == (b"", (b"E", ShimStatus.CANNOT_EXECUTE))


def test_stdin_is_closed_for_the_function(run: Run, entrypoint: list[str]) -> None:
    frame = call(entrypoint, "cat; echo end", "")
    result = run(frame + b"bytes after the frame\n")
    assert result.decoded() == (b"end\n", exited(0))


def test_the_function_runs_while_stdin_stays_open(run: Run, entrypoint: list[str]) -> None:
    result = run(call(entrypoint, "echo ran", ""), keep_stdin_open=True)
    assert (result.status, result.decoded(), result.err) == (0, (b"ran\n", exited(0)), b"")


def test_the_end_comes_while_a_background_process_runs(run: Run, entrypoint: list[str]) -> None:
    # Read until the end record: a shim waiting for the pipe's end would take the 30 s.
    result = run(call(entrypoint, "sleep 30 & echo started; exit 2", ""), keep_stdin_open=True)
    assert (result.status, result.decoded()) == (0, (b"started\n", exited(2)))


def test_a_truncated_frame_is_refused(run: Run, entrypoint: list[str]) -> None:
    frame = call(entrypoint, "echo ran", "", cwd="/tmp")
    result = run(frame[:-2])
    assert (result.status, result.out) == (ShimStatus.TRUNCATED, b"")
    assert result.err == b"faas-shim: truncated frame\n"


@pytest.mark.parametrize("magic", [b"FSH\x00", b"FSH\x01", b"XSH\x02"])
def test_a_bad_magic_or_version_is_refused(run: Run, entrypoint: list[str], magic: bytes) -> None:
    frame = call(entrypoint, "echo ran", "")
    result = run(magic + frame[len(MAGIC) :])
    assert (result.status, result.out) == (ShimStatus.BAD_MAGIC, b"")
    assert result.err == b"faas-shim: bad magic or unknown version\n"


def test_an_oversize_element_is_refused(run: Run, entrypoint: list[str]) -> None:
    argv = [arg.encode() for arg in [*entrypoint, "echo ran"]] + [b"x" * (MAX_ELEMENT + 1)]
    frame = MAGIC + elements(argv) + u32(0) + u32(0)
    result = run(frame)
    assert (result.status, result.out) == (ShimStatus.OVER_BOUND, b"")
    assert result.err == b"faas-shim: element over its bound\n"


def test_a_malformed_element_is_refused(run: Run, entrypoint: list[str]) -> None:
    frame = MAGIC + elements([b"/bin/sh"]) + elements([b"NOEQUALS"]) + u32(0)
    result = run(frame)
    assert (result.status, result.out) == (ShimStatus.MALFORMED, b"")
    assert result.err == b"faas-shim: env entry without KEY=\n"


def test_a_missing_working_directory_is_refused(run: Run, entrypoint: list[str]) -> None:
    result = run(call(entrypoint, "echo ran", "", cwd="/nonexistent"))
    assert (result.status, result.out) == (ShimStatus.SETUP_FAILED, b"")
    assert result.err == b"faas-shim: chdir: No such file or directory\n"
