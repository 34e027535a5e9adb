"""The shim's stdout records decoded by ``ShimCapture``, however the stream is cut into chunks."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from spawner_service.runtime.output import STDERR, STDOUT
from spawner_service.runtime.shim import ShimCapture, u32

LIMIT = 1 << 16


def data(payload: bytes) -> bytes:
    return b"D" + u32(len(payload)) + payload


def feed(capture: ShimCapture, stream: bytes, cuts: list[int]) -> None:
    """``stream`` written in the chunks between the ``cuts`` (positions, in any order)."""
    bounds = [0, *sorted({cut % (len(stream) + 1) for cut in cuts}), len(stream)]
    for start, end in itertools.pairwise(bounds):
        capture.write(STDOUT, stream[start:end])


def capture_of(limit: int = LIMIT) -> ShimCapture:
    return ShimCapture(stdout_limit=limit, stderr_tail=100)


payloads = st.lists(st.binary(max_size=300), max_size=8)
ends = st.tuples(st.sampled_from([b"X", b"E"]), st.integers(0, 2**32 - 1))
cuts = st.lists(st.integers(0, 10_000), max_size=20)


@given(payloads, ends, cuts)
def test_records_cut_anywhere_give_the_same_stdout_and_end(
    chunks: list[bytes], end: tuple[bytes, int], positions: list[int]
) -> None:
    capture = capture_of()
    feed(capture, b"".join(data(p) for p in chunks) + end[0] + u32(end[1]), positions)
    assert (capture.stdout, capture.end) == (b"".join(chunks), end)
    assert capture.finished
    assert not capture.malformed
    assert not capture.too_large


@given(payloads, cuts)
def test_without_the_end_record_reading_goes_on(chunks: list[bytes], positions: list[int]) -> None:
    capture = capture_of()
    feed(capture, b"".join(data(p) for p in chunks), positions)
    assert (capture.stdout, capture.end) == (b"".join(chunks), None)
    assert not capture.finished


def test_a_forged_end_record_inside_the_output_is_output() -> None:
    capture = capture_of()
    capture.write(STDOUT, data(b"X\0\0\0\0") + data(b"E" + u32(127)) + b"X" + u32(9))
    assert (capture.stdout, capture.end) == (b"X\0\0\0\0E\0\0\0\x7f", (b"X", 9))


def test_stderr_is_kept_apart() -> None:
    capture = capture_of()
    capture.write(STDERR, b"D" + u32(3) + b"log")
    capture.write(STDOUT, data(b"out") + b"X" + u32(0))
    assert (capture.stdout, capture.stderr_tail) == (b"out", b"D\0\0\0\x03log")


@given(st.integers(1, 64), cuts)
def test_output_up_to_the_cap_is_kept(size: int, positions: list[int]) -> None:
    capture = capture_of(limit=2 * size)
    feed(capture, data(b"a" * size) + data(b"b" * size) + b"X" + u32(0), positions)
    assert (capture.stdout, capture.end, capture.too_large) == (
        b"a" * size + b"b" * size,
        (b"X", 0),
        False,
    )


@given(st.integers(1, 64), cuts)
def test_output_over_the_cap_is_too_large_and_reading_stops(
    size: int, positions: list[int]
) -> None:
    capture = capture_of(limit=2 * size - 1)
    feed(capture, data(b"a" * size) + data(b"b" * size) + b"X" + u32(0), positions)
    assert capture.too_large
    assert capture.finished
    assert capture.stdout == b""  # never a cut result
    assert capture.end is None  # not read: the call is stopped on its output


def test_a_record_of_an_unknown_type_is_malformed() -> None:
    capture = capture_of()
    capture.write(STDOUT, data(b"fine") + b"Q" + u32(0) + b"X" + u32(0))
    assert capture.malformed
    assert capture.finished
    assert capture.end is None


def test_raw_output_without_records_is_malformed() -> None:
    capture = capture_of()
    capture.write(STDOUT, b"hello world\n")
    assert (capture.malformed, capture.end) == (True, None)


@given(st.binary(min_size=1, max_size=20), st.booleans())
def test_bytes_after_the_end_record_are_malformed(extra: bytes, same_chunk: bool) -> None:
    capture = capture_of()
    stream = data(b"out") + b"X" + u32(0)
    if same_chunk:
        capture.write(STDOUT, stream + extra)
    else:
        capture.write(STDOUT, stream)
        capture.write(STDOUT, extra)
    assert capture.malformed
    assert (capture.stdout, capture.end) == (b"out", (b"X", 0))
