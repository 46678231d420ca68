"""Roles and tenant isolation out of dev mode (PROTOCOL.md §4, §5, §6, §11), end to end.

One production gateway verifies real RS256 tokens from a JWKS server on 127.0.0.1; each test
works in fresh tenants (random ids), so the shared Unison stand-in never carries state from one
test into another. Tokens carry the tenant in `https://diminuendo/tenant_id` and the role in
`https://diminuendo/role`; member records added through `manage_members` override the claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from diminuendo.local.valkey import LocalValkey
from tests.conftest import Client, Gateway, GatewayFleet, Stack, client, serving
from tests.integration.jwks_server import JwksServer, production_env

TENANT_CLAIM = "https://diminuendo/tenant_id"
ROLE_CLAIM = "https://diminuendo/role"
STEP_S = 10.0
LIFECYCLE = {
    "session_created",
    "session_updated",
    "session_archived",
    "session_unarchived",
    "session_deleted",
}


@dataclass
class Prod:
    jwks: JwksServer
    gw: Gateway | GatewayFleet

    def token(self, tenant: str, role: str | None, sub: str | None = None) -> str:
        return self.jwks.mint(
            self.jwks.claims(
                sub=sub or f"auth0|{uuid.uuid4().hex[:12]}",
                **{TENANT_CLAIM: tenant, ROLE_CLAIM: role},
            )
        )


@pytest.fixture(scope="module")
def prod(
    stack: Stack, fleet_valkey: LocalValkey | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prod]:
    server = JwksServer()
    try:
        with serving(
            stack,
            tmp_path_factory.mktemp("tenancy"),
            fleet_valkey,
            **production_env(server, AUTH_FAILURE_LIMIT="100000/60s"),
        ) as gw:
            yield Prod(server, gw)
    finally:
        server.stop()


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def new_user() -> str:
    return f"auth0|{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def as_user(
    prod: Prod,
    tenant: str,
    role: str | None,
    sub: str | None = None,
    *,
    expect_role: str | None = None,
) -> AsyncIterator[Client]:
    """A socket authenticated on the upgrade as `sub` in `tenant` with a `role` claim."""
    sub = sub or new_user()
    token = prod.token(tenant, role, sub)
    async with client(
        prod.gw.ws_url, handshake=False, additional_headers={"Authorization": f"Bearer {token}"}
    ) as c:
        frames = [await c.recv() for _ in range(3)]
        assert [f["type"] for f in frames] == ["welcome", "connected", "authenticated"], frames
        identity = frames[2]["identity"]
        assert identity["userId"] == sub and identity["tenantId"] == tenant, identity
        assert identity["role"] == (expect_role or role), identity
        yield c


async def new_session(c: Client, name: str = "mine") -> str:
    reply = await c.request({"type": "create_session", "agentType": "echo", "name": name})
    assert reply["type"] == "session_created", reply
    return reply["session"]["id"]


async def join_ready(c: Client, session_id: str) -> None:
    snapshot = await c.request({"type": "join_session", "sessionId": session_id})
    assert snapshot["type"] == "state_snapshot", snapshot
    if snapshot["session"]["status"] != "ready":
        await c.recv_until(
            lambda f: f.get("type") == "session_state" and f.get("state") == "ready", STEP_S
        )


async def listed(c: Client, include_archived: bool = True) -> dict[str, dict[str, Any]]:
    reply = await c.request({"type": "list_sessions", "includeArchived": include_archived})
    assert reply["type"] == "session_list", reply
    return {s["id"]: s for s in reply["sessions"]}


async def members(c: Client) -> dict[str, str]:
    reply = await c.request({"type": "manage_members", "action": "list"})
    assert reply["type"] == "member_list", reply
    return {m["userId"]: m["role"] for m in reply["members"]}


async def manage(c: Client, action: str, user_id: str, role: str | None = None) -> dict:
    message: dict[str, Any] = {"type": "manage_members", "action": action, "userId": user_id}
    if role is not None:
        message["role"] = role
    return await c.request(message)


async def frames_until_pong(c: Client) -> list[dict[str, Any]]:
    """Everything the server had queued for `c` before the reply to a fresh ping (the server
    sends a connection's frames in order, so anything already broadcast arrives before it)."""
    start = len(c.received)
    pong = await c.request({"type": "ping"})
    assert pong["type"] == "pong"
    return c.received[start:-1]


def forbidden(reply: dict[str, Any]) -> bool:
    return reply.get("type") == "error" and reply.get("code") == "FORBIDDEN"


# ----- roles (§11) ------------------------------------------------------------------------------


async def test_viewer_may_only_read(prod: Prod) -> None:
    tenant = new_tenant()
    async with (
        as_user(prod, tenant, "developer") as dev,
        as_user(prod, tenant, "viewer") as viewer,
    ):
        session_id = await new_session(dev, "original")
        for message in (
            {"type": "create_session", "agentType": "echo"},
            {"type": "rename_session", "sessionId": session_id, "name": "renamed"},
            {"type": "run_turn", "sessionId": session_id, "text": "hi"},
            {"type": "delete_session", "sessionId": session_id},
            {"type": "archive_session", "sessionId": session_id},
            {"type": "manage_members", "action": "add", "userId": new_user(), "role": "guest"},
        ):
            reply = await viewer.request(message)
            assert forbidden(reply), (message["type"], reply)
        # Reading is allowed.
        assert session_id in await listed(viewer)
        history = await viewer.request({"type": "get_history", "sessionId": session_id})
        assert history["type"] == "history", history
        assert await members(viewer) == {}
        # Nothing the viewer tried took effect.
        mine = (await listed(dev))[session_id]
        assert mine["name"] == "original" and mine["archived"] is False
        assert mine["status"] == "inactive", "the refused run_turn did not activate it"

    # The same rule on REST.
    token = prod.token(tenant, "viewer")
    async with httpx.AsyncClient(
        base_url=prod.gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=STEP_S
    ) as http:
        created = await http.post("/api/threads", json={"agentType": "echo"})
        assert created.status_code == 403 and created.json()["error"]["code"] == "FORBIDDEN"
        deleted = await http.delete(f"/api/threads/{session_id}")
        assert deleted.status_code == 403
        assert (await http.get(f"/api/threads/{session_id}")).status_code == 200


async def test_developer_may_not_delete_or_manage_members(prod: Prod) -> None:
    tenant = new_tenant()
    other = new_user()
    async with as_user(prod, tenant, "developer") as dev:
        session_id = await new_session(dev)
        renamed = await dev.request(
            {"type": "rename_session", "sessionId": session_id, "name": "renamed"}
        )
        assert renamed["type"] == "session_updated"
        assert forbidden(await dev.request({"type": "delete_session", "sessionId": session_id}))
        assert forbidden(await manage(dev, "add", other, "viewer"))
        assert forbidden(await manage(dev, "update", other, "viewer"))
        assert forbidden(await manage(dev, "remove", other))
        assert await members(dev) == {}, "listing members is allowed"
        assert session_id in await listed(dev)


@pytest.mark.parametrize("role", ["admin", "owner"])
async def test_admin_and_owner_may_delete_and_manage_members(prod: Prod, role: str) -> None:
    tenant = new_tenant()
    member = new_user()
    async with (
        as_user(prod, tenant, "developer") as dev,
        as_user(prod, tenant, role) as boss,
    ):
        session_id = await new_session(dev)
        deleted = await boss.request({"type": "delete_session", "sessionId": session_id})
        assert deleted["type"] == "session_deleted", deleted
        assert session_id not in await listed(dev)

        added = await manage(boss, "add", member, "developer")
        assert added["type"] == "member_list", added
        assert {"userId": member, "role": "developer"} in added["members"]
        updated = await manage(boss, "update", member, "viewer")
        assert {"userId": member, "role": "viewer"} in updated["members"]
        removed = await manage(boss, "remove", member)
        assert member not in {m["userId"] for m in removed["members"]}

        granted_owner = await manage(boss, "add", new_user(), "owner")
        if role == "admin":
            assert forbidden(granted_owner), "an admin cannot grant a role above its own"
        else:
            assert granted_owner["type"] == "member_list", granted_owner


async def test_last_owner_can_neither_be_removed_nor_demoted(prod: Prod) -> None:
    tenant = new_tenant()
    owner, second = new_user(), new_user()
    async with (
        as_user(prod, tenant, "owner", owner) as o,
        as_user(prod, tenant, "admin") as admin,
    ):
        assert (await manage(o, "add", owner, "owner"))["type"] == "member_list"
        assert forbidden(await manage(o, "remove", owner))
        assert forbidden(await manage(o, "update", owner, "admin"))
        assert forbidden(await manage(o, "add", owner, "developer"))
        assert forbidden(await manage(admin, "remove", owner))
        assert await members(o) == {owner: "owner"}

        # With a second owner the first may step down; then the second is the last one.
        assert (await manage(o, "add", second, "owner"))["type"] == "member_list"
        assert (await manage(o, "update", owner, "admin"))["type"] == "member_list"
        assert forbidden(await manage(o, "remove", second))
        assert forbidden(await manage(admin, "update", second, "viewer"))
        assert await members(o) == {owner: "admin", second: "owner"}


async def test_member_record_overrides_the_token_role(prod: Prod) -> None:
    tenant = new_tenant()
    promoted, demoted = new_user(), new_user()
    async with as_user(prod, tenant, "owner") as owner:
        # Before any member record: the claim decides.
        async with as_user(prod, tenant, "viewer", promoted) as before:
            assert forbidden(await before.request({"type": "create_session", "agentType": "echo"}))
        assert (await manage(owner, "add", promoted, "developer"))["type"] == "member_list"
        assert (await manage(owner, "add", demoted, "viewer"))["type"] == "member_list"

        # The next authentication takes the member record, whatever the claim says.
        async with as_user(prod, tenant, "viewer", promoted, expect_role="developer") as after:
            await new_session(after)
        async with as_user(prod, tenant, "admin", demoted, expect_role="viewer") as after:
            assert forbidden(await manage(after, "add", new_user(), "guest"))

        token = prod.token(tenant, "viewer", promoted)
        async with httpx.AsyncClient(timeout=STEP_S) as http:
            me = await http.get(
                f"{prod.gw.url}/api/me", headers={"Authorization": f"Bearer {token}"}
            )
        assert me.status_code == 200
        assert me.json()["role"] == "developer"
        assert me.json()["permissions"] == ["threads.create", "threads.read", "threads.write"]

        # The authenticate message path picks the record up too.
        async with client(prod.gw.ws_url, handshake=False) as c:
            await c.recv_until("connected")
            reply = await c.request({"type": "authenticate", "token": token})
            assert reply["identity"]["role"] == "developer", reply


async def test_guest_sees_only_its_own_sessions(prod: Prod) -> None:
    tenant = new_tenant()
    guest = new_user()
    async with (
        as_user(prod, tenant, "owner") as owner,
        as_user(prod, tenant, "developer", guest) as guest_as_dev,
    ):
        own = await new_session(guest_as_dev, "guest's")
        theirs = await new_session(owner, "owner's")
        assert (await manage(owner, "add", guest, "guest"))["type"] == "member_list"

    async with as_user(prod, tenant, "developer", guest, expect_role="guest") as g:
        assert set(await listed(g)) == {own}
        missing = f"ses_{uuid.uuid4().hex}"
        for message_type in ("join_session", "get_history", "leave_session"):
            hidden = await g.request({"type": message_type, "sessionId": theirs})
            absent = await g.request({"type": message_type, "sessionId": missing})
            assert hidden["code"] == "SESSION_NOT_FOUND", hidden
            assert hidden["message"] == absent["message"]
        assert forbidden(await g.request({"type": "create_session", "agentType": "echo"}))
        snapshot = await g.request({"type": "join_session", "sessionId": own})
        assert snapshot["type"] == "state_snapshot", snapshot

    token = prod.token(tenant, "developer", guest)
    async with httpx.AsyncClient(
        base_url=prod.gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=STEP_S
    ) as http:
        threads = (await http.get("/api/threads")).json()["threads"]
        assert [t["id"] for t in threads] == [own]
        assert (await http.get(f"/api/threads/{theirs}")).status_code == 404


# ----- tenant isolation (§4) --------------------------------------------------------------------


def session_messages(session_id: str) -> list[dict[str, Any]]:
    """One of every §5 message about a session, delete last."""
    sid = {"sessionId": session_id}
    path = {**sid, "path": "README.md"}
    return [
        {"type": "join_session", **sid},
        {"type": "leave_session", **sid},
        {"type": "rename_session", **sid, "name": "stolen"},
        {"type": "archive_session", **sid},
        {"type": "unarchive_session", **sid},
        {"type": "run_turn", **sid, "text": "hello from another tenant"},
        {"type": "stop_turn", **sid},
        {"type": "steer", **sid, "content": "go left"},
        {"type": "answer_question", **sid, "requestId": "req_1", "approved": True},
        {"type": "get_history", **sid},
        {"type": "get_events", **sid, "afterSeq": 0},
        {"type": "list_files", **sid},
        {"type": "read_file", **path},
        {"type": "file_history", **path},
        {"type": "file_at_iteration", **path, "iteration": 1},
        {"type": "delete_session", **sid},
    ]


@pytest.mark.parametrize("active", [False, True], ids=["inactive", "active"])
async def test_another_tenants_session_is_not_found_everywhere(prod: Prod, active: bool) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    missing = f"ses_{uuid.uuid4().hex}"
    async with (
        as_user(prod, tenant_a, "owner") as a,
        as_user(prod, tenant_b, "owner") as b,
    ):
        session_id = await new_session(a, "tenant A's")
        if active:
            await join_ready(a, session_id)
        for message, control in zip(
            session_messages(session_id), session_messages(missing), strict=True
        ):
            stolen = await b.request(message)
            absent = await b.request(control)
            assert stolen["type"] == "error", (message["type"], stolen)
            assert stolen["code"] == "SESSION_NOT_FOUND", (message["type"], stolen)
            assert stolen["message"] == absent["message"], (message["type"], stolen, absent)
            assert stolen.get("sessionId") in (None, session_id)
            assert "tenant A's" not in json.dumps(stolen)
        assert session_id not in await listed(b)

        # Tenant A's session is untouched.
        session = (await listed(a))[session_id]
        assert session["name"] == "tenant A's" and session["archived"] is False
        history = await a.request({"type": "get_history", "sessionId": session_id})
        assert history["type"] == "history" and history["messages"] == []

        # Tenant B saw no event of it either.
        leaked = [f for f in await frames_until_pong(b) if session_id in json.dumps(f)]
        assert leaked == []

    token_b = prod.token(tenant_b, "owner")
    async with httpx.AsyncClient(
        base_url=prod.gw.url, headers={"Authorization": f"Bearer {token_b}"}, timeout=STEP_S
    ) as http:
        for method, suffix, body in (
            ("GET", "", None),
            ("PATCH", "", {"name": "stolen"}),
            ("GET", "/messages", None),
            ("POST", "/messages", {"text": "hi"}),
            ("POST", "/stop", {}),
            ("POST", "/steer", {"content": "x"}),
            ("POST", "/answer", {"requestId": "req_1"}),
            ("GET", "/events?afterSeq=0", None),
            ("DELETE", "", None),
        ):
            stolen = await http.request(method, f"/api/threads/{session_id}{suffix}", json=body)
            absent = await http.request(method, f"/api/threads/{missing}{suffix}", json=body)
            assert stolen.status_code == 404, (method, suffix, stolen.text)
            assert stolen.json() == absent.json(), (method, suffix)
        threads = (await http.get("/api/threads?includeArchived=true")).json()["threads"]
        assert session_id not in [t["id"] for t in threads]


async def test_lifecycle_broadcasts_stay_inside_the_tenant(prod: Prod) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    shared_sub = new_user()  # the same user id in both tenants must not bridge them
    async with (
        as_user(prod, tenant_a, "owner", shared_sub) as a1,
        as_user(prod, tenant_a, "viewer") as a2,
        as_user(prod, tenant_b, "owner", shared_sub) as b1,
        as_user(prod, tenant_b, "viewer") as b2,
    ):
        session_id = await new_session(a1, "A")
        await a1.request({"type": "rename_session", "sessionId": session_id, "name": "A2"})
        await a1.request({"type": "archive_session", "sessionId": session_id})
        await a1.request({"type": "unarchive_session", "sessionId": session_id})
        await a1.request({"type": "delete_session", "sessionId": session_id})
        seen = []
        for kind in ("created", "updated", "archived", "unarchived", "deleted"):
            frame = (await a2.recv_until(f"session_{kind}", STEP_S))[-1]
            assert "id" not in frame, "a broadcast is not a reply"
            seen.append(frame.get("sessionId") or frame["session"]["id"])
        assert seen == [session_id] * 5

        b_session = await new_session(b1, "B")
        for c in (b1, b2):
            leaked = [f for f in await frames_until_pong(c) if f.get("type") in LIFECYCLE]
            assert [f for f in leaked if b_session not in json.dumps(f)] == []
        for c in (a1, a2):
            leaked = [f for f in await frames_until_pong(c) if b_session in json.dumps(f)]
            assert leaked == []


async def test_reauthenticating_into_another_tenant_leaves_the_old_tenant(prod: Prod) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    async with (
        as_user(prod, tenant_a, "owner") as a,
        as_user(prod, tenant_a, "developer") as switcher,
    ):
        reply = await switcher.request(
            {"type": "authenticate", "token": prod.token(tenant_b, "developer")}
        )
        if reply["type"] == "error":  # refusing the switch is a valid design too
            assert reply["code"] in {"FORBIDDEN", "AUTH_FAILED", "INVALID_STATE"}, reply
            return
        assert reply["identity"]["tenantId"] == tenant_b
        session_id = await new_session(a, "A only")
        leaked = [f for f in await frames_until_pong(switcher) if session_id in json.dumps(f)]
        assert leaked == [], leaked


async def test_reauthenticating_into_another_tenant_drops_its_subscriptions(
    prod: Prod,
) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    async with (
        as_user(prod, tenant_a, "owner") as a,
        as_user(prod, tenant_a, "developer") as switcher,
    ):
        session_id = await new_session(a, "A only")
        await join_ready(a, session_id)
        await join_ready(switcher, session_id)
        reply = await switcher.request(
            {"type": "authenticate", "token": prod.token(tenant_b, "developer")}
        )
        if reply["type"] == "error":
            assert reply["code"] in {"FORBIDDEN", "AUTH_FAILED", "INVALID_STATE"}, reply
            return
        started = await a.request({"type": "run_turn", "sessionId": session_id, "text": "secret"})
        assert started["type"] == "turn_started", started
        await a.recv_until("turn_complete", STEP_S)
        await asyncio.sleep(0.1)
        leaked = [f for f in await frames_until_pong(switcher) if f.get("sessionId") == session_id]
        assert leaked == [], [f["type"] for f in leaked]
