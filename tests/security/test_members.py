"""Member management (PROTOCOL.md §5, §11): who may change whom, the last owner, and role changes
reaching open sockets — against a production gateway with real tokens, concurrent requests.

Every test works in a fresh tenant. Actors hold member records; their token claims `viewer`, so
a removed actor falls back to a role that cannot manage members.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Client
from tests.security.conftest import Prod

LEVEL = {"guest": 1, "viewer": 2, "developer": 3, "admin": 4, "owner": 5}
ROLES = list(LEVEL)
CLAIMED = "viewer"  # every actor's token claim; member records override it


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def new_user() -> str:
    return f"auth0|{uuid.uuid4().hex[:12]}"


async def manage(c: Client, action: str, user_id: str, role: str | None = None) -> dict:
    return await c.request(change(action, user_id, role))


async def members(c: Client) -> dict[str, str]:
    reply = await c.request({"type": "manage_members", "action": "list"})
    assert reply["type"] == "member_list", reply
    return {m["userId"]: m["role"] for m in reply["members"]}


async def at_once(calls: list[tuple[Client, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send every message before reading any reply (several may share a socket), so the gateway
    handles them concurrently; the replies in the order of `calls`."""
    ids = [f"c{uuid.uuid4().hex[:8]}" for _ in calls]
    for (c, message), request_id in zip(calls, ids, strict=True):
        await c.send({**message, "id": request_id})
    replies: dict[str, dict[str, Any]] = {}

    async def collect(c: Client, wanted: set[str]) -> None:
        while not wanted <= replies.keys():
            frame = await c.recv()
            if frame.get("id") in wanted:
                replies[frame["id"]] = frame

    by_client: dict[int, tuple[Client, set[str]]] = {}
    for (c, _), request_id in zip(calls, ids, strict=True):
        by_client.setdefault(id(c), (c, set()))[1].add(request_id)
    await asyncio.gather(*(collect(c, wanted) for c, wanted in by_client.values()))
    return [replies[request_id] for request_id in ids]


def change(action: str, user_id: str, role: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "manage_members", "action": action, "userId": user_id}
    if role is not None:
        message["role"] = role
    return message


def ok(reply: dict[str, Any]) -> bool:
    return reply.get("type") == "member_list"


def forbidden(reply: dict[str, Any]) -> bool:
    return reply.get("type") == "error" and reply.get("code") == "FORBIDDEN"


@contextlib.asynccontextmanager
async def tenant_with(
    prod: Prod, roles: dict[str, str]
) -> AsyncIterator[tuple[str, dict[str, Client]]]:
    """A fresh tenant whose users `roles` (name → role) hold member records, each with an open
    socket. A bootstrap owner (claim `owner`, no record) writes the records."""
    tenant = new_tenant()
    users = {name: new_user() for name in roles}
    async with contextlib.AsyncExitStack() as stack:
        boot = await stack.enter_async_context(prod.client(prod.token(new_user(), tenant, "owner")))
        for name, role in roles.items():
            assert ok(await manage(boot, "add", users[name], role))
        clients = {
            name: await stack.enter_async_context(
                prod.client(prod.token(users[name], tenant, CLAIMED))
            )
            for name in roles
        }
        clients["_boot"] = boot
        yield tenant, {**clients, **{f"id:{n}": users[n] for n in roles}}  # type: ignore[dict-item]


async def test_an_admin_can_neither_demote_nor_remove_an_owner(prod: Any) -> None:
    """Before the fix: with two owners, the admin's `update owner → viewer` and `remove owner`
    both succeeded (only the new role was compared with the actor's)."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    async with tenant_with(p, {"o1": "owner", "o2": "owner", "a": "admin"}) as (_, c):
        o2 = c["id:o2"]
        assert forbidden(await manage(c["a"], "update", o2, "viewer"))
        assert forbidden(await manage(c["a"], "add", o2, "developer"))
        assert forbidden(await manage(c["a"], "remove", o2))
        assert (await members(c["o1"]))[o2] == "owner"
        # An admin still manages members at or below its own level.
        dev = new_user()
        assert ok(await manage(c["a"], "add", dev, "admin"))
        assert ok(await manage(c["a"], "update", dev, "developer"))
        assert ok(await manage(c["a"], "remove", dev))


async def test_concurrent_removal_of_the_two_owners_leaves_one(prod: Any) -> None:
    """Before the fix: both removals passed the last-owner check at once and the tenant was left
    with zero owners in 4 of 5 tries."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    for _ in range(5):
        async with tenant_with(p, {"o1": "owner", "o2": "owner"}) as (_, c):
            replies = await at_once(
                [
                    (c["o1"], change("remove", c["id:o2"])),
                    (c["o2"], change("remove", c["id:o1"])),
                ]
            )
            owners = [u for u, r in (await members(c["_boot"])).items() if r == "owner"]
            assert len(owners) == 1, (owners, replies)
            assert sorted(map(ok, replies)) == [False, True], replies
            assert any(forbidden(r) for r in replies), replies


async def test_two_instances_removing_the_two_owners_at_once_leave_one(prod: Any) -> None:
    """The guard across gateway instances is Unison, not a lock in one process: two gateways
    (one Unison) remove the tenant's two owners from each other at once, five times over.

    Before the fix: zero owners, as on one instance. With only the per-tenant lock it would
    still be zero owners here; the re-check after the write keeps at least one (when both
    instances re-check before either undoes, both undo and both answer FORBIDDEN)."""
    first, second = prod(WS_RATE_LIMIT="1000/10s"), prod(WS_RATE_LIMIT="1000/10s")
    for _ in range(5):
        tenant, o1, o2 = new_tenant(), new_user(), new_user()
        async with (
            first.client(first.token(o1, tenant, "owner")) as c1,
            second.client(second.token(o2, tenant, "owner")) as c2,
        ):
            assert ok(await manage(c1, "add", o1, "owner"))
            assert ok(await manage(c1, "add", o2, "owner"))
            replies = await at_once([(c1, change("remove", o2)), (c2, change("remove", o1))])
            owners = [u for u, r in (await members(c1)).items() if r == "owner"]
            assert all(ok(r) or forbidden(r) for r in replies), replies
            assert any(forbidden(r) for r in replies), replies
            # Both may be refused (each undid its own removal); never both carried out.
            assert len(owners) == 2 - sum(map(ok, replies)) >= 1, (owners, replies)


async def test_role_changes_reach_open_sockets_at_once(prod: Any) -> None:
    """Before the fix: a demoted (or removed) developer kept creating sessions on its open
    socket; only a new authentication picked up the member record."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    async with tenant_with(p, {"o": "owner", "d": "developer"}) as (tenant, c):
        create = {"type": "create_session", "agentType": "echo"}
        assert (await c["d"].request(create))["type"] == "session_created"

        assert ok(await manage(c["o"], "update", c["id:d"], "viewer"))
        assert forbidden(await c["d"].request(create)), "demotion applies at once"

        assert ok(await manage(c["o"], "update", c["id:d"], "developer"))
        assert (await c["d"].request(create))["type"] == "session_created", "so does promotion"

        # Removal: the token's own claim (viewer) applies again, as on a new authentication.
        assert ok(await manage(c["o"], "remove", c["id:d"]))
        assert forbidden(await c["d"].request(create))
        me = await c["d"].request(
            {"type": "authenticate", "token": p.token(c["id:d"], tenant, CLAIMED)}
        )
        assert me["identity"]["role"] == CLAIMED


async def test_a_member_demoted_to_guest_leaves_sessions_it_may_no_longer_read(prod: Any) -> None:
    """Before the fix: no `session_left` came; the demoted member's socket stayed subscribed to
    the owner's session (the subscription outlived the role that allowed it)."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    async with tenant_with(p, {"o": "owner", "d": "developer"}) as (_, c):
        owner, member = c["o"], c["d"]
        theirs = (await owner.request({"type": "create_session", "agentType": "echo"}))["session"]
        own = (await member.request({"type": "create_session", "agentType": "echo"}))["session"]
        for session in (theirs, own):
            snapshot = await member.request({"type": "join_session", "sessionId": session["id"]})
            assert snapshot["type"] == "state_snapshot", snapshot
        assert ok(await manage(owner, "update", c["id:d"], "guest"))
        left = await member.recv_until("session_left")
        assert left[-1]["sessionId"] == theirs["id"] and "id" not in left[-1]
        joined = await owner.request({"type": "join_session", "sessionId": theirs["id"]})
        assert joined["type"] == "state_snapshot", joined
        turn = {"type": "run_turn", "sessionId": theirs["id"], "text": "not for guests"}
        assert (await owner.request(turn))["type"] == "turn_started"
        await owner.recv_until("turn_complete", 15)
        pong = await member.request({"type": "ping"})
        assert pong["type"] == "pong"
        assert "not for guests" not in str(member.received)
        # Nor do lifecycle events of others' sessions reach it any more.
        later = await owner.request({"type": "create_session", "agentType": "echo"})
        assert later["type"] == "session_created"
        assert (await member.request({"type": "ping"}))["type"] == "pong"
        assert later["session"]["id"] not in str(member.received)
        # Its own session it still follows.
        mine = {"type": "run_turn", "sessionId": own["id"], "text": "still mine"}
        assert (await owner.request(mine))["type"] == "turn_started"
        done = await member.recv_until("turn_complete", 15)
        assert done[-1]["finalText"] == "still mine"


# ----- property: random concurrent sequences ----------------------------------------------------

ACTORS = ["o1", "o2", "a1", "a2"]
TARGETS = [*ACTORS, "x", "y"]
operation = st.tuples(
    st.sampled_from(ACTORS),
    st.sampled_from(["add", "update", "remove"]),
    st.sampled_from(TARGETS),
    st.sampled_from(ROLES),
)
batches = st.lists(st.lists(operation, min_size=1, max_size=3), min_size=1, max_size=6)


def role_after(table: dict[str, str], action: str, target: str, role: str) -> dict[str, str]:
    changed = dict(table)
    if action == "remove":
        changed.pop(target, None)
    else:
        changed[target] = role
    return changed


def allowed(table: dict[str, str], actor: str, action: str, target: str, role: str) -> bool:
    """The rule of PROTOCOL.md §5 on a member table (user → role; absent → the claim)."""
    level = LEVEL[table.get(actor, CLAIMED)]
    if level < LEVEL["admin"]:
        return False
    if action in ("update", "remove") and target not in table:
        return False  # INVALID_MESSAGE: not a member
    current = table.get(target)
    if current is not None and LEVEL[current] > level:
        return False
    if action != "remove" and LEVEL[role] > level:
        return False
    after = role_after(table, action, target, role)
    return "owner" in after.values()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_random_concurrent_member_changes_keep_an_owner_and_never_escalate(
    prod: Any, data: st.DataObject
) -> None:
    """Random sequences of concurrent `manage_members` from owners and admins: the tenant never
    has zero owners, and no actor ever raises anyone above its own level, nor changes anyone
    above it. A batch of one is checked exactly against the rule.

    Before the fix: sequences with an admin demoting an owner, or two owners removing each other
    at once, failed."""
    p = _shared_gateway(prod)
    plan = data.draw(batches)
    initial = {"o1": "owner", "o2": "owner", "a1": "admin", "a2": "admin"}
    async with tenant_with(p, initial) as (_, c):
        names = {c[f"id:{n}"]: n for n in ACTORS}
        ids = {n: c[f"id:{n}"] for n in ACTORS} | {"x": new_user(), "y": new_user()}
        names.update({ids["x"]: "x", ids["y"]: "y"})
        table = dict(initial)
        for batch in plan:
            replies = await at_once(
                [
                    (c[actor], change(action, ids[target], role))
                    for actor, action, target, role in batch
                ]
            )
            after = {names[u]: r for u, r in (await members(c["_boot"])).items()}
            assert "owner" in after.values(), (batch, replies, after)
            # Any level an actor held during the batch bounds what it may have done.
            held = {a: {LEVEL[t.get(a, CLAIMED)] for t in (table, after)} for a in ACTORS}
            for index, ((actor, action, target, role), reply) in enumerate(
                zip(batch, replies, strict=True)
            ):
                for _, act, t, r in batch:
                    if t == actor and act != "remove":
                        held[actor].add(LEVEL[r])
                if not ok(reply):
                    assert reply.get("code") in ("FORBIDDEN", "INVALID_MESSAGE"), reply
                    continue
                top = max(held[actor])
                if action != "remove":
                    assert LEVEL[role] <= top, ("raised above own level", actor, role, table)
                previous = table.get(target)
                raced = any(op[2] == target for i, op in enumerate(batch) if i != index)
                if previous is not None and not raced:
                    assert LEVEL[previous] <= top, ("changed a member above it", actor, table)
            if len(batch) == 1:
                actor, action, target, role = batch[0]
                expected = allowed(table, actor, action, target, role)
                assert ok(replies[0]) == expected, (table, batch[0], replies[0])
                if expected:
                    assert after == role_after(table, action, target, role), (table, after)
            table = after


def _shared_gateway(prod: Any) -> Prod:
    """One production gateway for all of hypothesis's examples of a test run (the `prod` factory
    is function-scoped; starting a process per example would dominate the run)."""
    if not hasattr(prod, "shared"):
        prod.shared = prod(WS_RATE_LIMIT="100000/10s")
    return prod.shared
