"""`RuntimeConnection` over its Sans-I/O reader (upstreams/runtime_socket.py), through real
sockets on 127.0.0.1: against the Podium stand-in, and against a scripted peer (ws_peer.py) for
what Podium never does on its own (fragments, pings, going deaf); then `ClientSocket` alone against
raw frames, for its fast path (tests/unit/test_runtime_frames.py has the byte-level cases)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from websockets.frames import CONT, PING, TEXT, CloseCode

from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.http import UpstreamHttp
from diminuendo.upstreams.podium import PodiumClient
from diminuendo.upstreams.podium_runtime import RuntimeConnection
from diminuendo.upstreams.runtime_socket import ClientSocket, open_socket
from tests.local.conftest import API_KEY, SECRETS_KEY, Podium
from tests.local.ws_peer import Peer, frame

pytestmark = pytest.mark.timeout(20)


class Recorder:
    """The callbacks a session gives its runtime, recording what they saw."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.attached: list[tuple[str | None, bool]] = []
        self.lost: list[str] = []
        self.opened = False  # set by the test right after `open()` returns
        self.early: list[str] = []  # callbacks that ran before `open()` returned
        self._changed = asyncio.Event()

    def on_frame(self, frame: dict[str, Any]) -> None:
        self._seen("frame")
        self.frames.append(frame)

    def on_attached(self, running: str | None, reconnected: bool) -> None:
        self._seen("attached")
        self.attached.append((running, reconnected))

    async def on_lost(self, reason: str) -> None:
        self._seen("lost")
        self.lost.append(reason)

    def _seen(self, what: str) -> None:
        if not self.opened:
            self.early.append(what)
        self._changed.set()

    def names(self) -> list[str]:
        return [frame["event_type"] for frame in self.frames]

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def until_event(self, name: str, timeout: float = 5.0) -> None:
        await self.until(lambda: name in self.names(), timeout)


def update(event_type: str, **content: Any) -> bytes:
    return msgspec.json.encode({"type": "update", "event_type": event_type, "content": content})


def attached(running_turn_id: str | None) -> bytes:
    return update("runtime.attached", instance_id="inst_peer", running_turn_id=running_turn_id)


class StubPodium:
    """Stands in for `PodiumClient.instance_exists`, the only REST call a runtime makes, and its
    `greets` (whether `open` waits for a hello: most scripted peers send none)."""

    def __init__(self, exists: bool = True, delay_s: float = 0.0, greets: bool = False) -> None:
        self.greets = greets
        self.exists = exists
        self.delay_s = delay_s
        self.asked = 0

    async def instance_exists(self, instance_id: str) -> bool:
        self.asked += 1
        await asyncio.sleep(self.delay_s)
        return self.exists


async def open_runtime(
    recorder: Recorder,
    url: str,
    podium: Any,
    *,
    api_key: str = API_KEY,
    reconnect_window_s: float = 5.0,
    **options: Any,
) -> RuntimeConnection:
    runtime = RuntimeConnection(
        url,
        api_key,
        podium=podium,
        instance_id="inst_peer",
        on_frame=recorder.on_frame,
        on_lost=recorder.on_lost,
        on_attached=recorder.on_attached,
        reconnect_window_s=reconnect_window_s,
        **options,
    )
    await runtime.open()
    recorder.opened = True
    return runtime


@pytest.fixture
async def podium_client(podium: Podium) -> AsyncIterator[PodiumClient]:
    http = UpstreamHttp("podium", podium.url, API_KEY)
    try:
        yield PodiumClient(http, API_KEY, secrets_key=SECRETS_KEY, instance_secrets={})
    finally:
        await http.aclose()


async def open_podium_runtime(
    client: PodiumClient, instance_id: str, recorder: Recorder
) -> RuntimeConnection:
    runtime = client.runtime(
        instance_id,
        on_frame=recorder.on_frame,
        on_lost=recorder.on_lost,
        on_attached=recorder.on_attached,
        reconnect_window_s=5.0,
    )
    await runtime.open()
    recorder.opened = True
    return runtime


def event_ids(recorder: Recorder) -> list[int]:
    return [frame["content"]["event_id"] for frame in recorder.frames]


def streamed(recorder: Recorder) -> str:
    return "".join(
        f["content"]["text"] for f in recorder.frames if f["event_type"] == "stream_update"
    )


# ----- against the Podium stand-in ------------------------------------------------------------


async def test_a_turn_streams_in_order(podium: Podium, podium_client: PodiumClient) -> None:
    instance_id = await podium.create_instance("echo", {"delay_ms": 1})
    recorder = Recorder()
    runtime = await open_podium_runtime(podium_client, instance_id, recorder)
    try:
        text = "one two three four five six"
        await runtime.send(
            {
                "type": "process_message",
                "content": {"text": text, "turn_id": "trn_1", "messages": []},
            }
        )
        await recorder.until_event("stream_end")
    finally:
        await runtime.close()
    assert recorder.attached == [(None, False)]
    assert recorder.early == ["attached"], "open returns once the hello is handled"
    assert recorder.names()[0] == "stream_start"
    assert set(recorder.names()[1:-1]) == {"stream_update"}
    assert event_ids(recorder) == list(range(1, len(recorder.frames) + 1))
    assert streamed(recorder) == recorder.frames[-1]["content"]["final_text"] == text
    assert recorder.lost == []


async def test_refused_upgrades_are_upstream_unavailable(
    podium: Podium, podium_client: PodiumClient
) -> None:
    instance_id = await podium.create_instance("echo")
    wrong_key = PodiumClient(
        podium_client.http, "wrong-key", secrets_key=SECRETS_KEY, instance_secrets={}
    )
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = f"ws://127.0.0.1:{unused.getsockname()[1]}/agent/{instance_id}"
    attempts: list[Callable[[], Any]] = [
        lambda: open_podium_runtime(podium_client, "inst_missing", Recorder()),  # 404
        lambda: open_podium_runtime(wrong_key, instance_id, Recorder()),  # 401
        lambda: open_runtime(Recorder(), closed_port, podium_client),  # connection refused
    ]
    for attempt in attempts:
        started = time.monotonic()
        with pytest.raises(GatewayError) as refused:
            await attempt()
        assert refused.value.code == ErrorCode.UPSTREAM_UNAVAILABLE
        assert refused.value.message == "Podium is unavailable"
        assert time.monotonic() - started < 2

    await podium.http.post(f"{podium.url}/_local/fault", json={"mode": "unavailable"})
    with pytest.raises(GatewayError) as unavailable:  # 503
        await open_podium_runtime(podium_client, instance_id, Recorder())
    assert unavailable.value.code == ErrorCode.UPSTREAM_UNAVAILABLE


async def test_a_dropped_socket_reconnects_and_loses_nothing(
    podium: Podium, podium_client: PodiumClient
) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 40, "interval_ms": 5})
    recorder = Recorder()
    runtime = await open_podium_runtime(podium_client, instance_id, recorder)
    try:
        await runtime.send(
            {"type": "process_message", "content": {"text": "go", "turn_id": "trn_1"}}
        )
        await recorder.until(lambda: len(recorder.frames) >= 5)
        dropped = await podium.http.post(f"{podium.url}/_local/drop-runtime-sockets")
        assert dropped.json() == {"dropped": 1}
        await recorder.until_event("stream_end")
    finally:
        await runtime.close()
    assert recorder.attached == [(None, False), ("trn_1", True)]
    assert event_ids(recorder) == list(range(1, len(recorder.frames) + 1))
    assert streamed(recorder) == "".join(f"d{i} " for i in range(1, 41))
    assert recorder.lost == []


async def test_a_deleted_instance_is_reported_lost(
    podium: Podium, podium_client: PodiumClient
) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 1000, "interval_ms": 5})
    recorder = Recorder()
    runtime = await open_podium_runtime(podium_client, instance_id, recorder)
    await runtime.send({"type": "process_message", "content": {"text": "go", "turn_id": "trn_1"}})
    await recorder.until_event("stream_update")
    deleted = await podium.http.delete(f"{podium.url}/api/v1/instances/{instance_id}")
    assert deleted.status_code == 204
    await recorder.until(lambda: bool(recorder.lost))
    assert recorder.lost == ["The agent instance is gone"]
    started = time.monotonic()
    with pytest.raises(GatewayError) as failed:
        await runtime.send({"type": "steer", "content": {"text": "anyone?"}})
    assert failed.value.code == ErrorCode.UPSTREAM_UNAVAILABLE
    assert time.monotonic() - started < 1, "a lost runtime fails sends at once"
    await runtime.close()


async def test_close_stops_the_callbacks(podium: Podium, podium_client: PodiumClient) -> None:
    instance_id = await podium.create_instance("slow", {"deltas": 1000, "interval_ms": 5})
    recorder = Recorder()
    runtime = await open_podium_runtime(podium_client, instance_id, recorder)
    await runtime.send({"type": "process_message", "content": {"text": "go", "turn_id": "trn_1"}})
    await recorder.until(lambda: len(recorder.frames) >= 3)
    async with asyncio.timeout(2):
        await runtime.close()
    seen = len(recorder.frames)
    await asyncio.sleep(0.2)  # the turn goes on in Podium, unobserved
    assert len(recorder.frames) == seen
    assert recorder.lost == []
    with pytest.raises(GatewayError):
        await runtime.send({"type": "steer", "content": {"text": "late"}})


# ----- against a scripted peer ----------------------------------------------------------------


async def test_frames_in_the_handshake_packet_wait_until_open_returns() -> None:
    """`open` returns once the hello is handled (the session then shows its state); the frames
    after it, in the same packet, reach `on_frame` only after that, in order."""
    greeting = [attached("trn_0"), update("stream_update", text="a"), update("usage")]
    async with Peer(greeting=lambda index: greeting) as peer:
        recorder = Recorder()
        runtime = await open_runtime(recorder, peer.url, StubPodium(greets=True))
        try:
            await recorder.until(lambda: len(recorder.frames) == 2)
        finally:
            await runtime.close()
    assert recorder.early == ["attached"], "no frame before the opener has resumed"
    assert recorder.attached == [("trn_0", False)]
    assert recorder.names() == ["stream_update", "usage"]
    assert peer.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert "Sec-WebSocket-Extensions" not in peer.requests[0].headers, "no compression"


async def test_a_fragmented_message_is_assembled() -> None:
    async with Peer() as peer:
        recorder = Recorder()
        runtime = await open_runtime(recorder, peer.url, StubPodium())
        try:
            server = await peer.connection(0)
            whole = update("stream_update", text="héllo, fragmented wörld")
            server.send_fragments([whole[:7], whole[7:30], whole[30:31], whole[31:]])
            server.send_text(update("stream_end", final_text="done"))
            await recorder.until(lambda: len(recorder.frames) == 2)
        finally:
            await runtime.close()
    assert recorder.frames[0] == json.loads(whole)
    assert recorder.names() == ["stream_update", "stream_end"]


async def test_bad_frames_are_dropped_and_the_socket_stays_up() -> None:
    async with Peer() as peer:
        recorder = Recorder()
        runtime = await open_runtime(recorder, peer.url, StubPodium())
        try:
            server = await peer.connection(0)
            for bad in (b"not json", b"[1, 2]", b'{"a": "\xff"}'):
                server.send_text(bad)
            server.send_text(update("usage"))
            await recorder.until(lambda: len(recorder.frames) == 1)
        finally:
            await runtime.close()
    assert recorder.names() == ["usage"]
    assert recorder.lost == []


async def test_a_server_ping_is_answered() -> None:
    async with Peer() as peer:
        runtime = await open_runtime(Recorder(), peer.url, StubPodium())
        try:
            server = await peer.connection(0)
            server.ping(b"are you there")
            await server.until(lambda: server.pongs == [b"are you there"])
        finally:
            await runtime.close()


async def test_control_frames_go_out_as_text_and_close_is_clean() -> None:
    async with Peer() as peer:
        runtime = await open_runtime(Recorder(), peer.url, StubPodium())
        server = await peer.connection(0)
        frame = {"type": "steer", "content": {"text": "ça va"}}
        await runtime.send(frame)
        await server.until(lambda: len(server.texts) == 1)
        async with asyncio.timeout(2):
            await runtime.close()
        assert server.close_code == 1000
        assert server.lost.is_set()
    assert json.loads(server.texts[0]) == frame


async def test_a_peer_that_stops_answering_pings_is_detected() -> None:
    async with Peer(deaf=True) as peer:
        recorder = Recorder()
        stub = StubPodium(exists=False)
        started = time.monotonic()
        runtime = await open_runtime(
            recorder, peer.url, stub, ping_interval_s=0.2, ping_timeout_s=0.3
        )
        await recorder.until(lambda: bool(recorder.lost), timeout=3)
        elapsed = time.monotonic() - started
        await runtime.close()
    assert recorder.lost == ["The agent instance is gone"]
    assert stub.asked == 1
    assert 0.4 < elapsed < 2.5, elapsed


async def test_a_peer_that_answers_pings_stays_up() -> None:
    async with Peer() as peer:
        recorder = Recorder()
        runtime = await open_runtime(
            recorder, peer.url, StubPodium(exists=False), ping_interval_s=0.2, ping_timeout_s=0.3
        )
        server = await peer.connection(0)
        await asyncio.sleep(1.2)
        assert server.pings >= 4, "keepalive pings were sent"
        assert not server.lost.is_set()
        assert len(peer.connections) == 1
        await runtime.close()
    assert recorder.lost == []


async def test_a_server_close_reconnects_then_gives_up_when_the_instance_is_gone() -> None:
    def greeting(index: int) -> list[bytes]:
        return [attached(None if index == 0 else "trn_1")]

    async with Peer(greeting=greeting) as peer:
        recorder = Recorder()
        stub = StubPodium(exists=True)
        runtime = await open_runtime(recorder, peer.url, stub)
        first = await peer.connection(0)
        first.close(4000, "replaced")
        second = await peer.connection(1)
        await recorder.until(lambda: len(recorder.attached) == 2)
        assert first.lost.is_set()
        assert recorder.attached == [(None, False), ("trn_1", True)]
        assert stub.asked == 1

        await runtime.send({"type": "interrupt", "content": {"turn_id": "trn_1"}})
        await second.until(lambda: len(second.texts) == 1)
        assert first.texts == []

        stub.exists = False
        second.close(1001, "going away")
        await recorder.until(lambda: bool(recorder.lost))
        await runtime.close()
    assert recorder.lost == ["The agent instance is gone"]
    assert len(peer.connections) == 2


async def test_send_waits_through_a_reconnect() -> None:
    async with Peer() as peer:
        recorder = Recorder()
        stub = StubPodium(exists=True, delay_s=0.3)
        runtime = await open_runtime(recorder, peer.url, stub)
        (await peer.connection(0)).drop()
        await asyncio.sleep(0.05)  # the drop is seen; the reconnect is under way
        started = time.monotonic()
        await runtime.send({"type": "steer", "content": {"text": "after the drop"}})
        waited = time.monotonic() - started
        second = await peer.connection(1)
        await second.until(lambda: len(second.texts) == 1)
        await runtime.close()
    assert 0.2 < waited < 3, waited
    assert json.loads(second.texts[0])["content"]["text"] == "after the drop"
    assert recorder.lost == []


async def test_a_reconnect_that_never_succeeds_is_lost_after_the_window() -> None:
    async with Peer() as peer:
        recorder = Recorder()
        runtime = await open_runtime(recorder, peer.url, StubPodium(), reconnect_window_s=0.8)
        peer.refuse = 503
        (await peer.connection(0)).drop()
        await recorder.until(lambda: bool(recorder.lost), timeout=3)
        await runtime.close()
    assert recorder.lost == ["The agent runtime could not be reached"]
    assert len(peer.requests) >= 2, "it retried"


async def _uvloop_scenario() -> Recorder:
    async with asyncio.timeout(8):  # bounded inside the thread's own loop, so the thread ends
        return await _uvloop_steps()


async def _uvloop_steps() -> Recorder:
    async with Peer(greeting=lambda index: [attached(None), update("usage", index=index)]) as peer:
        recorder = Recorder()
        greeted = StubPodium(greets=True)
        runtime = await open_runtime(
            recorder, peer.url, greeted, ping_interval_s=0.1, ping_timeout_s=0.5
        )
        first = await peer.connection(0)
        first.send_fragments([b'{"event_type": "stream', b'_update", "content": {}}'])
        first.ping(b"uv")
        await first.until(lambda: first.pongs == [b"uv"] and first.pings >= 2)
        await runtime.send({"type": "steer", "content": {"text": "on uvloop"}})
        await first.until(lambda: len(first.texts) == 1)
        first.close(4000)
        await peer.connection(1)
        await recorder.until(lambda: len(recorder.attached) == 2)
        await runtime.close()
    return recorder


async def test_the_same_on_uvloop() -> None:
    """The gateway runs on uvloop (Sanic's default), whose transports differ from asyncio's."""
    import uvloop

    recorder = await asyncio.to_thread(uvloop.run, _uvloop_scenario())
    assert recorder.early == ["attached"]  # the hello within `open`, every frame after it
    assert recorder.attached == [(None, False), (None, True)]
    assert recorder.names() == ["usage", "stream_update", "usage"]
    assert [f["content"].get("index") for f in recorder.frames] == [0, None, 1]
    assert recorder.lost == []


# ----- ClientSocket's fast path for plain text frames, against raw frames -----------------------


class Inbox:
    """The callbacks of one `ClientSocket`, recorded."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.closed: list[ClientSocket] = []
        self._changed = asyncio.Event()

    def on_message(self, data: bytes) -> None:
        self.messages.append(data)
        self._changed.set()

    def on_closed(self, socket: ClientSocket) -> None:
        self.closed.append(socket)
        self._changed.set()

    async def until(self, check: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()


async def open_raw(peer: Peer, inbox: Inbox, max_size: int = 1000) -> ClientSocket:
    return await open_socket(
        peer.url, {}, on_message=inbox.on_message, on_closed=inbox.on_closed, max_size=max_size
    )


async def many_frames_in_one_write() -> None:
    messages = [b"m%d" % index for index in range(500)] + [b"x" * 300, b""]
    async with Peer() as peer:
        inbox = Inbox()
        socket = await open_raw(peer, inbox)
        server = await peer.connection(0)
        server.write(b"".join(frame(TEXT, message) for message in messages))
        await inbox.until(lambda: len(inbox.messages) == len(messages))
        assert socket.is_open
        socket.close()
        await socket.wait_closed()
    assert inbox.messages == messages


async def a_frame_split_byte_by_byte() -> None:
    messages = [b"y" * 200, b"short", b"z" * 3]
    async with Peer() as peer:
        inbox = Inbox()
        socket = await open_raw(peer, inbox)
        server = await peer.connection(0)
        await server.trickle(b"".join(frame(TEXT, message) for message in messages))
        await inbox.until(lambda: len(inbox.messages) == len(messages))
        socket.close()
    assert inbox.messages == messages


async def a_ping_between_text_frames() -> None:
    wire = [frame(TEXT, b"a"), frame(PING, b"p1"), frame(TEXT, b"b"), frame(PING, b"p2")]
    async with Peer() as peer:
        inbox = Inbox()
        socket = await open_raw(peer, inbox)
        server = await peer.connection(0)
        server.write(b"".join([*wire, frame(TEXT, b"c")]))
        await server.until(lambda: len(server.pongs) == 2)
        await inbox.until(lambda: len(inbox.messages) == 3)
        socket.close()
    assert server.pongs == [b"p1", b"p2"]
    assert inbox.messages == [b"a", b"b", b"c"]


async def a_fragmented_message_with_a_ping_inside() -> None:
    wire = [
        frame(TEXT, b"before"),
        frame(TEXT, b"frag", fin=False),
        frame(CONT, b"men", fin=False),
        frame(PING, b"inside"),
        frame(CONT, b"ted", fin=True),
        frame(TEXT, b"after"),
    ]
    async with Peer() as peer:
        inbox = Inbox()
        socket = await open_raw(peer, inbox)
        server = await peer.connection(0)
        server.write(b"".join(wire))
        await inbox.until(lambda: len(inbox.messages) == 3)
        await server.until(lambda: server.pongs == [b"inside"])
        await server.trickle(b"".join(wire))  # again, a byte at a time
        await inbox.until(lambda: len(inbox.messages) == 6)
        await server.until(lambda: len(server.pongs) == 2)
        assert socket.is_open
        socket.close()
    assert inbox.messages == [b"before", b"fragmented", b"after"] * 2


async def a_close_frame_closes() -> None:
    async with Peer() as peer:
        inbox = Inbox()
        socket = await open_raw(peer, inbox)
        server = await peer.connection(0)
        server.write(frame(TEXT, b"last words"))
        server.close(4000, "replaced")
        await inbox.until(lambda: bool(inbox.closed))
        assert server.close_code == 4000, "the client echoed the close"
    assert inbox.messages == [b"last words"]
    assert inbox.closed == [socket]
    assert socket.close_code == 4000


async def fails_the_connection(bad: bytes, code: int) -> None:
    """`bad` (between two good frames) makes the client close with `code`; nothing after it."""
    async with Peer() as peer:
        inbox = Inbox()
        socket = await open_raw(peer, inbox, max_size=1000)
        server = await peer.connection(0)
        server.write(frame(TEXT, b"before") + bad + frame(TEXT, b"after"))
        await inbox.until(lambda: bool(inbox.closed))
        assert server.close_code == code
        assert not socket.is_open
    assert inbox.messages == [b"before"]


async def an_oversized_frame_fails_the_connection() -> None:
    await fails_the_connection(frame(TEXT, b"o" * 1001), CloseCode.MESSAGE_TOO_BIG)
    # Failed on the header alone: the client does not wait for 2**40 bytes.
    await fails_the_connection(b"\x81\x7f" + (2**40).to_bytes(8, "big"), 1009)


async def a_masked_server_frame_fails_the_connection() -> None:
    await fails_the_connection(frame(TEXT, b"masked", mask=True), CloseCode.PROTOCOL_ERROR)


FAST_PATH = [
    many_frames_in_one_write,
    a_frame_split_byte_by_byte,
    a_ping_between_text_frames,
    a_fragmented_message_with_a_ping_inside,
    a_close_frame_closes,
    an_oversized_frame_fails_the_connection,
    a_masked_server_frame_fails_the_connection,
]


@pytest.mark.parametrize("scenario", FAST_PATH, ids=lambda scenario: scenario.__name__)
async def test_raw_frames(scenario: Callable[[], Awaitable[None]]) -> None:
    await scenario()


async def _bounded(scenario: Callable[[], Awaitable[None]]) -> None:
    async with asyncio.timeout(8):  # inside the thread's own loop, so the thread ends
        await scenario()


@pytest.mark.parametrize("scenario", FAST_PATH, ids=lambda scenario: scenario.__name__)
async def test_raw_frames_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    import uvloop

    await asyncio.to_thread(uvloop.run, _bounded(scenario))
