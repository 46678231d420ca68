"""JWKS endpoint down: cached keys keep working, a new key fails promptly (never a hang)."""

from __future__ import annotations

import time

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import client
from tests.integration.jwks_server import JwksServer, new_key, production_env


async def test_jwks_down_keeps_cached_keys_and_fails_new_ones_fast(start_gateway) -> None:
    server = JwksServer()
    try:
        gw = start_gateway(**production_env(server))
        bearer = {"Authorization": f"Bearer {server.mint()}"}
        async with client(gw.ws_url, additional_headers=bearer) as c:
            assert (await c.request({"type": "ping"}))["type"] == "pong"

        server.stop()
        fresh = {"Authorization": f"Bearer {server.mint()}"}  # not in the token cache
        async with client(gw.ws_url, additional_headers=fresh) as c:
            listing = await c.request({"type": "list_sessions"})
            assert listing["type"] == "session_list", "a cached key still verifies"

        unknown = server.mint(kid="rotated-while-down", key=new_key())
        started = time.monotonic()
        with pytest.raises(InvalidStatus) as refused:
            async with client(gw.ws_url, additional_headers={"Authorization": f"Bearer {unknown}"}):
                pass
        assert refused.value.response.status_code == 401
        assert time.monotonic() - started < 8
    finally:
        server.stop()
