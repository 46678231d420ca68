"""Graceful drain (OPERATIONS.md §7): SIGTERM mid-turn loses nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import client
from tests.integration.test_sessions import assistant_texts, join_ready, new_session


async def test_sigterm_mid_turn_drains_and_the_turn_survives_in_podium(start_gateway) -> None:
    first = start_gateway(DRAIN_DELAY="1", GRACEFUL_SHUTDOWN_TIMEOUT="5")
    deltas = 120
    async with client(first.ws_url) as c, httpx.AsyncClient() as http:
        session_id = await new_session(c, "slow")
        await join_ready(c, session_id)
        text = json.dumps({"deltas": deltas, "interval_ms": 20})
        await c.request({"type": "run_turn", "sessionId": session_id, "text": text})
        await c.recv_until("text_delta")

        started = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        health = None
        for _ in range(40):
            try:
                health = await http.get(f"{first.url}/health", timeout=1)
                if health.status_code == 503:
                    break
            except httpx.HTTPError:
                break
            await asyncio.sleep(0.025)
        assert health is not None and health.status_code == 503
        assert health.json()["status"] == "draining"
        refused = await http.get(
            first.ws_url.replace("ws:", "http:"),
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "DRAINING"
        other = await c.request({"type": "run_turn", "sessionId": session_id, "text": "more"})
        assert other["code"] in ("DRAINING", "SESSION_BUSY")

        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await c.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
    assert first.proc.wait(10) == 0
    assert time.monotonic() - started < 8

    second = start_gateway()
    expected = "".join(f"d{i} " for i in range(1, deltas + 1))
    async with client(second.ws_url) as c:
        texts = await assistant_texts(c, session_id)
        assert texts == [expected], "the whole turn is in the durable transcript"
        snapshot = await join_ready(c, session_id)
        assert snapshot["session"]["status"] in ("inactive", "ready")
