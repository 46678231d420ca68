"""One tenant must not take the instance from the others (PROTOCOL.md §4, §13): active sessions
per tenant, fair eviction when capacity is full, sessions joined per connection, lifecycle
broadcasts only to who may read the session, and caches a client cannot grow without bound.
Against production gateways with real tokens; every test works in fresh tenants."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from tests.conftest import LOCAL_KEY, Client, Stack
from tests.integration.test_tenancy import LIFECYCLE, frames_until_pong
from tests.security.conftest import Prod
from tests.security.test_members import new_tenant, new_user

STEP_S = 15.0


async def new_session(c: Client, name: str = "s") -> str:
    reply = await c.request({"type": "create_session", "agentType": "echo", "name": name})
    assert reply["type"] == "session_created", reply
    return reply["session"]["id"]


async def join(c: Client, session_id: str) -> str:
    """Join and wait for the outcome: "ready", or the error code that refused it."""
    request_id = f"j{uuid.uuid4().hex[:8]}"
    await c.send({"type": "join_session", "sessionId": session_id, "id": request_id})

    def done(frame: dict[str, Any]) -> bool:
        if frame.get("id") == request_id and frame["type"] == "error":
            return True
        if frame.get("id") == request_id and frame["type"] == "state_snapshot":
            return frame["session"]["status"] == "ready"
        return (
            frame.get("type") == "session_state"
            and frame.get("sessionId") == session_id
            and frame.get("state") == "ready"
        )

    last = (await c.recv_until(done, STEP_S))[-1]
    return last["code"] if last["type"] == "error" else "ready"


async def leave(c: Client, session_id: str) -> None:
    reply = await c.request({"type": "leave_session", "sessionId": session_id})
    assert reply["type"] == "session_left", reply


async def statuses(c: Client) -> dict[str, str]:
    reply = await c.request({"type": "list_sessions", "includeArchived": True})
    return {s["id"]: s["status"] for s in reply["sessions"]}


# ----- active sessions per tenant and fair eviction (item 5) -------------------------------------


async def test_a_tenant_over_its_quota_gets_quota_exceeded_and_others_still_join(prod: Any) -> None:
    """Before the fix: the hog's fourth join activated (there was no per-tenant limit), and the
    other tenant's join then got CAPACITY_EXCEEDED."""
    p: Prod = prod(MAX_ACTIVE_SESSIONS="4", MAX_ACTIVE_SESSIONS_PER_TENANT="3")
    async with (
        p.client(p.token(new_user(), new_tenant(), "developer")) as hog,
        p.client(p.token(new_user(), new_tenant(), "developer")) as other,
    ):
        sessions = [await new_session(hog) for _ in range(4)]
        assert [await join(hog, s) for s in sessions[:3]] == ["ready"] * 3
        assert await join(hog, sessions[3]) == "QUOTA_EXCEEDED"
        assert await join(other, await new_session(other)) == "ready"
        # Leaving makes one of the hog's own sessions idle: the hog's next join reuses its slot.
        await leave(hog, sessions[0])
        assert await join(hog, sessions[3]) == "ready"
        assert (await statuses(hog))[sessions[0]] == "inactive"


async def test_a_full_instance_evicts_from_the_biggest_tenant_never_for_it(prod: Any) -> None:
    """Capacity full (4): the small tenant's idle session is the least recently used.

    Before the fix: the hog's join evicted the small tenant's idle session (plain LRU), and so
    did the small tenant's own next join, while the hog's idle session stayed."""
    p: Prod = prod(MAX_ACTIVE_SESSIONS="4")
    async with (
        p.client(p.token(new_user(), new_tenant(), "developer")) as small,
        p.client(p.token(new_user(), new_tenant(), "developer")) as hog,
    ):
        idle_small = await new_session(small)
        assert await join(small, idle_small) == "ready"
        await leave(small, idle_small)
        held = [await new_session(hog) for _ in range(5)]
        assert [await join(hog, s) for s in held[:3]] == ["ready"] * 3

        # Full; the only idle session is the small tenant's: the hog may not take it.
        assert await join(hog, held[3]) == "CAPACITY_EXCEEDED"
        assert (await statuses(small))[idle_small] == "ready"

        # The hog frees one of its own: its next join takes that slot, not the small tenant's.
        await leave(hog, held[0])
        assert await join(hog, held[3]) == "ready"
        hog_view = await statuses(hog)
        assert hog_view[held[0]] == "inactive"
        assert (await statuses(small))[idle_small] == "ready"

        # The small tenant joining a new session: the victim comes from the hog (it holds 3),
        # although the small tenant's own idle session is older.
        await leave(hog, held[1])
        assert await join(small, await new_session(small)) == "ready"
        assert (await statuses(hog))[held[1]] == "inactive"
        assert (await statuses(small))[idle_small] == "ready"


async def test_the_last_tenth_of_capacity_is_kept_for_tenants_under_their_share(prod: Any) -> None:
    """Capacity 10: a tenant alone may hold 9; the tenth slot is for a tenant under its fair
    share (10 / (tenants + 1)).

    Before the fix: the hog took the tenth slot and the next tenant got CAPACITY_EXCEEDED."""
    p: Prod = prod(MAX_ACTIVE_SESSIONS="10", WS_RATE_LIMIT="1000/10s")
    async with (
        p.client(p.token(new_user(), new_tenant(), "developer")) as hog,
        p.client(p.token(new_user(), new_tenant(), "developer")) as newcomer,
    ):
        sessions = [await new_session(hog) for _ in range(10)]
        assert [await join(hog, s) for s in sessions[:9]] == ["ready"] * 9
        assert await join(hog, sessions[9]) == "CAPACITY_EXCEEDED"
        assert await join(newcomer, await new_session(newcomer)) == "ready"


# ----- sessions joined per connection (item 5) ---------------------------------------------------


async def test_joins_per_connection_are_capped(prod: Any) -> None:
    """Before the fix: the fourth join (and any number after it) was accepted."""
    p: Prod = prod(MAX_JOINED_PER_CONNECTION="3")
    async with p.client(p.token(new_user(), new_tenant(), "developer")) as c:
        sessions = [await new_session(c) for _ in range(4)]
        assert [await join(c, s) for s in sessions[:3]] == ["ready"] * 3
        refused = await c.request({"type": "join_session", "sessionId": sessions[3]})
        assert refused["type"] == "error" and refused["code"] == "QUOTA_EXCEEDED", refused
        assert refused.get("sessionId") == sessions[3]
        assert await join(c, sessions[0]) == "ready", "re-joining a joined session is no new join"
        await leave(c, sessions[0])
        # Joins that fail (no such session) do not use up the quota.
        for _ in range(3):
            missing = await c.request(
                {"type": "join_session", "sessionId": f"ses_{uuid.uuid4().hex}"}
            )
            assert missing["code"] == "SESSION_NOT_FOUND", missing
        assert await join(c, sessions[3]) == "ready"
        # A burst of joins at once (they run concurrently) cannot slip past the cap either.
        await leave(c, sessions[3])
        burst = [await new_session(c) for _ in range(4)]
        for i, session_id in enumerate(burst):
            await c.send({"type": "join_session", "sessionId": session_id, "id": f"b{i}"})
        replies: dict[str, dict[str, Any]] = {}
        while len(replies) < len(burst):
            frame = await c.recv(STEP_S)
            if frame.get("id") in {f"b{i}" for i in range(len(burst))}:
                replies[frame["id"]] = frame
        outcomes = sorted(r.get("code", r["type"]) for r in replies.values())
        assert outcomes == ["QUOTA_EXCEEDED", "QUOTA_EXCEEDED", "QUOTA_EXCEEDED", "state_snapshot"]
        for session_id in burst:
            await c.request({"type": "leave_session", "sessionId": session_id})
        assert await join(c, sessions[3]) == "ready"
        # And the connection still streams turns.
        await c.request({"type": "run_turn", "sessionId": sessions[3], "text": "still here"})
        done = (await c.recv_until("turn_complete", STEP_S))[-1]
        assert done["finalText"] == "still here"


# ----- lifecycle broadcasts (item 7) -------------------------------------------------------------


async def test_a_guest_gets_lifecycle_events_of_its_own_sessions_only(prod: Any) -> None:
    """Before the fix: the guest received `session_created` (name, metadata) and every other
    lifecycle event for all sessions of its tenant, while `list_sessions` showed only its own."""
    p: Prod = prod(WS_RATE_LIMIT="1000/10s")
    tenant, guest = new_tenant(), new_user()
    async with p.client(p.token(new_user(), tenant, "owner")) as owner:
        async with p.client(p.token(guest, tenant, "developer")) as as_developer:
            own = await new_session(as_developer, "the guest's")
        add = {"type": "manage_members", "action": "add", "userId": guest, "role": "guest"}
        assert (await owner.request(add))["type"] == "member_list"
        async with (
            p.client(p.token(guest, tenant, "developer")) as g,
            p.client(p.token(new_user(), tenant, "viewer")) as viewer,
        ):
            others = await owner.request(
                {"type": "create_session", "agentType": "echo", "name": "secret plan"}
            )
            theirs = others["session"]["id"]
            for message in (
                {"type": "rename_session", "sessionId": theirs, "name": "still secret"},
                {"type": "archive_session", "sessionId": theirs},
                {"type": "unarchive_session", "sessionId": theirs},
                {"type": "rename_session", "sessionId": own, "name": "renamed by the owner"},
                {"type": "delete_session", "sessionId": theirs},
            ):
                reply = await owner.request(message)
                assert reply["type"] != "error", reply
            seen = [
                (f["type"], f.get("sessionId") or f["session"]["id"])
                for f in await frames_until_pong(g)
                if f.get("type") in LIFECYCLE
            ]
            assert seen == [("session_updated", own)]
            assert "secret" not in str(g.received)
            # Everyone else in the tenant still gets every event.
            control = [f["type"] for f in await frames_until_pong(viewer) if f["type"] in LIFECYCLE]
            assert control == [
                "session_created",
                "session_updated",
                "session_archived",
                "session_unarchived",
                "session_updated",
                "session_deleted",
            ]


# ----- bounded caches (item 12) ------------------------------------------------------------------

GAUGE = re.compile(r'^diminuendo_cache_entries\{cache="([a-z_]+)"\} ([0-9.e+]+)$', re.M)


async def test_a_flood_of_unknown_agent_types_does_not_grow_the_cache(prod: Any) -> None:
    """1,500 `create_session` with distinct unknown agent types, pipelined on one socket.

    Before the fix: every unknown type stayed cached for the life of the process (1,500 entries
    after this flood; there was no size bound and no gauge). Now unknown types sit in a small
    cache of their own, with a short TTL, so they cannot push the known ones out either."""
    p: Prod = prod(WS_RATE_LIMIT="100000/10s")
    flood = 1_500
    async with p.client(p.token(new_user(), new_tenant(), "developer")) as c:
        for i in range(flood):
            agent_type = f"nope-{uuid.uuid4().hex}"
            await c.send({"type": "create_session", "agentType": agent_type, "id": f"u{i}"})
        await c.recv_until(lambda f: f.get("id") == f"u{flood - 1}", 120)
        errors = [f for f in c.received if f.get("id", "").startswith("u")]
        assert len(errors) == flood
        assert {(f["type"], f["code"]) for f in errors} == {("error", "INVALID_MESSAGE")}
        assert (await c.request({"type": "create_session", "agentType": "echo"}))[
            "type"
        ] == "session_created"
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"{p.gw.url}/metrics")).text
    sizes = {name: float(value) for name, value in GAUGE.findall(metrics)}
    assert 0 < sizes["unknown_agent_types"] <= 512, sizes
    assert sizes["deployments"] == 1, sizes  # echo, and nothing pushed it out
    assert 0 < sizes["member_roles"] <= 20_000, sizes


async def test_podium_client_keeps_its_deployment_caches_bounded(stack: Stack) -> None:
    """The adapter alone against the real local Podium: 1,500 distinct unknown agent types.

    Before the fix: `PodiumClient` held one entry per unknown type, for good (2,500 after
    2,500 of them, measured with the code of main)."""
    from diminuendo.settings import LOCAL_STACK_SECRETS_KEY
    from diminuendo.upstreams.http import UpstreamHttp
    from diminuendo.upstreams.podium import UNKNOWN_AGENT_TYPES_CACHED, PodiumClient
    from diminuendo.upstreams.sealing import SealingKey

    http = UpstreamHttp("podium", stack.podium_url, LOCAL_KEY)
    key = SealingKey.parse(LOCAL_STACK_SECRETS_KEY)
    podium = PodiumClient(http, LOCAL_KEY, secrets_key=key, instance_secrets={})
    try:
        for _ in range(1_500):
            assert await podium.resolve_deployment(f"nope-{uuid.uuid4().hex}") is None
        assert podium.cache_sizes()["unknown_agent_types"] == UNKNOWN_AGENT_TYPES_CACHED
        assert (await podium.resolve_deployment("echo") or "").startswith("echo:")
        assert podium.cache_sizes()["deployments"] == 1
    finally:
        await http.aclose()
