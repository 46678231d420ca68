"""Session behaviour a client relies on: lifecycle messages, replay without holes, waiting on a
question, idle deactivation, capacity, and runtime failures — all through real processes."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx

from tests.conftest import LOCAL_KEY, Client, Gateway, Stack, client


def slow(deltas: int, interval_ms: int) -> str:
    return json.dumps({"deltas": deltas, "interval_ms": interval_ms})


async def new_session(c: Client, agent: str = "echo", **fields) -> str:
    reply = await c.request({"type": "create_session", "agentType": agent, **fields})
    assert reply["type"] == "session_created", reply
    return reply["session"]["id"]


async def join_ready(c: Client, session_id: str, **fields) -> dict:
    snapshot = await c.request({"type": "join_session", "sessionId": session_id, **fields})
    assert snapshot["type"] == "state_snapshot", snapshot
    if snapshot["session"]["status"] != "ready":
        await c.recv_until(lambda f: f.get("type") == "session_state" and f["state"] == "ready")
    return snapshot


async def assistant_texts(c: Client, session_id: str) -> list[str]:
    """The assistant messages of the durable transcript, waiting (bounded) for the first one:
    a turn that outlived its gateway finishes in Podium a little later."""
    texts: list[str] = []
    for _ in range(100):
        history = await c.request({"type": "get_history", "sessionId": session_id})
        texts = [m["text"] for m in history["messages"] if m["role"] == "assistant"]
        if texts:
            break
        await asyncio.sleep(0.1)
    return texts


async def test_lifecycle_messages_and_tenant_broadcast(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as a, client(gateway.ws_url) as b:
        session_id = await new_session(a, name="first")
        seen = await b.recv_until("session_created")
        assert seen[-1]["session"]["id"] == session_id and "id" not in seen[-1]

        renamed = await a.request(
            {"type": "rename_session", "sessionId": session_id, "name": "second"}
        )
        assert renamed["type"] == "session_updated" and renamed["session"]["name"] == "second"
        assert (await b.recv_until("session_updated"))[-1]["session"]["name"] == "second"

        archived = await a.request({"type": "archive_session", "sessionId": session_id})
        assert archived == {
            "type": "session_archived",
            "sessionId": session_id,
            "id": archived["id"],
        }
        listing = await a.request({"type": "list_sessions"})
        assert session_id not in [s["id"] for s in listing["sessions"]]
        listing = await a.request({"type": "list_sessions", "includeArchived": True})
        assert session_id in [s["id"] for s in listing["sessions"]]
        assert (await a.request({"type": "unarchive_session", "sessionId": session_id}))[
            "type"
        ] == "session_unarchived"

        bad = await a.request({"type": "rename_session", "sessionId": session_id, "name": ""})
        assert bad["code"] == "INVALID_MESSAGE"

        deleted = await a.request({"type": "delete_session", "sessionId": session_id})
        assert deleted["type"] == "session_deleted"
        assert (await b.recv_until("session_deleted"))[-1]["sessionId"] == session_id
        gone = await a.request({"type": "join_session", "sessionId": session_id})
        assert gone["code"] == "SESSION_NOT_FOUND"


async def test_unknown_agent_type_is_named(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        error = await c.request({"type": "create_session", "agentType": "nope"})
        assert error["code"] == "INVALID_MESSAGE" and "nope" in error["message"]


async def test_rejoin_mid_turn_replays_exactly_what_was_missed(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        session_id = await new_session(c, "slow")
        snapshot = await join_ready(c, session_id)
        epoch = snapshot["epoch"]
        await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(60, 10)})
        seen = await c.recv_until(lambda f: f.get("type") == "text_delta" and f["seq"] > 8)
        last_seq = seen[-1]["seq"]
    await asyncio.sleep(0.2)  # the turn keeps running with nobody subscribed

    async with client(gateway.ws_url) as c:
        snapshot = await c.request(
            {"type": "join_session", "sessionId": session_id, "afterSeq": last_seq, "epoch": epoch}
        )
        assert snapshot["gap"] is False and snapshot["epoch"] == epoch
        assert snapshot["currentTurn"]["turnId"]
        rest = await c.recv_until("turn_complete", timeout=20)
    seqs = [f["seq"] for f in rest if "seq" in f]
    assert seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs))), "no duplicate, no hole"
    text = "".join(f["text"] for f in seen + rest if f.get("type") == "text_delta")
    assert text == rest[-1]["finalText"]


async def test_get_events_and_epoch_mismatch(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        session_id = await new_session(c)
        snapshot = await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "a b c"})
        done = await c.recv_until("turn_complete")
        events = await c.request({"type": "get_events", "sessionId": session_id, "afterSeq": 0})
        assert events["gap"] is False and events["epoch"] == snapshot["epoch"]
        assert [e["seq"] for e in events["events"]] == list(range(1, events["lastSeq"] + 1))
        assert events["lastSeq"] == done[-1]["seq"] or events["lastSeq"] > done[-1]["seq"]
        limited = await c.request(
            {"type": "get_events", "sessionId": session_id, "afterSeq": 2, "limit": 2}
        )
        assert [e["seq"] for e in limited["events"]] == [3, 4]
        other = await c.request(
            {"type": "get_events", "sessionId": session_id, "afterSeq": 0, "epoch": "old"}
        )
        assert other["gap"] is True and other["events"] == []


async def test_question_waits_for_the_answer(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        session_id = await new_session(c, "demo")
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "show me"})
        frames = await c.recv_until("question_requested", timeout=20)
        question = frames[-1]
        waiting = await c.recv_until(
            lambda f: f.get("type") == "session_state" and f["state"] == "waiting"
        )
        assert waiting[-1]["previous"] == "running"
        busy = await c.request({"type": "run_turn", "sessionId": session_id, "text": "again"})
        assert busy["code"] == "SESSION_BUSY"
        option = (question["questions"][0].get("options") or ["yes"])[0]
        ack = await c.request(
            {
                "type": "answer_question",
                "sessionId": session_id,
                "requestId": question["requestId"],
                "answers": {question["questions"][0]["id"]: option},
            }
        )
        assert ack["type"] == "ack" and ack["for"] == "answer_question"
        rest = await c.recv_until("turn_complete", timeout=20)
        rest += await c.recv_until(lambda f: f.get("state") == "ready")
    types = [f["type"] for f in rest]
    assert "approval_resolved" in types
    states = [f["state"] for f in rest if f["type"] == "session_state"]
    assert states[:1] == ["running"] and states[-1] == "ready"


async def test_stop_turn_cancels(gateway: Gateway) -> None:
    async with client(gateway.ws_url) as c:
        session_id = await new_session(c, "slow")
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(500, 10)})
        await c.recv_until("text_delta")
        ack = await c.request({"type": "stop_turn", "sessionId": session_id})
        assert ack["type"] == "ack"
        done = await c.recv_until("turn_complete")
        assert done[-1]["stopReason"] == "cancelled"
        text = "".join(f["text"] for f in c.received if f.get("type") == "text_delta")
        assert text == done[-1]["finalText"]


async def test_vanished_instance_ends_the_turn_with_an_error(
    gateway: Gateway, stack: Stack
) -> None:
    async with client(gateway.ws_url) as c, httpx.AsyncClient() as http:
        session_id = await new_session(c, "slow")
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(500, 10)})
        await c.recv_until("text_delta")
        auth = {"Authorization": f"Bearer {LOCAL_KEY}"}
        record = await http.get(
            f"{stack.unison_url}/api/v1/kv/{quote('tenant:dev/sessions', safe='')}/{session_id}",
            headers=auth,
        )
        instance_id = record.json()["value"]["instanceId"]
        await http.delete(f"{stack.podium_url}/api/v1/instances/{instance_id}", headers=auth)
        frames = await c.recv_until("turn_error", timeout=40)
        assert frames[-1]["code"] == "UPSTREAM_UNAVAILABLE"
        await c.recv_until(lambda f: f.get("type") == "session_state" and f["state"] == "error")
        pong = await c.request({"type": "ping"})
        assert pong["type"] == "pong", "the client socket stays open"
        # A new join activates again with a fresh instance.
        await c.request({"type": "leave_session", "sessionId": session_id})
        await join_ready(c, session_id)


async def test_idle_sessions_are_deactivated_and_rejoin_starts_a_new_epoch(start_gateway) -> None:
    gw = start_gateway(SESSION_IDLE_TIMEOUT="1")
    async with client(gw.ws_url) as c:
        session_id = await new_session(c)
        first = await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "keep me"})
        await c.recv_until("turn_complete")
        await c.request({"type": "leave_session", "sessionId": session_id})
        for _ in range(50):
            await asyncio.sleep(0.1)
            listing = await c.request({"type": "list_sessions"})
            status = next(s["status"] for s in listing["sessions"] if s["id"] == session_id)
            if status == "inactive":
                break
        assert status == "inactive"
        second = await join_ready(c, session_id, afterSeq=3, epoch=first["epoch"])
        assert second["epoch"] != first["epoch"] and second["gap"] is True
        history = await c.request({"type": "get_history", "sessionId": session_id})
        assert [m["text"] for m in history["messages"]] == ["keep me", "keep me"]


async def test_capacity_deactivates_idle_sessions_first(start_gateway) -> None:
    gw = start_gateway(MAX_ACTIVE_SESSIONS="2")
    async with client(gw.ws_url) as c:
        ids = [await new_session(c) for _ in range(3)]
        await join_ready(c, ids[0])
        await join_ready(c, ids[1])
        full = await c.request({"type": "join_session", "sessionId": ids[2]})
        assert full["type"] == "state_snapshot"
        error = await c.recv_until(lambda f: f.get("code") == "CAPACITY_EXCEEDED")
        assert error[-1]["id"] == full["id"]
        await c.request({"type": "leave_session", "sessionId": ids[0]})
        await c.request({"type": "leave_session", "sessionId": ids[2]})
        await join_ready(c, ids[2])  # ids[0] is idle now and makes room
        listing = await c.request({"type": "list_sessions"})
        status = {s["id"]: s["status"] for s in listing["sessions"]}
        assert status[ids[0]] == "inactive" and status[ids[2]] == "ready"
