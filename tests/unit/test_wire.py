"""The frame codec (diminuendo.wire) against websockets' own framing as the oracle: headers at
the length boundaries, masked client frames, frame bounds in a buffer, and `FrameReader` fed
whole, byte by byte and in random cuts."""

from __future__ import annotations

import random
from typing import Any

import pytest
from websockets.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, Close, Frame, Opcode
from websockets.streams import StreamReader

from diminuendo.wire import FrameReader, close_payload, frame_bounds, frame_header, masked_frame
from diminuendo.wire.frames import FIN

BOUNDARY_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70_000]
OPCODES = [Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG, Opcode.CLOSE]


def parse(wire: bytes, *, mask: bool) -> Frame:
    """websockets' parser, as a server (`mask=True`) or a client reads."""
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_a_text_header_matches_websockets_serialization(length: int) -> None:
    payload = b"x" * length
    assert frame_header(length) + payload == Frame(Opcode.TEXT, payload).serialize(mask=False)


HEADER_CASES = [(op, fin) for op in OPCODES for fin in (True, False) if fin or op.value < 8]


@pytest.mark.parametrize(("opcode", "fin"), HEADER_CASES)
def test_any_header_matches_websockets_serialization(opcode: Opcode, fin: bool) -> None:
    payload = b"y" * (2 if opcode.value >= 8 else 300)
    first = (FIN if fin else 0) | opcode.value
    assert frame_header(len(payload), first) + payload == Frame(opcode, payload, fin=fin).serialize(
        mask=False
    )


@pytest.mark.parametrize("payload", ["", "é☃" * 50, "a" * 300, '{"type":"x"}' * 6000])
def test_a_client_parses_a_text_frame_back(payload: str) -> None:
    data = payload.encode()
    frame = parse(frame_header(len(data)) + data, mask=False)
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data.decode() == payload


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_a_masked_frame_is_what_a_server_reads(length: int, opcode: Opcode) -> None:
    payload = bytes(random.Random(length).randrange(256) for _ in range(length))
    wire = masked_frame(opcode.value, payload)
    assert wire[1] & 0x80, "the MASK bit is set"
    assert len(wire) == len(Frame(opcode, payload).serialize(mask=True))
    frame = parse(wire, mask=True)
    assert frame.opcode is opcode and frame.fin and frame.data == payload
    if length >= 4:
        assert payload not in wire  # masked, not sent as is


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.CONT])
def test_a_masked_fragment_is_not_final(opcode: Opcode) -> None:
    frame = parse(masked_frame(opcode.value, b"part", fin=False), mask=True)
    assert frame.opcode is opcode and not frame.fin and frame.data == b"part"


def test_each_masked_frame_has_its_own_key() -> None:
    keys = {masked_frame(Opcode.TEXT.value, b"same")[2:6] for _ in range(20)}
    assert len(keys) > 1


def test_a_close_payload_is_what_websockets_reads() -> None:
    wire = masked_frame(Opcode.CLOSE.value, close_payload(1008, "policy"))
    assert Close.parse(parse(wire, mask=True).data) == Close(1008, "policy")


# ----- frame_bounds -----------------------------------------------------------------------------

BOUNDS_CASES = [
    (opcode, fin, length)
    for length in (0, 125, 126, 65535, 65536)
    for opcode, fin in ((TEXT, True), (TEXT, False), (CONT, False), (CONT, True), (BINARY, True))
] + [(PING, True, 0), (PING, True, 125), (PONG, True, 4), (CLOSE, True, 2)]


@pytest.mark.parametrize(("opcode", "fin", "length"), BOUNDS_CASES)
def test_frame_bounds_reads_what_websockets_writes(opcode: Any, fin: bool, length: int) -> None:
    wire = Frame(opcode, b"x" * length, fin=fin).serialize(mask=False)
    header = len(wire) - length
    assert header == (2 if length < 126 else 4 if length < 65536 else 10)
    assert frame_bounds(wire, 0) == (header, length, wire[0], wire[1])
    assert wire[0] == (0x80 if fin else 0) | opcode
    # At an offset, in a bytearray, and with only the header (the payload still to come).
    assert frame_bounds(bytearray(b"junk" + wire), 4) == (header, length, wire[0], wire[1])
    assert frame_bounds(wire[:header], 0) == (header, length, wire[0], wire[1])
    for cut in range(header):
        assert frame_bounds(wire[:cut], 0) is None, cut
        assert frame_bounds(b"junk" + wire[:cut], 4) is None, cut


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
def test_frame_bounds_counts_a_masking_key_in_the_header(length: int) -> None:
    wire = Frame(TEXT, b"x" * length).serialize(mask=True)
    header = len(wire) - length
    assert header == (6 if length < 126 else 8 if length < 65536 else 14)
    assert frame_bounds(wire, 0) == (header, length, wire[0], wire[1])
    assert wire[1] & 0x80
    assert frame_bounds(wire[: header - 1], 0) is None


def test_frame_bounds_reads_a_64_bit_length() -> None:
    wire = bytes([0x81, 127]) + (2**40 + 3).to_bytes(8, "big")
    assert frame_bounds(wire, 0) == (10, 2**40 + 3, 0x81, 127)


# ----- FrameReader --------------------------------------------------------------------------------


class Collected:
    def __init__(self, max_size: int | None = None) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.reader = FrameReader(self.text, self.frame, max_size)

    def text(self, payload: bytes) -> None:
        self.events.append(("text", bytes(payload)))

    def frame(self, frame: bytes) -> None:
        self.events.append(("frame", bytes(frame)))


def server_stream() -> tuple[bytes, list[tuple[str, bytes]]]:
    """A server's frames at every header size, with a fragmented message and control frames
    between them, and what the reader must hand on for them."""
    frames = [
        Frame(Opcode.TEXT, b"a" * 125),
        Frame(Opcode.PING, b"p"),
        Frame(Opcode.TEXT, b"b" * 126),
        Frame(Opcode.TEXT, b"c1", fin=False),
        Frame(Opcode.PING, b""),
        Frame(Opcode.CONT, b"c2", fin=True),
        Frame(Opcode.TEXT, b"d" * 65535),
        Frame(Opcode.BINARY, b"\x00\x01"),
        Frame(Opcode.TEXT, b"e" * 65536),
    ]
    wires = [frame.serialize(mask=False) for frame in frames]
    expected = [
        ("frame", wire) if not (frame.opcode is Opcode.TEXT and frame.fin) else ("text", frame.data)
        for frame, wire in zip(frames, wires, strict=True)
    ]
    return b"".join(wires), expected


@pytest.mark.parametrize("seed", range(8))
def test_the_reader_hands_on_the_same_frames_however_the_bytes_are_cut(seed: int) -> None:
    stream, expected = server_stream()
    rng = random.Random(seed)
    collected = Collected()
    offset = 0
    while offset < len(stream):
        step = rng.choice([1, 2, 3, 7, 130, 4096, 70_000])
        assert collected.reader.feed(stream[offset : offset + step]) == b""
        offset += step
    assert collected.events == expected
    assert not collected.reader.stopped and collected.reader.take_buffer() == b""


def test_the_reader_keeps_an_incomplete_frame_until_it_is_whole() -> None:
    wire = Frame(Opcode.TEXT, b"z" * 300).serialize(mask=False)
    collected = Collected()
    for index in range(len(wire) - 1):
        collected.reader.feed(wire[index : index + 1])
    assert collected.events == []
    assert collected.reader.take_buffer() == wire[:-1]


@pytest.mark.parametrize(
    "bad",
    [
        Frame(Opcode.TEXT, b"masked").serialize(mask=True),
        b"\xc1\x03rsv",  # RSV1 set: websockets refuses to serialize it
        Frame(Opcode.TEXT, b"x" * 11).serialize(mask=False),
    ],
    ids=["masked", "reserved-bit", "too-big"],
)
def test_the_reader_stops_at_a_frame_it_must_not_accept(bad: bytes) -> None:
    good = Frame(Opcode.TEXT, b"ok").serialize(mask=False)
    after = Frame(Opcode.TEXT, b"later").serialize(mask=False)
    collected = Collected(max_size=10)
    rest = collected.reader.feed(good + bad + after)
    assert collected.events == [("text", b"ok")]
    assert collected.reader.stopped and rest == bad + after


def test_the_reader_stops_when_its_owner_says_so() -> None:
    first, second = (Frame(Opcode.TEXT, text).serialize(mask=False) for text in (b"1", b"2"))
    collected = Collected()
    collected.reader._on_text = lambda payload: collected.reader.stop()  # e.g. a close started
    assert collected.reader.feed(first + second) == second
    partial = Collected()
    partial.reader.feed(second[:1])
    partial.reader.stop()
    assert partial.reader.feed(second[1:]) == second  # a buffered partial frame is not lost
