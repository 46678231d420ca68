"""The hand-built text frame header (diminuendo.sanic_ws) against `websockets`' own framing."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from diminuendo.sanic_ws import text_frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_header_matches_websockets_serialization(length: int) -> None:
    payload = b"x" * length
    assert text_frame_header(length) + payload == Frame(Opcode.TEXT, payload).serialize(mask=False)


@pytest.mark.parametrize("payload", ["", "é☃" * 50, "a" * 300, '{"type":"x"}' * 6000])
def test_a_client_parses_it_back(payload: str) -> None:
    data = payload.encode()
    reader = StreamReader()
    reader.feed_data(text_frame_header(len(data)) + data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data.decode() == payload
