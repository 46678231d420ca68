"""`FrameReader`: a server's byte stream split into frames, with a fast path for plain text.

Nearly every frame a socket of ours reads is a small, final, unmasked text frame. The reader
finds each frame's bounds from its 2-10 byte header (`frame_bounds`) and hands such a frame's
payload straight to `on_text`, with no parse beyond the header and no copy but the slice. Any
other frame (control, binary, fragment) goes whole, header included, to `on_frame`, so a full
parser fed those bytes (websockets' protocol in the runtime socket) always stops at a frame
boundary.

The reader stops at the first frame it must not accept itself — masked (a server's frames never
are), with reserved bits set (no extension is negotiated) or longer than `max_size` — and when
its owner calls `stop()` (say, once its protocol starts closing). From there on `feed` returns
the bytes it did not take, and the owner gives them, and everything after, to a full parser
that fails the connection or completes the close.
"""

from __future__ import annotations

from collections.abc import Callable

from diminuendo.wire.frames import DATA_OPCODES, FIN, FINAL_TEXT, MASK, OPCODE, RSV, frame_bounds

PayloadHandler = Callable[[bytes], None]


class FrameReader:
    """Splits bytes into frames as they arrive; keeps an incomplete frame until it is whole."""

    __slots__ = (
        "_buffer",
        "_in_message",
        "_max_size",
        "_on_frame",
        "_on_text",
        "_wanted",
        "stopped",
    )

    def __init__(
        self, on_text: PayloadHandler, on_frame: PayloadHandler, max_size: int | None = None
    ) -> None:
        self._on_text = on_text
        self._on_frame = on_frame
        self._max_size = 2**64 if max_size is None else max_size
        self._buffer = bytearray()  # the start of an incomplete frame
        self._wanted = 0  # the buffered frame is complete at this many bytes (0: unknown)
        self._in_message = False  # a fragmented message is in progress (its frames go whole)
        self.stopped = False

    def stop(self) -> None:
        """Take no more frames: `feed` returns what follows the frame being handled."""
        self.stopped = True

    def take_buffer(self) -> bytes:
        """The bytes of an incomplete frame, removed from the reader (e.g. at end of stream)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def feed(self, data: bytes) -> bytes:
        """Hand on the complete frames of what has arrived, in order. Returns b"" while the
        reader goes on; once it has stopped, the bytes it did not take (see the module doc)."""
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._wanted and not self.stopped:
                return b""
            data = self.take_buffer()
        used = self._split(data)
        if self.stopped:
            return data[used:]
        if used < len(data):
            buffer += memoryview(data)[used:]
        return b""

    def _split(self, data: bytes) -> int:
        """Handle the complete frames at the start of `data`; return how many bytes they took."""
        offset, end = 0, len(data)
        while offset < end and not self.stopped:
            bounds = frame_bounds(data, offset)
            if bounds is None:
                self._wanted = 0
                return offset
            header, length, first, second = bounds
            if second & MASK or first & RSV or length > self._max_size:
                self.stopped = True
                return offset
            stop = offset + header + length
            if stop > end:
                self._wanted = stop - offset
                return offset
            if first == FINAL_TEXT and not self._in_message:
                self._on_text(data[offset + header : stop])
            else:
                if (first & OPCODE) in DATA_OPCODES:  # a fragment starts, goes on or ends
                    self._in_message = not (first & FIN)
                self._on_frame(data[offset:stop])
            offset = stop
        return offset
