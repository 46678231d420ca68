"""A JWT identity lives as long as its token (PROTOCOL.md §3, §12 close 4003; issue 13 item 3).

The gateways here run with `AUTH_REFRESH_WINDOW=2` and `AUTH_CLOCK_LEEWAY=1`, and the tokens
expire a few seconds after they are minted, so every deadline is reached within seconds:
`auth_expiring` is due 2 s before `exp`, the close 1 s after it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from diminuendo.client import DiminuendoClient
from diminuendo.client.errors import ServerError
from tests.conftest import Client
from tests.security.auth_helpers import STEP_S, bearer, me, unauthenticated

WINDOW_S, LEEWAY_S = 2, 1
SETTINGS = {"AUTH_REFRESH_WINDOW": str(WINDOW_S), "AUTH_CLOCK_LEEWAY": str(LEEWAY_S)}
LIFETIME_S = 4  # of the short tokens: `exp` is this far ahead when minted
LATE_S = 2.5  # how late after its due time a deadline may be acted on (a loaded machine)


def short_token(p: Any, user: str = "auth0|alice") -> tuple[str, int]:
    """A token of `user` that expires `LIFETIME_S` from now, and its `exp`."""
    exp = int(time.time()) + LIFETIME_S
    return p.token(user=user, exp=exp), exp


async def frames_until_closed(c: Client, timeout_s: float) -> tuple[list[dict], int, float]:
    """Every frame up to the close, the close code, and when it came (epoch seconds)."""
    frames: list[dict] = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout_s):
            while True:
                frames.append(await c.recv(timeout_s))
    received = closed.value.rcvd
    return frames, (received.code if received else 0), time.time()


def expiring(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] == "auth_expiring"]


async def test_an_expired_token_closes_the_socket_with_4003(prod: Any) -> None:
    """Before the fix: the socket kept its identity forever. No `auth_expiring` came, and long
    after `exp` + leeway (when REST already said 401 for the same token) the socket still
    created sessions; the test timed out waiting for the close."""
    p = prod(**SETTINGS)

    async def through_upgrade() -> None:
        token, exp = short_token(p)
        async with p.client(token) as c:
            created = await c.request({"type": "create_session", "agentType": "echo"})
            assert created["type"] == "session_created", created
            await expect_expiry(c, token, exp)

    async def through_message() -> None:
        token, exp = short_token(p, user="auth0|bob")
        async with unauthenticated(p.gw.ws_url) as c:
            assert (await c.request({"type": "authenticate", "token": token}))[
                "type"
            ] == "authenticated"
            await expect_expiry(c, token, exp)

    async def expect_expiry(c: Client, token: str, exp: int) -> None:
        frames, code, closed_at = await frames_until_closed(c, LIFETIME_S + LEEWAY_S + 2 * LATE_S)
        warnings = expiring(frames)
        assert warnings == [{"type": "auth_expiring", "expiresAt": exp * 1000}], frames
        assert code == 4003
        assert exp + LEEWAY_S - 0.1 <= closed_at <= exp + LEEWAY_S + LATE_S, closed_at - exp
        # REST agrees: the same token is refused by now.
        assert (await me(p.gw.url, bearer(token))).status_code == 401

    await asyncio.gather(through_upgrade(), through_message())


async def test_a_fresh_token_moves_the_deadline(prod: Any) -> None:
    """Before the fix: no `auth_expiring` was ever sent (the wait for it timed out)."""
    p = prod(**SETTINGS)
    token, exp = short_token(p)
    async with p.client(token) as c:
        warning = await c.recv_until("auth_expiring", timeout=LIFETIME_S + LATE_S)
        assert warning[-1]["expiresAt"] == exp * 1000
        assert time.time() >= exp - WINDOW_S - 0.1
        # Another identity stays refused on this socket, and moves nothing.
        other = await c.request({"type": "authenticate", "token": p.token(user="auth0|mallory")})
        assert other["type"] == "error" and other["code"] == "FORBIDDEN", other
        fresh = await c.request({"type": "authenticate", "token": p.token(user="auth0|alice")})
        assert fresh["type"] == "authenticated", fresh
        assert fresh["identity"]["userId"] == "auth0|alice"
        # Well past the first token's deadline the socket is open and fully usable.
        await asyncio.sleep(max(0.0, exp + LEEWAY_S + LATE_S - time.time()))
        created = await c.request({"type": "create_session", "agentType": "echo"})
        assert created["type"] == "session_created", created
        assert not expiring(c.received[c.received.index(warning[-1]) + 1 :])


async def test_an_sse_stream_ends_at_exp_plus_leeway(prod: Any) -> None:
    """Before the fix: the stream stayed open after `exp` + leeway (the bounded read timed
    out)."""
    p = prod(**SETTINGS)
    token, exp = short_token(p)
    async with p.http(token) as http:
        created = await http.post("/api/threads", json={"agentType": "echo"})
        assert created.status_code == 201, created.text
        url = f"/api/threads/{created.json()['id']}/events"
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            async with asyncio.timeout(LIFETIME_S + LEEWAY_S + 2 * LATE_S):
                async for _ in response.aiter_lines():
                    pass
        ended_at = time.time()
    assert exp + LEEWAY_S - 0.1 <= ended_at <= exp + LEEWAY_S + LATE_S, ended_at - exp


async def test_the_client_library_refreshes_through_its_token_callback(prod: Any) -> None:
    """`token=` may be a callable (sync or async): called at connect and on `auth_expiring`, so
    a client outlives any number of short tokens on one socket.

    Before the fix: the gateway sent no `auth_expiring`, and the library took only a string."""
    p = prod(**SETTINGS)
    calls = {"sync": 0, "async": 0}

    def fresh() -> str:
        calls["sync"] += 1
        return short_token(p)[0]

    async def fresh_async() -> str:
        calls["async"] += 1
        await asyncio.sleep(0)
        return short_token(p, user="auth0|bob")[0]

    async def hold(source: Any) -> DiminuendoClient:
        async with DiminuendoClient.connect(p.gw.ws_url, token=source) as c:
            until = time.monotonic() + 2 * LIFETIME_S
            while time.monotonic() < until:
                await c.ping()
                await asyncio.sleep(0.5)
            await c.list_sessions()
            return c

    held = await asyncio.gather(hold(fresh), hold(fresh_async))
    assert [c.reconnects for c in held] == [0, 0]
    assert calls["sync"] >= 3 and calls["async"] >= 3, calls


async def test_a_static_token_cannot_outlive_its_exp(prod: Any) -> None:
    """With a plain string there is nothing to refresh with: the socket is closed with 4003 and
    the reconnect is refused, so the client fails instead of acting on an expired identity.

    Before the fix: the client kept working on the expired token."""
    p = prod(**SETTINGS)
    token, exp = short_token(p)
    async with DiminuendoClient.connect(p.gw.ws_url, token=token) as c:
        await asyncio.sleep(max(0.0, exp + LEEWAY_S + LATE_S - time.time()))
        with pytest.raises(ServerError) as failed:
            async with asyncio.timeout(STEP_S):
                await c.list_sessions()
        assert failed.value.code == "AUTH_FAILED"
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        assert (await http.get(f"{p.gw.url}/health")).status_code == 200
