"""Small helpers shared by the authentication and admission tests of this package.

A production gateway started with `PROXIES_COUNT=1` trusts the last `X-Forwarded-For` entry, as
behind the shipped HAProxy example, so a test plays that proxy: every request comes from
127.0.0.1 and `forwarded_for(address)` says which client it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Client, client

STEP_S = 10.0


def forwarded_for(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_body(body: bytes | bytearray) -> dict[str, Any]:
    """The `error` object of a refusal, which must be the whole body."""
    parsed = json.loads(bytes(body))
    assert set(parsed) == {"error"} and {"code", "message"} <= set(parsed["error"]), parsed
    return parsed["error"]


async def refused_upgrade(url: str, **kwargs: Any) -> Any:
    """Open `/ws` expecting an HTTP refusal instead of the 101: returns the response."""
    async with asyncio.timeout(STEP_S):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, open_timeout=STEP_S, **kwargs):
                pass
    return refused.value.response


@contextlib.asynccontextmanager
async def unauthenticated(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A socket opened without a token: welcome says `requiresAuth`, then `connected`."""
    async with client(url, handshake=False, **kwargs) as c:
        welcome = await c.recv()
        assert welcome["type"] == "welcome" and welcome["requiresAuth"] is True, welcome
        assert (await c.recv())["type"] == "connected"
        yield c


async def me(base_url: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        return await http.get(f"{base_url}/api/me", headers=headers)
