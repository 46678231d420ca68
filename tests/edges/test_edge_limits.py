"""The edges' long-lived streams under the gateway's own admission and token lifetime (issue 17
follow-up, PROTOCOL.md §3 and §13, docs/EDGES.md "Limits"): an AG-UI run, an MCP turn-following
tool call and an A2A streamed task each hold a place toward `MAX_CONNECTIONS_PER_USER` (a second
one of the same user is refused in the protocol's own shape) and end at `exp` +
`AUTH_CLOCK_LEEWAY` with an error, while the turn goes on in the runtime.

Each runs against a production gateway (`prod`: real JWKS, real RS256 tokens) and the local
stack, driven by the protocol's own client where the other edge tests are.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

pytest.importorskip("ag_ui")
pytest.importorskip("mcp")
pytest.importorskip("a2a")

from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest, TaskState
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict

from tests.edges.agui_client import run, run_input
from tests.edges.test_a2a import A2A
from tests.edges.test_mcp import mcp_client

pytestmark = pytest.mark.timeout(90)

LEEWAY_S = 1
LIFETIME_S = 4  # of the short tokens: `exp` is this far ahead when minted
LATE_S = 2.5  # how late after its due time a deadline may be acted on (a loaded machine)
# The `slow` turn the streams follow: still running at expiry. It starts after the token is
# minted and lasts longer than the latest end the tests accept (`exp` + leeway + LATE_S, at
# most 7.5 s after minting), so it can only have ended first when that bound failed anyway.
DELTA_MS = 20
DELTAS = int((LIFETIME_S + LEEWAY_S + LATE_S + 0.5) * 1000 / DELTA_MS)  # 400: an 8 s turn
SLOW = json.dumps({"deltas": DELTAS, "interval_ms": DELTA_MS})
ONE_PER_USER = {"EDGE_ADAPTERS": "agui,mcp,a2a", "MAX_CONNECTIONS_PER_USER": "1"}
EXPIRING = {"EDGE_ADAPTERS": "agui,mcp,a2a", "AUTH_CLOCK_LEEWAY": str(LEEWAY_S)}


def short_token(p: Any) -> tuple[str, int]:
    exp = int(time.time()) + LIFETIME_S
    return p.token(exp=exp), exp


def assert_ended_at_expiry(ended_at: float, exp: int) -> None:
    assert exp + LEEWAY_S - 0.1 <= ended_at <= exp + LEEWAY_S + LATE_S, ended_at - exp


async def new_session(http: httpx.AsyncClient, agent_type: str = "slow") -> str:
    created = await http.post("/api/threads", json={"agentType": agent_type})
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def turn_goes_on(p: Any, session_id: str) -> None:
    """The turn the stream followed was not stopped: on /ws (a fresh token) it completes."""
    async with p.client(p.token()) as ws:
        joined = await ws.request({"type": "join_session", "sessionId": session_id})
        assert joined["type"] == "state_snapshot", joined
        end = (await ws.recv_until("turn_complete", timeout=30))[-1]
    assert end["stopReason"] != "cancelled", end
    assert f"d{DELTAS} " in end["finalText"], end


# ----- AG-UI -----------------------------------------------------------------------------------


@asynccontextmanager
async def agui_run_open(http: httpx.AsyncClient, session_id: str) -> AsyncIterator[None]:
    """An AG-UI run of `session_id`, open (its first events read) for the block."""
    body = run_input(f"thread-{uuid.uuid4().hex[:8]}", "run-1", SLOW)
    async with http.stream("POST", f"/agui/threads/{session_id}", json=body) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        while not (await anext(lines)).startswith("data:"):
            pass
        yield


async def test_an_agui_run_counts_toward_the_user_cap(prod: Any) -> None:
    """Before the fix: the second run was accepted (200, a stream) while the first held the
    user's only place."""
    p = prod(**ONE_PER_USER)
    async with p.http(p.token()) as http:
        first, second = await new_session(http), await new_session(http)
        async with agui_run_open(http, first):
            refused = await http.post(f"/agui/threads/{second}", json=run_input("t", "r", SLOW))
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "QUOTA_EXCEEDED"


async def test_an_agui_run_ends_at_exp_plus_leeway(prod: Any) -> None:
    """Before the fix: the run went on after `exp` + leeway, to the end of the turn."""
    p = prod(**EXPIRING)
    token, exp = short_token(p)
    async with p.http(token) as http:
        session_id = await new_session(http)
        result = await run(http, f"/agui/threads/{session_id}", run_input("t", "r", SLOW))
        ended_at = time.time()
    assert result.last.type.value == "RUN_ERROR", result.types
    assert result.last.code == "NOT_AUTHENTICATED"
    assert_ended_at_expiry(ended_at, exp)
    await turn_goes_on(p, session_id)


# ----- MCP -------------------------------------------------------------------------------------


@asynccontextmanager
async def mcp_turn_running(p: Any, token: str, session_id: str) -> AsyncIterator[asyncio.Task]:
    """A `run_turn` tool call, its first progress notification received, for the block."""
    progressed = asyncio.Event()

    async def on_progress(*_: Any) -> None:
        progressed.set()

    async with mcp_client(p.gw.url, token) as mcp:
        call = asyncio.create_task(
            mcp.call_tool(
                "run_turn", {"session_id": session_id, "text": SLOW}, progress_callback=on_progress
            )
        )
        await asyncio.wait_for(progressed.wait(), 20)
        try:
            yield call
        finally:
            call.cancel()


async def test_an_mcp_streamed_tool_call_counts_toward_the_user_cap(prod: Any) -> None:
    """Before the fix: the second run_turn was accepted (it started a turn) while the first
    held the user's only place."""
    p = prod(**ONE_PER_USER)
    token = p.token()
    async with p.http(token) as http:
        first, second = await new_session(http), await new_session(http)
    async with mcp_turn_running(p, token, first), mcp_client(p.gw.url, token) as other:
        refused = await other.call_tool("run_turn", {"session_id": second, "text": "hi"})
        assert refused.is_error
        assert refused.structured_content["code"] == "QUOTA_EXCEEDED", refused.content
        # Short tool calls are not streams: they still answer.
        listed = await other.call_tool("list_sessions", {})
        assert not listed.is_error


async def test_an_mcp_streamed_tool_call_ends_at_exp_plus_leeway(prod: Any) -> None:
    """Before the fix: the tool call went on after `exp` + leeway, to the end of the turn."""
    p = prod(**EXPIRING)
    token, exp = short_token(p)
    async with p.http(token) as http:
        session_id = await new_session(http)
    async with mcp_client(p.gw.url, token) as mcp:
        await mcp.list_tools()  # the client checks results against these: read them while valid
        result = await mcp.call_tool("run_turn", {"session_id": session_id, "text": SLOW})
        ended_at = time.time()
    assert result.is_error
    assert result.structured_content["code"] == "NOT_AUTHENTICATED", result.content
    assert_ended_at_expiry(ended_at, exp)
    await turn_goes_on(p, session_id)


# ----- A2A -------------------------------------------------------------------------------------


def a2a_message(session_id: str) -> SendMessageRequest:
    msg = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=SLOW)])
    msg.context_id = session_id
    return SendMessageRequest(message=msg)


async def test_an_a2a_stream_counts_toward_the_user_cap(prod: Any) -> None:
    """Before the fix: the second message/stream was accepted (a task started) while the
    first held the user's only place."""
    p = prod(**ONE_PER_USER)
    token = p.token()
    async with p.http(token) as http:
        first, second = await new_session(http), await new_session(http)
    edge = A2A(p.gw.url, token)
    try:
        client = await edge.client()
        stream = client.send_message(a2a_message(first))
        async for event in stream:
            if event.HasField("artifact_update"):
                break
        with pytest.raises(A2AError) as refused:
            async for _ in client.send_message(a2a_message(second)):
                pass
        assert refused.value.data == {"code": "QUOTA_EXCEEDED"}, refused.value
        await stream.aclose()
    finally:
        await edge.aclose()


async def test_an_a2a_stream_ends_at_exp_plus_leeway(prod: Any) -> None:
    """Before the fix: the stream went on after `exp` + leeway, to the end of the turn."""
    p = prod(**EXPIRING)
    token, exp = short_token(p)
    async with p.http(token) as http:
        session_id = await new_session(http)
    edge = A2A(p.gw.url, token)
    try:
        client = await edge.client()
        events = [event async for event in client.send_message(a2a_message(session_id))]
        ended_at = time.time()
    finally:
        await edge.aclose()
    last = events[-1].status_update.status
    assert last.state == TaskState.TASK_STATE_FAILED, events[-1]
    details = MessageToDict(last.message.parts[1].data)
    assert details["code"] == "NOT_AUTHENTICATED", details
    assert_ended_at_expiry(ended_at, exp)
    await turn_goes_on(p, session_id)
