"""The gateway process stops within its bound on every Python, whatever event loop is asked for.

Sanic's runner awaits `Server.wait_closed()` before it closes idle connections. Since Python
3.12 asyncio's `wait_closed()` waits for every open connection (CPython gh-79033), so on a plain
asyncio loop one idle keep-alive client held the gateway's shutdown for as long as it stayed
connected; uvloop's `wait_closed()` returns at once. The gateway therefore always runs on uvloop.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import httpx
import pytest

from tests.conftest import client

pytestmark = pytest.mark.timeout(90)

GRACE_S = 5  # GRACEFUL_SHUTDOWN_TIMEOUT of the gateways below
# An idle connection is closed at once: far less than the grace, whatever the machine's load.
BOUND_S = GRACE_S - 1


@pytest.mark.parametrize("use_uvloop", ["default", "false"])
async def test_sigterm_with_an_idle_keep_alive_client_exits_within_the_bound(
    start_gateway, use_uvloop: str
) -> None:
    """Before the fix: with SANIC_USE_UVLOOP=false on Python 3.13 the gateway had not exited
    30 s after SIGTERM (it logged "Worker complete" only once the client went away)."""
    overrides = {"GRACEFUL_SHUTDOWN_TIMEOUT": str(GRACE_S)}
    if use_uvloop != "default":
        overrides["SANIC_USE_UVLOOP"] = use_uvloop  # an operator's override, e.g. to debug
    gateway = start_gateway(**overrides)
    assert gateway.proc is not None
    async with httpx.AsyncClient() as idle:
        assert (await idle.get(f"{gateway.url}/health")).status_code == 200
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(gateway.proc.wait, 30)
        except subprocess.TimeoutExpired:
            pytest.fail("the gateway did not exit within 30 s of SIGTERM")
        took = time.monotonic() - started
    assert code == 0, gateway.output()[-3000:]
    assert took < BOUND_S, f"exit took {took:.1f}s"


async def test_sigterm_with_an_sse_stream_open_exits_at_once(start_gateway) -> None:
    """The drain ends the stream; its client keeps the connection (an httpx pool does).

    Before the fix: 15.2 s with the default `GRACEFUL_SHUTDOWN_TIMEOUT` (5.4 s with this test's):
    Sanic kept the connection open for the client's next request until the grace ended. Now
    0.17 s: a connection busy when the shutdown begins closes after its response."""
    gateway = start_gateway(GRACEFUL_SHUTDOWN_TIMEOUT=str(GRACE_S))
    assert gateway.proc is not None
    async with client(gateway.ws_url) as ws:
        created = await ws.request({"type": "create_session", "agentType": "echo"})
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{gateway.url}/api/threads/{created['session']['id']}/events"
        async with http.stream("GET", url) as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(("id:", "event:"))
            started = time.monotonic()
            gateway.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(gateway.proc.wait, 30)
            took = time.monotonic() - started
    assert code == 0, gateway.output()[-3000:]
    assert took < 1.5, f"exit took {took:.2f}s"
