"""A member record changed on one instance of a fleet binds on the others at once (issue 16,
PROTOCOL.md §5): a demoted user keeps no privilege on another instance, neither on a connection
already open there nor on its next request. Two production gateways share one Valkey, one JWKS
server and the local stack.

Before the fix: the change reached only the instance that made it. The other kept the role it had
cached for `ROLE_CACHE_S` (30 s: `/api/me` there still said `admin`) and its open connection of
that user kept the old role for good (it still created sessions) — both waits below timed out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diminuendo.local.valkey import LocalValkey
from tests.conftest import GatewayFleet, Stack, client, serving
from tests.integration.jwks_server import ROLE_CLAIM, TENANT_CLAIM, JwksServer, production_env

SETTLE_S = 5.0  # the announcement crosses Valkey pub/sub: milliseconds, bounded generously


@pytest.fixture
def fleet(stack: Stack, tmp_path: Path) -> Iterator[tuple[JwksServer, GatewayFleet]]:
    valkey, jwks = LocalValkey(tmp_path / "valkey"), JwksServer()
    try:
        valkey.start()
        with serving(stack, tmp_path, valkey, **production_env(jwks)) as pair:
            assert isinstance(pair, GatewayFleet)
            yield jwks, pair
    finally:
        jwks.stop()
        valkey.stop()


def token(jwks: JwksServer, user: str, tenant: str, role: str) -> str:
    return jwks.mint(jwks.claims(sub=user, **{TENANT_CLAIM: tenant, ROLE_CLAIM: role}))


async def eventually(check: Any) -> bool:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_demotion_on_one_instance_binds_on_the_other(
    fleet: tuple[JwksServer, GatewayFleet],
) -> None:
    jwks, pair = fleet
    a, b = pair.instances
    tenant, victim = f"t-{uuid.uuid4().hex[:12]}", f"auth0|{uuid.uuid4().hex[:12]}"
    owner_token = token(jwks, "auth0|owner", tenant, "owner")
    victim_token = token(jwks, victim, tenant, "admin")
    auth = {"Authorization": f"Bearer {victim_token}"}
    async with (
        client(a.ws_url, additional_headers={"Authorization": f"Bearer {owner_token}"}) as owner,
        client(b.ws_url, additional_headers=auth) as on_b,
        httpx.AsyncClient(base_url=b.url, headers=auth, timeout=10) as http_b,
    ):
        assert (await http_b.get("/api/me")).json()["role"] == "admin"  # B caches the role
        created = await on_b.request({"type": "create_session", "agentType": "echo"})
        assert created["type"] == "session_created", created

        demoted = await owner.request(
            {"type": "manage_members", "action": "add", "userId": victim, "role": "viewer"}
        )
        assert demoted["type"] == "member_list", demoted

        async def me_is_viewer() -> bool:
            return (await http_b.get("/api/me")).json()["role"] == "viewer"

        async def open_connection_refused() -> bool:
            reply = await on_b.request({"type": "create_session", "agentType": "echo"})
            return reply.get("code") == "FORBIDDEN"

        assert await eventually(me_is_viewer)
        assert await eventually(open_connection_refused)
