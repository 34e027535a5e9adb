"""Bounded capture of a container's output, fed from Docker's multiplexed attach stream.

Docker frames a non-TTY attach stream: an 8-byte header (stream byte: 1 stdout, 2 stderr; three
zero bytes; big-endian 32-bit payload length), then the payload. ``FrameDemuxer`` splits raw socket
chunks into those frames without ever buffering a whole frame; ``OutputCapture`` keeps stdout up to
its cap (going over it flags ``too_large`` and keeps nothing more) and only the tail of stderr. So
memory stays bounded by the cap plus the tail, whatever the function writes.
"""

from __future__ import annotations

STDOUT = 1
STDERR = 2
HEADER_SIZE = 8


def _skip_partial_character(data: bytearray) -> None:
    """Drop UTF-8 continuation bytes at the start of a cut tail (at most the 3 of a character)."""
    cut = 0
    while cut < min(3, len(data)) and data[cut] & 0xC0 == 0x80:
        cut += 1
    del data[:cut]


class OutputCapture:
    def __init__(self, *, stdout_limit: int, stderr_tail: int) -> None:
        self.stdout_limit = stdout_limit
        self.stderr_tail_size = stderr_tail
        self.stdout_total = 0
        self.too_large = False
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._stderr_cut = False

    def write(self, stream: int, data: bytes) -> None:
        if stream == STDOUT:
            self.stdout_total += len(data)
            if self.stdout_total > self.stdout_limit:
                if not self.too_large:
                    self.too_large = True
                    self._stdout = bytearray()  # a cut result is never returned: free it now
            else:
                self._stdout += data
        elif stream == STDERR:
            self._stderr += data
            # Trim lazily (at twice the tail) so a chatty stderr costs amortised O(1) per byte.
            if len(self._stderr) > 2 * self.stderr_tail_size:
                del self._stderr[: len(self._stderr) - self.stderr_tail_size]
                self._stderr_cut = True

    @property
    def finished(self) -> bool:
        """Whether reading on is pointless: stdout went over its cap."""
        return self.too_large

    @property
    def stdout(self) -> bytes:
        return bytes(self._stdout)

    @property
    def stderr_tail(self) -> bytes:
        size = self.stderr_tail_size
        if len(self._stderr) <= size:
            tail = bytearray(self._stderr)
            cut = self._stderr_cut
        else:
            tail = self._stderr[len(self._stderr) - size :] if size else bytearray()
            cut = True
        if cut:
            _skip_partial_character(tail)
        return bytes(tail)


class FrameDemuxer:
    """Feeds the payloads of a multiplexed attach stream into an ``OutputCapture``."""

    def __init__(self, capture: OutputCapture) -> None:
        self.capture = capture
        self._header = bytearray()
        self._stream = 0
        self._remaining = 0

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        position = 0
        while position < len(view):
            if self._remaining == 0:
                needed = HEADER_SIZE - len(self._header)
                self._header += view[position : position + needed]
                position += needed
                if len(self._header) == HEADER_SIZE:
                    self._stream = self._header[0]
                    self._remaining = int.from_bytes(self._header[4:8], "big")
                    self._header.clear()
                continue
            take = min(self._remaining, len(view) - position)
            self.capture.write(self._stream, bytes(view[position : position + take]))
            position += take
            self._remaining -= take
