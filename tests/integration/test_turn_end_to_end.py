"""The walking skeleton's promise: a turn streams end to end through real processes."""

from __future__ import annotations

import httpx

from tests.conftest import Gateway, Stack, client, gateway_process, new_stack


async def _echo_turn(gateway: Gateway, text: str) -> tuple[str, list[dict]]:
    async with client(gateway.ws_url) as c:
        created = await c.request({"type": "create_session", "agentType": "echo", "name": "t"})
        assert created["type"] == "session_created"
        session = created["session"]
        assert session["status"] == "inactive" and session["agentType"] == "echo"
        session_id = session["id"]

        snapshot = await c.request({"type": "join_session", "sessionId": session_id})
        assert snapshot["type"] == "state_snapshot"
        assert snapshot["sessionId"] == session_id and snapshot["gap"] is False
        await c.recv_until(lambda f: f.get("type") == "session_state" and f["state"] == "ready")

        await c.send({"type": "run_turn", "sessionId": session_id, "text": text, "id": "turn-1"})
        frames = await c.recv_until("turn_complete")
        return session_id, frames


async def test_echo_turn_streams_in_order(gateway: Gateway) -> None:
    text = "Hello there, gateway! Streaming   works word by word."
    _, frames = await _echo_turn(gateway, text)
    events = [f for f in frames if "seq" in f]
    seqs = [f["seq"] for f in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must grow by exactly 1"

    started = next(f for f in frames if f["type"] == "turn_started")
    assert started["id"] == "turn-1", "the requester's turn_started echoes its id"
    deltas = [f["text"] for f in frames if f["type"] == "text_delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == text
    complete = frames[-1]
    assert complete["finalText"] == text
    assert complete["stopReason"] == "end_turn"
    assert all(f["turnId"] == started["turnId"] for f in frames if f["type"] == "text_delta")


async def test_history_after_turn(gateway: Gateway) -> None:
    text = "remember me"
    session_id, _ = await _echo_turn(gateway, text)
    async with client(gateway.ws_url) as c:
        history = await c.request({"type": "get_history", "sessionId": session_id})
    assert history["type"] == "history"
    assert [(m["role"], m["text"]) for m in history["messages"]] == [
        ("user", text),
        ("assistant", text),
    ]
    assert history["hasMore"] is False


async def test_health_reports_upstreams_ok(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(50):  # the first probe round may still be under way
            body = (await http.get(f"{gateway.url}/health")).json()
            if body["status"] == "ok":
                break
    assert body["status"] == "ok"
    expected = {"podium": True, "ensemble": True, "unison": True}
    if gateway.env.get("REDIS_URL"):  # a fleet (DIMINUENDO_TEST_FLEET=2) reports its Valkey too
        expected["valkey"] = True
    assert {name: dep["ok"] for name, dep in body["dependencies"].items()} == expected
    assert body["devMode"] is True
    assert set(body["metrics"]) >= {"connections", "activeSessions", "rssBytes", "eventsOut"}


async def test_sessions_and_history_survive_a_stack_restart(tmp_path) -> None:
    stack: Stack = new_stack(tmp_path / "stack")
    stack.start()
    try:
        gw = gateway_process(stack, tmp_path)
        gw.start()
        try:
            session_id, _ = await _echo_turn(gw, "persist this")
        finally:
            gw.stop()
    finally:
        stack.stop()

    stack.start()  # same data dir, same ports
    try:
        gw = gateway_process(stack, tmp_path)
        gw.start()
        try:
            async with client(gw.ws_url) as c:
                listing = await c.request({"type": "list_sessions"})
                assert session_id in [s["id"] for s in listing["sessions"]]
                history = await c.request({"type": "get_history", "sessionId": session_id})
                assert [m["text"] for m in history["messages"]] == ["persist this"] * 2
        finally:
            gw.stop()
    finally:
        stack.stop()
