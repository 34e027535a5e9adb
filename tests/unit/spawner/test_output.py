"""Docker's multiplexed attach stream split into stdout and stderr, with bounded memory."""

from __future__ import annotations

import random

import pytest

from spawner_service.runtime.output import STDERR, STDOUT, FrameDemuxer, OutputCapture


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def feed_in_pieces(demuxer: FrameDemuxer, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    position = 0
    while position < len(data):
        size = rng.randint(1, 11)
        demuxer.feed(data[position : position + size])
        position += size


@pytest.mark.parametrize("seed", range(5))
def test_frames_split_anywhere_are_reassembled(seed: int) -> None:
    capture = OutputCapture(stdout_limit=1000, stderr_tail=1000)
    stream = (
        frame(STDOUT, b"hello ")
        + frame(STDERR, b"warning\n")
        + frame(STDOUT, b"")
        + frame(STDOUT, b"world\n")
        + frame(STDERR, b"done\n")
    )
    feed_in_pieces(FrameDemuxer(capture), stream, seed)
    assert capture.stdout == b"hello world\n"
    assert capture.stderr_tail == b"warning\ndone\n"
    assert not capture.too_large


def test_stdout_at_the_limit_is_kept_and_one_byte_more_is_too_large() -> None:
    exact = OutputCapture(stdout_limit=10, stderr_tail=10)
    FrameDemuxer(exact).feed(frame(STDOUT, b"12345") + frame(STDOUT, b"67890"))
    assert exact.stdout == b"1234567890"
    assert not exact.too_large

    over = OutputCapture(stdout_limit=10, stderr_tail=10)
    FrameDemuxer(over).feed(frame(STDOUT, b"12345") + frame(STDOUT, b"678901"))
    assert over.too_large
    assert over.stdout == b""  # never a cut result
    assert over.stdout_total == 11


def test_stdout_is_not_kept_once_over_the_limit() -> None:
    capture = OutputCapture(stdout_limit=100, stderr_tail=10)
    demuxer = FrameDemuxer(capture)
    for _ in range(1000):
        demuxer.feed(frame(STDOUT, b"x" * 1000))
    assert capture.too_large
    assert capture.stdout == b""
    assert len(capture._stdout) == 0


def test_stderr_keeps_only_its_tail() -> None:
    capture = OutputCapture(stdout_limit=10, stderr_tail=16)
    demuxer = FrameDemuxer(capture)
    written = b""
    for index in range(10_000):
        line = f"line {index}\n".encode()
        written += line
        demuxer.feed(frame(STDERR, line))
        assert len(capture._stderr) <= 32  # trimmed as it goes, not at the end
    assert capture.stderr_tail == written[-16:] == b" 9998\nline 9999\n"


def test_a_cut_stderr_tail_does_not_start_inside_a_character() -> None:
    capture = OutputCapture(stdout_limit=10, stderr_tail=7)
    FrameDemuxer(capture).feed(frame(STDERR, "ééééé".encode()))  # 10 bytes, 2 per character
    tail = capture.stderr_tail
    assert tail.decode("utf-8") == "ééé"


def test_zero_tail_keeps_no_stderr() -> None:
    capture = OutputCapture(stdout_limit=10, stderr_tail=0)
    FrameDemuxer(capture).feed(frame(STDERR, b"noise") + frame(STDOUT, b"ok"))
    assert capture.stderr_tail == b""
    assert capture.stdout == b"ok"


def test_unknown_streams_are_ignored() -> None:
    capture = OutputCapture(stdout_limit=10, stderr_tail=10)
    FrameDemuxer(capture).feed(frame(0, b"stdin?") + frame(3, b"?") + frame(STDOUT, b"ok"))
    assert capture.stdout == b"ok"
    assert capture.stderr_tail == b""
