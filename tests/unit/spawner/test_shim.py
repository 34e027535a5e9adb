"""The static shim on this machine: a static ELF, the frame's checks, and the bytes it reads.

The shim runs here directly (no container): ``execve`` of host programs such as ``/bin/sh``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spawner_service.runtime.shim import (
    MAGIC,
    MAX_COUNT,
    MAX_CWD,
    MAX_ELEMENT,
    ShimStatus,
    element,
    elements,
    encode_frame,
    u32,
)
from tests.support.shim import PT_INTERP, program_header_types

PT_LOAD = 1
HOST_ENV = {"PATH": "/usr/bin:/bin"}


def run(shim: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(shim)], input=stdin, capture_output=True, timeout=30, check=False)


def script(code: str, env: dict[str, str] | None = None, cwd: str = "/") -> bytes:
    return encode_frame(["sh", "-c", code, "arg0"], HOST_ENV if env is None else env, cwd)


def test_the_shim_is_a_static_elf(shim_binary: Path) -> None:
    types = program_header_types(shim_binary)
    assert PT_LOAD in types
    assert PT_INTERP not in types  # no dynamic loader: nothing of the image's libc is used


def test_the_elf_check_sees_a_dynamic_loader() -> None:
    assert PT_INTERP in program_header_types(Path(sys.executable).resolve())


def test_argv_env_and_working_directory_are_applied(shim_binary: Path) -> None:
    frame = script(
        'printf "%s|%s|%s" "$0" "$GREETING" "$(pwd)"', HOST_ENV | {"GREETING": "hé"}, "/tmp"
    )
    result = run(shim_binary, frame)
    assert (result.returncode, result.stdout, result.stderr) == (0, "arg0|hé|/tmp".encode(), b"")


def test_the_environment_is_only_the_frames(shim_binary: Path) -> None:
    result = subprocess.run(
        [str(shim_binary)],
        input=script("env"),
        capture_output=True,
        timeout=30,
        check=False,
        env={"LEAKED": "1", "PATH": "/bin"},
    )
    assert result.returncode == 0
    assert b"LEAKED" not in result.stdout
    assert b"PATH=/usr/bin:/bin" in result.stdout


def test_the_function_exit_code_is_the_shims(shim_binary: Path) -> None:
    assert run(shim_binary, script("exit 42")).returncode == 42


def test_the_shim_reads_exactly_the_frame(shim_binary: Path, tmp_path: Path) -> None:
    frame = script("exit 0")
    stdin = tmp_path / "stdin"
    stdin.write_bytes(frame + b"what follows the frame")
    # The shim and this test share the open file: its offset is what the shim consumed.
    with stdin.open("rb", buffering=0) as shared:
        subprocess.run([str(shim_binary)], stdin=shared, timeout=30, check=True)
        assert shared.tell() == len(frame)


def test_the_function_reads_an_empty_stdin(shim_binary: Path) -> None:
    result = run(shim_binary, script("cat; echo end") + b"what follows the frame")
    assert (result.returncode, result.stdout) == (0, b"end\n")


def test_path_search_uses_the_frames_path(shim_binary: Path) -> None:
    ok = run(shim_binary, encode_frame(["true"], {"PATH": "/nonexistent:/bin"}, "/"))
    assert ok.returncode == 0
    missing = run(shim_binary, encode_frame(["true"], {"PATH": "/nonexistent"}, "/"))
    assert missing.returncode == ShimStatus.NOT_FOUND
    assert missing.stderr == b"faas-shim: true: No such file or directory\n"


def test_a_program_that_cannot_be_executed(shim_binary: Path) -> None:
    result = run(shim_binary, encode_frame(["/etc"], HOST_ENV, "/"))
    assert result.returncode == ShimStatus.CANNOT_EXECUTE


def test_a_missing_working_directory_is_a_setup_failure(shim_binary: Path) -> None:
    result = run(shim_binary, script("echo ran", cwd="/nonexistent"))
    assert (result.returncode, result.stdout) == (ShimStatus.SETUP_FAILED, b"")
    assert result.stderr.startswith(b"faas-shim: chdir: ")


ARGV_ONE = elements([b"/bin/echo"])
NO_ENV = u32(0)
ROOT = element(b"/")


@pytest.mark.parametrize(
    ("frame", "status", "message"),
    [
        pytest.param(b"", ShimStatus.TRUNCATED, "truncated frame", id="empty"),
        pytest.param(
            MAGIC + u32(1) + u32(5) + b"/bin",
            ShimStatus.TRUNCATED,
            "truncated frame",
            id="mid-element",
        ),
        pytest.param(
            MAGIC + ARGV_ONE + NO_ENV, ShimStatus.TRUNCATED, "truncated frame", id="no-cwd"
        ),
        pytest.param(
            b"FSH\x02" + ARGV_ONE + NO_ENV + ROOT,
            ShimStatus.BAD_MAGIC,
            "bad magic or unknown version",
            id="version",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n", ShimStatus.BAD_MAGIC, "bad magic or unknown version", id="magic"
        ),
        pytest.param(
            MAGIC + u32(1) + u32(MAX_ELEMENT + 1),
            ShimStatus.OVER_BOUND,
            "element over its bound",
            id="element",
        ),
        pytest.param(
            MAGIC + u32(MAX_COUNT + 1), ShimStatus.OVER_BOUND, "too many elements", id="count"
        ),
        pytest.param(
            MAGIC + ARGV_ONE + NO_ENV + u32(MAX_CWD + 1),
            ShimStatus.OVER_BOUND,
            "element over its bound",
            id="cwd",
        ),
        pytest.param(
            MAGIC + elements([b"/bin/echo", *[b"x" * MAX_ELEMENT] * 8]) + NO_ENV + ROOT,
            ShimStatus.OVER_BOUND,
            "element over its bound",
            id="total",
        ),
        pytest.param(
            MAGIC + elements([b"/bin/echo", b"a\0b"]) + NO_ENV + ROOT,
            ShimStatus.MALFORMED,
            "NUL inside an element",
            id="nul",
        ),
        pytest.param(
            MAGIC + u32(0) + NO_ENV + ROOT, ShimStatus.MALFORMED, "empty argv", id="argc-0"
        ),
        pytest.param(
            MAGIC + elements([b""]) + NO_ENV + ROOT,
            ShimStatus.MALFORMED,
            "empty argv[0]",
            id="argv0",
        ),
        pytest.param(
            MAGIC + ARGV_ONE + elements([b"NOEQUALS"]) + ROOT,
            ShimStatus.MALFORMED,
            "env entry without KEY=",
            id="env",
        ),
        pytest.param(
            MAGIC + ARGV_ONE + elements([b"=x"]) + ROOT,
            ShimStatus.MALFORMED,
            "env entry without KEY=",
            id="env-key",
        ),
    ],
)
def test_a_bad_frame_is_refused_and_nothing_runs(
    shim_binary: Path, frame: bytes, status: ShimStatus, message: str
) -> None:
    result = run(shim_binary, frame)
    assert (result.returncode, result.stdout) == (status, b"")
    assert result.stderr == f"faas-shim: {message}\n".encode()
