"""Small helpers shared by the authentication and admission tests of this package (the
WebSocket ones come from `tests/integration/test_auth.py`, which tests the token paths).

A production gateway started with `PROXIES_COUNT=1` trusts the last `X-Forwarded-For` entry, as
behind the shipped HAProxy example, so a test plays that proxy: every request comes from
127.0.0.1 and `forwarded_for(address)` says which client it carries.
"""

from __future__ import annotations

import httpx

from tests.integration.test_auth import (
    STEP_S,
    bearer,
    error_body,
    refused_upgrade,
    unauthenticated,
)

__all__ = [
    "STEP_S",
    "bearer",
    "error_body",
    "forwarded_for",
    "me",
    "refused_upgrade",
    "unauthenticated",
]


def forwarded_for(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def me(base_url: str, headers: dict[str, str]) -> httpx.Response:
    """`GET /api/me` with exactly these headers."""
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        return await http.get(f"{base_url}/api/me", headers=headers)
