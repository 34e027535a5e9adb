"""The static shim on this machine: a static ELF, the frame's checks, the bytes it reads, and the
records it writes.

The shim runs here directly (no container): ``execve`` of host programs such as ``/bin/sh``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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
from tests.support.shim import (
    PT_INTERP,
    ShimRun,
    parse_records,
    program_header_types,
    read_until_end,
    run_shim,
)

PT_LOAD = 1
HOST_PATH = "/usr/bin:/bin"
HOST_ENV = {"PATH": HOST_PATH}


def run(shim: Path, stdin: bytes, env: dict[str, str] | None = None) -> ShimRun:
    return run_shim([str(shim)], stdin, env=HOST_ENV if env is None else env)


def script(code: str, env: dict[str, str] | None = None, cwd: str = "/") -> bytes:
    return encode_frame(["sh", "-c", code, "arg0"], {} if env is None else env, cwd)


def exited(status: int) -> tuple[bytes, int]:
    return (b"X", status)


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """PIDs of processes a function left behind, killed after the test."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_shim_is_a_static_elf(shim_binary: Path) -> None:
    types = program_header_types(shim_binary)
    assert PT_LOAD in types
    assert PT_INTERP not in types  # no dynamic loader: nothing of the image's libc is used


def test_the_elf_check_sees_a_dynamic_loader() -> None:
    assert PT_INTERP in program_header_types(Path(sys.executable).resolve())


def test_argv_env_and_working_directory_are_applied(shim_binary: Path) -> None:
    frame = script('printf "%s|%s|%s" "$0" "$GREETING" "$(pwd)"', {"GREETING": "hé"}, "/tmp")
    result = run(shim_binary, frame)
    assert (result.status, result.err) == (0, b"")
    assert result.decoded() == ("arg0|hé|/tmp".encode(), exited(0))


def test_the_environment_is_the_shims_own_with_the_frames_entries(shim_binary: Path) -> None:
    own = {"PATH": HOST_PATH, "KEPT": "own", "REPLACED": "own"}
    frame = script("env", {"REPLACED": "frame", "ADDED": "frame=with=equals"})
    result = run(shim_binary, frame, env=own)
    stdout, end = result.decoded()
    assert end == exited(0)
    lines = stdout.decode().splitlines()
    assert {"KEPT=own", "REPLACED=frame", "ADDED=frame=with=equals", f"PATH={HOST_PATH}"} <= set(
        lines
    )
    assert [line for line in lines if line.startswith("REPLACED=")] == ["REPLACED=frame"]


def test_an_empty_working_directory_is_the_shims_own(shim_binary: Path, tmp_path: Path) -> None:
    result = run_shim([str(shim_binary)], script("pwd", cwd=""), env=HOST_ENV, cwd=tmp_path)
    assert result.decoded() == (f"{tmp_path}\n".encode(), exited(0))


def test_stdout_is_relayed_in_records_and_stderr_apart(shim_binary: Path) -> None:
    result = run(shim_binary, script("echo result; echo log line >&2; exit 3"))
    assert result.status == 0  # the shim's own: the function's status is in its end record
    # stdout and stderr in records of their own, both before the end record
    assert result.out == b"D" + u32(7) + b"result\n" + b"L" + u32(9) + b"log line\n" + b"X" + u32(3)
    assert result.err == b""


def test_no_output_is_only_the_end_record(shim_binary: Path) -> None:
    assert run(shim_binary, script("exit 0")).out == b"X" + u32(0)


@pytest.mark.parametrize("status", [1, 42, 255])
def test_the_function_exit_code_is_in_the_end_record(shim_binary: Path, status: int) -> None:
    result = run(shim_binary, script(f"exit {status}"))
    assert (result.status, result.decoded()) == (0, (b"", exited(status)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_function_is_128_plus_the_signal(shim_binary: Path, sig: signal.Signals) -> None:
    result = run(shim_binary, script(f"echo before; kill -{sig.name[3:]} $$; echo after"))
    assert result.decoded() == (b"before\n", exited(128 + sig))


def test_a_forged_end_record_is_only_output(shim_binary: Path) -> None:
    result = run(shim_binary, script(r"printf 'X\000\000\000\000'; exit 5"))
    assert result.records == [(b"D", b"X\0\0\0\0"), (b"X", 5)]
    assert result.decoded() == (b"X\0\0\0\0", exited(5))


def test_the_shim_reads_exactly_the_frame(shim_binary: Path, tmp_path: Path) -> None:
    frame = script("exit 0")
    stdin = tmp_path / "stdin"
    stdin.write_bytes(frame + b"what follows the frame")
    # The shim and this test share the open file: its offset is what the shim consumed.
    with stdin.open("rb", buffering=0) as shared:
        result = subprocess.run(
            [str(shim_binary)], stdin=shared, capture_output=True, timeout=30, check=True
        )
        assert shared.tell() == len(frame)
    assert result.stdout == b"X" + u32(0)


def test_the_function_reads_an_empty_stdin(shim_binary: Path) -> None:
    result = run(shim_binary, script("cat; echo end") + b"what follows the frame")
    assert result.decoded() == (b"end\n", exited(0))


def test_the_end_comes_while_a_background_process_runs(
    shim_binary: Path, leftovers: list[int]
) -> None:
    result = run(shim_binary, script("sleep 30 & echo $!; exit 4"))
    stdout, end = result.decoded()
    leftovers.append(int(stdout))
    assert (result.status, end) == (0, exited(4))
    os.kill(leftovers[0], 0)  # still running: the shim did not wait for it


def test_the_end_comes_while_a_background_process_keeps_writing(shim_binary: Path) -> None:
    # Once the function is gone the shim relays what the pipe holds, not what comes later.
    result = run(shim_binary, script("yes & sleep 0.05; exit 6"))
    stdout, end = result.decoded()
    assert end == exited(6)
    assert set(stdout) <= set(b"y\n")


# --- --linger (how the pool starts it) -------------------------------------------------------


@contextlib.contextmanager
def lingering(
    shim: Path, frame: bytes
) -> Iterator[tuple[subprocess.Popen[bytes], list[tuple[bytes, bytes | int]]]]:
    """The shim with ``--linger`` given ``frame`` (its stdin kept open), once it wrote its end
    record: the process and its records."""
    with subprocess.Popen(
        [str(shim), "--linger"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=HOST_ENV,
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.write(frame)
            process.stdin.flush()
            out = read_until_end(process.stdout.fileno(), time.monotonic() + 20)
            yield process, parse_records(out)[0]
        finally:
            if process.poll() is None:
                process.kill()


def test_with_linger_the_shim_stays_after_the_end_until_its_stdin_ends(shim_binary: Path) -> None:
    with lingering(shim_binary, script("echo done; exit 3")) as (process, records):
        assert records == [(b"D", b"done\n"), (b"X", 3)]
        time.sleep(0.3)
        assert process.poll() is None  # still there after its end record
        assert process.stdin is not None
        process.stdin.write(b"a second frame is only read and dropped")
        process.stdin.close()
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None
        assert process.stdout.read() == b""  # nothing after the end record


def test_with_linger_what_the_function_left_behind_ends_with_it(
    shim_binary: Path, leftovers: list[int]
) -> None:
    with lingering(shim_binary, script("sleep 30 & echo $!; exit 0")) as (process, records):
        [(_, pid), _] = records
        assert isinstance(pid, bytes)
        leftovers.append(int(pid))
        for _ in range(100):  # bounded: the kill is sent right after the end record
            if not _alive(leftovers[0]):
                break
            time.sleep(0.05)
        assert not _alive(leftovers[0])
        assert process.poll() is None


def test_with_linger_a_function_killed_by_sigkill_ends_the_shim_at_once(
    shim_binary: Path,
) -> None:
    # The memory limit's kill: the spawner waits for the container's end to hear it from the
    # engine, so the shim does not stay.
    with lingering(shim_binary, script("kill -9 $$")) as (process, records):
        assert records == [(b"X", 128 + signal.SIGKILL)]
        assert process.wait(timeout=10) == 0


def test_an_unknown_argument_is_a_setup_failure(shim_binary: Path) -> None:
    result = run_shim([str(shim_binary), "--stay"], script("echo never"), env=HOST_ENV)
    assert (result.status, result.out) == (ShimStatus.SETUP_FAILED, b"")
    assert b"usage" in result.err


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_path_search_uses_the_frames_path(shim_binary: Path) -> None:
    ok = run(shim_binary, encode_frame(["true"], {"PATH": "/nonexistent:/bin"}, "/"))
    assert ok.decoded() == (b"", exited(0))
    missing = run(shim_binary, encode_frame(["true"], {"PATH": "/nonexistent"}, "/"))
    assert (missing.status, missing.decoded()) == (0, (b"", (b"E", ShimStatus.NOT_FOUND)))
    assert missing.err == b"faas-shim: true: No such file or directory\n"


def test_a_program_that_cannot_be_executed(shim_binary: Path, tmp_path: Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\necho ran\n")
    program.chmod(0o644)
    for argv0 in ["/etc", str(program)]:
        result = run(shim_binary, encode_frame([argv0], {}, "/"))
        assert result.decoded() == (b"", (b"E", ShimStatus.CANNOT_EXECUTE))
        assert result.err == f"faas-shim: {argv0}: Permission denied\n".encode()


def test_a_missing_working_directory_is_a_setup_failure(shim_binary: Path) -> None:
    result = run(shim_binary, script("echo ran", cwd="/nonexistent"))
    assert (result.status, result.out) == (ShimStatus.SETUP_FAILED, b"")
    assert result.err.startswith(b"faas-shim: chdir: ")


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
            b"FSH\x01" + ARGV_ONE + NO_ENV + ROOT,
            ShimStatus.BAD_MAGIC,
            "bad magic or unknown version",
            id="version-1",
        ),
        pytest.param(
            b"FSH\x03" + ARGV_ONE + NO_ENV + ROOT,
            ShimStatus.BAD_MAGIC,
            "bad magic or unknown version",
            id="version-3",
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
    assert (result.status, result.out) == (status, b"")
    assert result.err == f"faas-shim: {message}\n".encode()


def test_the_functions_last_stderr_comes_before_its_end_record(shim_binary: Path) -> None:
    code = 'i=0; while [ $i -lt 300 ]; do echo "log $i" >&2; i=$((i+1)); done; echo TAIL-END >&2'
    result = run(shim_binary, script(code + "; exit 3"))
    assert result.decoded() == (b"", exited(3))
    expected = "".join(f"log {i}\n" for i in range(300)) + "TAIL-END\n"
    assert result.logs == expected.encode()
