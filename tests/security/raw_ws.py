"""Reading a server's WebSocket frames off a raw stream, for tests that drive the socket by hand
(to send what no client library would). The framing is `diminuendo.wire`'s."""

from __future__ import annotations

import asyncio

from diminuendo.wire import frame_bounds
from diminuendo.wire.frames import OPCODE


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame (unmasked): its opcode and payload. The header is read until
    `frame_bounds` finds it whole (2 to 10 bytes), then the payload it announces."""
    header = b""
    while (bounds := frame_bounds(header, 0)) is None:
        header += await reader.readexactly(1)
    _, length, first, _ = bounds
    return first & OPCODE, await reader.readexactly(length)
