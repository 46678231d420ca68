"""Every transport error code of PROTOCOL.md §2/§12 through a real socket; the socket survives."""

from __future__ import annotations

import json
import re

import pytest
from websockets.exceptions import ConnectionClosed

from diminuendo.settings import LOCAL_STACK_SECRETS_KEY
from tests.conftest import Client, Gateway, client, free_port

LEAK = re.compile(r"Traceback|File \"|\.py\b|/usr/|/work/|site-packages")


async def assert_still_usable(c: Client) -> None:
    pong = await c.request({"type": "ping", "ts": 7})
    assert pong["type"] == "pong" and pong["ts"] == 7 and "serverTs" in pong


def assert_clean(error: dict) -> None:
    assert error["type"] == "error"
    assert not LEAK.search(json.dumps(error)), error
    assert len(error["message"]) <= 500


async def test_invalid_json(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        await c.ws.send("{not json")
        error = await c.recv()
        assert error["code"] == "INVALID_JSON"
        assert_clean(error)
        await assert_still_usable(c)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "no_such_thing", "id": "x1"}, "Unknown message type"),
        ({"id": "x2"}, "type"),
        ({"type": "join_session", "id": "x3"}, "sessionId"),
        ({"type": "join_session", "sessionId": 5, "id": "x4"}, "sessionId"),
        ({"type": "run_turn", "sessionId": "s", "text": "", "id": "x5"}, "text"),
        ({"type": "read_file", "sessionId": "s", "path": "../etc/passwd", "id": "x6"}, ".."),
        ({"type": "read_file", "sessionId": "s", "path": "/etc/passwd", "id": "x7"}, "relative"),
    ],
)
async def test_invalid_message_names_the_field(
    gateway: Gateway, frame: dict, expected: str
) -> None:
    async with client(gateway.ws_url) as c:
        await c.send(frame)
        error = await c.recv()
        assert error["code"] == "INVALID_MESSAGE"
        assert expected in error["message"]
        assert error["id"] == frame["id"], "the id is echoed even on a rejected message"
        assert_clean(error)
        await assert_still_usable(c)


async def test_non_object_and_binary_frames(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        await c.ws.send("[1, 2]")
        assert (await c.recv())["code"] == "INVALID_MESSAGE"
        await c.ws.send(b'{"type":"ping"}')
        error = await c.recv()
        assert error["code"] == "INVALID_MESSAGE" and "Binary" in error["message"]
        await assert_still_usable(c)


async def test_message_too_large_then_hard_cap(start_gateway) -> None:
    gw = start_gateway(WS_MAX_MESSAGE_BYTES="16KiB", WS_HARD_CAP_BYTES="64KiB")
    async with client(gw.ws_url) as c:
        await c.send({"type": "ping", "pad": "x" * 20_000})
        error = await c.recv()
        assert error["code"] == "MESSAGE_TOO_LARGE"
        await assert_still_usable(c)
        await c.send({"type": "ping", "pad": "x" * 100_000})
        with pytest.raises(ConnectionClosed) as closed:
            await c.recv()
        assert closed.value.rcvd.code == 1009


async def test_rate_limited_with_retry_after(start_gateway) -> None:
    gw = start_gateway(WS_RATE_LIMIT="5/10s")
    async with client(gw.ws_url) as c:
        for i in range(5):
            await c.send({"type": "ping", "id": f"p{i}"})
        for _ in range(5):
            assert (await c.recv())["type"] == "pong"
        await c.send({"type": "ping", "id": "over"})
        error = await c.recv()
        assert error["code"] == "RATE_LIMITED" and error["id"] == "over"
        assert 0 < error["retryAfterMs"] <= 10_000


async def test_not_authenticated_outside_dev_mode(start_gateway) -> None:
    gw = start_gateway(
        DEV_MODE="false",
        AUTH0_DOMAIN=f"http://127.0.0.1:{free_port()}",
        AUTH0_AUDIENCE="https://diminuendo.test",
        PODIUM_SECRETS_KEY=LOCAL_STACK_SECRETS_KEY,
    )
    async with client(gw.ws_url, handshake=False) as c:
        welcome = await c.recv()
        assert welcome["type"] == "welcome" and welcome["requiresAuth"] is True
        assert (await c.recv())["type"] == "connected"
        error = await c.request({"type": "list_sessions"})
        assert error["code"] == "NOT_AUTHENTICATED"
        pong = await c.request({"type": "ping"})
        assert pong["type"] == "pong"


async def test_session_not_found(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        for message in (
            {"type": "join_session", "sessionId": "ses_missing"},
            {"type": "get_history", "sessionId": "ses_missing"},
            {"type": "run_turn", "sessionId": "ses_missing", "text": "hi"},
        ):
            error = await c.request(message)
            assert error["code"] == "SESSION_NOT_FOUND", message
            assert error["sessionId"] == "ses_missing"
        await assert_still_usable(c)


async def test_session_busy(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        session = (await c.request({"type": "create_session", "agentType": "slow"}))["session"]
        await c.request({"type": "join_session", "sessionId": session["id"]})
        slow = json.dumps({"deltas": 50, "interval_ms": 20})
        started = await c.request({"type": "run_turn", "sessionId": session["id"], "text": slow})
        assert started["type"] == "turn_started"
        busy = await c.request({"type": "run_turn", "sessionId": session["id"], "text": "again"})
        assert busy["code"] == "SESSION_BUSY"
        await c.recv_until("turn_complete", timeout=15)
        await assert_still_usable(c)
