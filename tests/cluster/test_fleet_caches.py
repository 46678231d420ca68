"""Every cached record stays true across instances (issue 16, item 3): two real gateway processes
sharing one Valkey and one local stack. What one instance writes — a rename, an archive, the
owner's background persistence of a turn's status and counters, a member's role — is what the
other one answers right after, over REST (a tenant with no WebSocket there) and on its open
sockets, with no wait for a cache to expire (records are cached 5 s, roles 30 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diminuendo.local.valkey import LocalValkey
from tests.cluster.test_two_instances import two_gateways
from tests.conftest import Gateway, Stack, client, gateway_process
from tests.integration.jwks_server import JwksServer, production_env
from tests.integration.test_sessions import join_ready, new_session, slow
from tests.security.conftest import Prod
from tests.security.test_members import manage, new_tenant, new_user, ok

WITHIN_S = 2.0  # well under the record cache's 5 s and the role cache's 30 s


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = WITHIN_S) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"not seen within {within_s} s"
        await asyncio.sleep(0.05)


@pytest.fixture
def pair(stack: Stack, valkey_server: LocalValkey, tmp_path: Path) -> Iterator[list[Gateway]]:
    yield from two_gateways(stack, valkey_server, tmp_path)


async def cached_read(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    """Read a session twice with a pause between, so the reader has cached it whatever its
    rules for starting a cache are (a first read may only start following the tenant)."""
    await http.get(f"/api/threads/{session_id}")
    await asyncio.sleep(0.3)
    reply = await http.get(f"/api/threads/{session_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_a_rename_or_archive_on_a_shows_at_once_in_a_rest_read_on_b(
    pair: list[Gateway],
) -> None:
    """Before the fix: B's second read answered the old name (its cached copy: B follows the
    tenant's channel only while it has a WebSocket of the tenant, so no change reached it)."""
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as on_b,
    ):
        created = await on_a.post("/api/threads", json={"agentType": "echo", "name": "first"})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        assert (await cached_read(on_b, session_id))["name"] == "first"

        renamed = await on_a.patch(f"/api/threads/{session_id}", json={"name": "moved"})
        assert renamed.status_code == 200, renamed.text
        assert (await on_b.get(f"/api/threads/{session_id}")).json()["name"] == "moved"

        await on_a.patch(f"/api/threads/{session_id}", json={"archived": True})
        assert (await on_b.get(f"/api/threads/{session_id}")).json()["archived"] is True


async def test_the_owners_status_and_counters_after_a_turn_are_what_b_reads(
    pair: list[Gateway],
) -> None:
    """A turn runs on A (the owner); A persists the session's status, last seq, last activity
    and token usage in the background (debounced 0.2 s). B's REST read shows them within that,
    not after its cache's 5 s. Before the fix: B answered the copy it had cached before the turn
    (`lastSeq` 2, no usage) for the whole 2 s, and `status` `inactive` for good (a session this
    instance does not hold was always reported so, though its owner on A was alive)."""
    a, b = pair
    async with (
        client(a.ws_url) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as on_b,
    ):
        session_id = await new_session(on_a, "slow")
        await join_ready(on_a, session_id)
        before = await cached_read(on_b, session_id)
        await on_a.request({"type": "run_turn", "sessionId": session_id, "text": slow(5, 10)})
        done = (await on_a.recv_until("turn_complete"))[-1]
        assert before["lastSeq"] < done["seq"]
        usage = {"input": done["usage"]["inputTokens"], "output": done["usage"]["outputTokens"]}

        async def b_shows_the_turn() -> bool:
            seen = (await on_b.get(f"/api/threads/{session_id}")).json()
            return (
                seen["status"] == "ready"
                and seen["lastSeq"] >= done["seq"]
                and seen["lastActivityAt"] >= done["ts"]
                and seen["tokenUsage"] == usage
            )

        await eventually(b_shows_the_turn)


@pytest.fixture
def prod_pair(stack: Stack, valkey_server: LocalValkey, tmp_path: Path) -> Iterator[list[Prod]]:
    """Two production-mode gateways (real JWT auth, member-record roles) trusting one JWKS
    server and sharing one Valkey."""
    server = JwksServer()
    gateways = [
        gateway_process(
            stack,
            tmp_path / name,
            **production_env(server, REDIS_URL=valkey_server.url, WS_RATE_LIMIT="1000/10s"),
        )
        for name in "ab"
    ]
    try:
        for gw in gateways:
            gw.data_dir.mkdir()
            gw.start()
        yield [Prod(server, gw) for gw in gateways]
    finally:
        for gw in gateways:
            if gw.proc is not None and gw.proc.poll() is None:
                gw.stop()
        server.stop()


async def test_a_member_demoted_on_a_loses_the_role_on_b_over_rest_and_on_an_open_socket(
    prod_pair: list[Prod],
) -> None:
    """A developer (member record; its token claims only `viewer`) is demoted to viewer on A.
    On B, both its REST calls and its open WebSocket lose `create` at once, as on one instance
    (PROTOCOL.md §5). Before the fix: B kept the cached role (30 s) for REST, and its socket
    kept the developer identity until it reconnected — both creates on B succeeded."""
    a, b = prod_pair
    tenant, owner, dev = new_tenant(), new_user(), new_user()
    dev_token = b.token(dev, tenant, "viewer")
    create = {"type": "create_session", "agentType": "echo"}
    async with a.client(a.token(owner, tenant, "owner")) as boss:
        assert ok(await manage(boss, "add", dev, "developer"))
        async with b.http(dev_token) as rest, b.client(dev_token) as socket:
            await asyncio.sleep(0.3)  # B follows the tenant from its first connection
            made = await rest.post("/api/threads", json={"agentType": "echo"})
            assert made.status_code == 201, made.text  # B caches the role: developer
            assert (await socket.request(create))["type"] == "session_created"

            assert ok(await manage(boss, "update", dev, "viewer"))

            async def socket_refused() -> bool:
                return (await socket.request(create)).get("code") == "FORBIDDEN"

            refused = await rest.post("/api/threads", json={"agentType": "echo"})
            assert refused.status_code == 403, refused.text
            await eventually(socket_refused)
