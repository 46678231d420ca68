"""Upstream outages (issue: survive faults): each row of docs/FAILURES.md that concerns Podium,
Unison or Ensemble, against real processes and the stand-ins' fault switches."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx

from tests.conftest import LOCAL_KEY, Stack, client
from tests.integration.test_sessions import join_ready, new_session


def slow(deltas: int, interval_ms: int) -> str:
    return json.dumps({"deltas": deltas, "interval_ms": interval_ms})


async def test_podium_503_on_activation_then_recovers(fault_stack: Stack, fault_gateway) -> None:
    gw = fault_gateway()
    async with client(gw.ws_url) as c:
        session_id = await new_session(c)
        fault_stack.fault("podium", "unavailable")
        started = time.monotonic()
        snapshot = await c.request({"type": "join_session", "sessionId": session_id})
        assert snapshot["type"] == "state_snapshot"
        frames = await c.recv_until(lambda f: f.get("code") == "UPSTREAM_UNAVAILABLE")
        assert frames[-1]["id"] == snapshot["id"]
        assert time.monotonic() - started < 5
        states = [f["state"] for f in c.received if f.get("type") == "session_state"]
        assert states[-1] == "error"
        assert (await c.request({"type": "ping"}))["type"] == "pong", "socket stays open"

        fault_stack.fault("podium", "ok")
        await asyncio.sleep(10.5)  # the breaker opened after the failures; it half-opens now
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "back again"})
        done = await c.recv_until("turn_complete")
        assert done[-1]["finalText"] == "back again"


async def test_podium_hanging_on_activation_fails_within_the_call_timeout(
    fault_stack: Stack, fault_gateway
) -> None:
    gw = fault_gateway()
    async with client(gw.ws_url) as c:
        session_id = await new_session(c)
        fault_stack.fault("podium", "hang")
        try:
            started = time.monotonic()
            await c.send({"type": "join_session", "sessionId": session_id, "id": "j"})
            frames = await c.recv_until(lambda f: f.get("code") == "UPSTREAM_UNAVAILABLE", 20)
            elapsed = time.monotonic() - started
            assert frames[-1]["id"] == "j"
            assert elapsed < 12, f"read timeout is 10 s; took {elapsed:.1f}s"
            assert (await c.request({"type": "ping"}))["type"] == "pong"
        finally:
            fault_stack.fault("podium", "ok")


async def test_runtime_socket_drop_mid_turn_loses_nothing(
    fault_stack: Stack, fault_gateway
) -> None:
    gw = fault_gateway()
    async with client(gw.ws_url) as c, httpx.AsyncClient() as http:
        session_id = await new_session(c, "slow")
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(80, 10)})
        await c.recv_until(lambda f: f.get("type") == "text_delta" and "d5 " in f["text"])
        dropped = await http.post(
            f"{fault_stack.podium_url}/_local/drop-runtime-sockets",
            headers={"Authorization": f"Bearer {LOCAL_KEY}"},
        )
        assert dropped.json() == {"dropped": 1}
        frames = await c.recv_until("turn_complete", timeout=30)
    seqs = [f["seq"] for f in c.received if "seq" in f]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap in seq"
    text = "".join(f["text"] for f in c.received if f.get("type") == "text_delta")
    assert text == frames[-1]["finalText"] == "".join(f"d{i} " for i in range(1, 81))


async def test_podium_killed_mid_turn_and_restarted(fault_stack: Stack, fault_gateway) -> None:
    gw = fault_gateway()
    async with client(gw.ws_url) as c:
        session_id = await new_session(c, "echo")
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "before the crash"})
        await c.recv_until("turn_complete")
        await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(400, 10)})
        await c.recv_until("text_delta")

        fault_stack.stop("podium", signal.SIGKILL)
        await asyncio.sleep(0.5)
        fault_stack.start("podium")
        frames = await c.recv_until("turn_error", timeout=45)
        assert frames[-1]["code"] == "UPSTREAM_UNAVAILABLE"
        assert (await c.request({"type": "ping"}))["type"] == "pong"

        await c.request({"type": "leave_session", "sessionId": session_id})
        await join_ready(c, session_id)
        history = await c.request({"type": "get_history", "sessionId": session_id})
        texts = [m["text"] for m in history["messages"]]
        assert texts[:2] == ["before the crash", "before the crash"], "history up to the crash"
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "and after"})
        done = await c.recv_until("turn_complete", timeout=20)
        assert done[-1]["finalText"] == "and after"


async def test_unison_down_reads_from_cache_writes_fail_then_recovers(
    fault_stack: Stack, fault_gateway
) -> None:
    gw = fault_gateway()
    async with client(gw.ws_url) as c:
        session_id = await new_session(c, name="kept")
        listing = await c.request({"type": "list_sessions"})
        assert session_id in [s["id"] for s in listing["sessions"]]
        fault_stack.fault("unison", "unavailable")
        try:
            listing = await c.request({"type": "list_sessions"})
            assert session_id in [s["id"] for s in listing["sessions"]], "served from cache"
            await asyncio.sleep(5.5)  # past the fresh-cache window: the stale copy is used
            snapshot = await c.request({"type": "join_session", "sessionId": session_id})
            assert snapshot["type"] == "state_snapshot"
            create = await c.request({"type": "create_session", "agentType": "echo"})
            assert create["code"] == "UPSTREAM_UNAVAILABLE"
            rename = await c.request(
                {"type": "rename_session", "sessionId": session_id, "name": "changed"}
            )
            assert rename["code"] == "UPSTREAM_UNAVAILABLE"
        finally:
            fault_stack.fault("unison", "ok")
        await asyncio.sleep(10.5)  # breaker half-opens
        listing = await c.request({"type": "list_sessions"})
        names = {s["id"]: s["name"] for s in listing["sessions"]}
        assert names == {session_id: "kept"}, "nothing half-written"
        renamed = await c.request(
            {"type": "rename_session", "sessionId": session_id, "name": "changed"}
        )
        assert renamed["session"]["name"] == "changed"


async def test_ensemble_down_degrades_health_only(fault_stack: Stack, fault_gateway) -> None:
    gw = fault_gateway()
    async with httpx.AsyncClient() as http, client(gw.ws_url) as c:
        fault_stack.fault("ensemble", "unavailable")
        try:
            deadline = time.monotonic() + 8
            body = {}
            while time.monotonic() < deadline:
                response = await http.get(f"{gw.url}/health")
                body = response.json()
                if body["status"] == "degraded":
                    break
                await asyncio.sleep(0.2)
            assert response.status_code == 200 and body["status"] == "degraded"
            assert body["dependencies"]["ensemble"]["ok"] is False
            assert body["dependencies"]["podium"]["ok"] is True
            session_id = await new_session(c)
            await join_ready(c, session_id)
            await c.request({"type": "run_turn", "sessionId": session_id, "text": "unaffected"})
            assert (await c.recv_until("turn_complete"))[-1]["finalText"] == "unaffected"
        finally:
            fault_stack.fault("ensemble", "ok")


async def test_health_answers_fast_when_every_upstream_hangs(
    fault_stack: Stack, fault_gateway
) -> None:
    gw = fault_gateway()
    for service in ("podium", "ensemble", "unison"):
        fault_stack.fault(service, "hang")
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(30):  # across at least one probe round (every 5 s, 0.5 s timeout)
                started = time.monotonic()
                response = await http.get(f"{gw.url}/health", timeout=5)
                assert time.monotonic() - started < 1.0
                body = response.json()
                if body["status"] == "degraded" and not any(
                    d["ok"] for d in body["dependencies"].values()
                ):
                    break
                await asyncio.sleep(0.3)
            assert body["status"] == "degraded"
            assert not any(d["ok"] for d in body["dependencies"].values())
    finally:
        for service in ("podium", "ensemble", "unison"):
            fault_stack.fault(service, "ok")


async def test_circuit_breaker_fails_fast_then_probes_and_closes(
    fault_stack: Stack, fault_gateway
) -> None:
    gw = fault_gateway()
    async with client(gw.ws_url) as c:
        fault_stack.fault("unison", "unavailable")
        try:
            for _ in range(2):  # 3 tries each: the breaker opens after 5 consecutive failures
                error = await c.request({"type": "list_sessions"})
                assert error["code"] == "UPSTREAM_UNAVAILABLE"
            started = time.monotonic()
            error = await c.request({"type": "list_sessions"})
            assert error["code"] == "UPSTREAM_UNAVAILABLE"
            assert time.monotonic() - started < 0.05, "open breaker: no call is made"
        finally:
            fault_stack.fault("unison", "ok")
        still_open = await c.request({"type": "list_sessions"})
        assert still_open["code"] == "UPSTREAM_UNAVAILABLE", "open for 10 s even when healthy"
        await asyncio.sleep(10.2)
        listing = await c.request({"type": "list_sessions"})
        assert listing["type"] == "session_list", "half-open probe succeeded and closed it"
