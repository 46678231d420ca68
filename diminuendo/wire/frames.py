"""Frame headers, client frames and frame bounds (RFC 6455 §5.2): the framing written by hand.

websockets builds and reads the same bytes (`Frame.serialize`, `Frame.parse`), and stays the
oracle the tests compare against, but both are general (extensions, validation, a generator per
parsed frame): `serialize` measured 10 µs a frame where the gateway's writer spends 0.1 µs on a
header, and `parse` was 20 % of the gateway's CPU at 20,000 inbound frames/s. The header is all
a plain frame needs, so the hot paths build and read just that and hand the payload on uncopied.
Masking (client frames) is websockets' own `apply_mask`, in C where its speedups are built.
"""

from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets build without its C speedups
    from websockets.utils import apply_mask

# The first header byte: FIN, RSV1-3, opcode. The second: MASK, payload length.
FIN = 0x80
RSV = 0x70
OPCODE = 0x0F
MASK = 0x80
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (CONT, TEXT, BINARY)  # the frames of a message, as opposed to control frames
FINAL_TEXT = FIN | TEXT  # a whole text message in one frame: nearly every frame there is

_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack
_SHORT_TEXT = tuple(bytes((FINAL_TEXT, length)) for length in range(126))


def frame_header(length: int, first: int = FINAL_TEXT) -> bytes:
    """The unmasked header of one frame with `length` payload bytes: `first` is its first byte
    (FIN and opcode; by default a final text frame, which is what the gateway writes). The
    two-byte headers of short text frames are built once: the gateway's whole write of a 60-byte
    frame went from 470 to 355 ns with the lookup instead of building the bytes."""
    if length < 126:
        return _SHORT_TEXT[length] if first == FINAL_TEXT else bytes((first, length))
    if length < 65536:
        return _MEDIUM(first, 126, length)
    return _LONG(first, 127, length)


PING_FRAME = frame_header(0, FIN | PING)  # a server's ping with an empty payload


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One frame as a client must send it: masked with a fresh random key (§5.3); final unless
    `fin` is False (a fragment that more frames of the message follow)."""
    header = frame_header(len(payload), (FIN if fin else 0) | opcode)
    key = os.urandom(4)
    masked = bytes((header[0], header[1] | MASK))
    return masked + header[2:] + key + apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the status code, then the reason in UTF-8 (§5.5.1)."""
    return code.to_bytes(2, "big") + reason.encode()


def frame_bounds(data: bytes | bytearray, offset: int) -> tuple[int, int, int, int] | None:
    """The header of the frame at `data[offset:]`: `(header_length, payload_length, first_byte,
    second_byte)`, or None while the header is incomplete.

    `header_length` includes the 4-byte masking key when the MASK bit is set. The payload may
    still be incomplete: the frame ends at `offset + header_length + payload_length`.
    """
    available = len(data) - offset
    if available < 2:
        return None
    first, second = data[offset], data[offset + 1]
    length = second & 0x7F
    header = 2
    if length == 126:
        header = 4
        if available < header:
            return None
        length = (data[offset + 2] << 8) | data[offset + 3]
    elif length == 127:
        header = 10
        if available < header:
            return None
        length = int.from_bytes(data[offset + 2 : offset + 10], "big")
    if second & MASK:
        header += 4
        if available < header:
            return None
    return header, length, first, second
