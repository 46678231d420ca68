"""AG-UI edge end to end (docs/EDGES.md): real gateways and the local stack, driven by an AG-UI
client built on the SDK's event models (tests/edges/agui_client.py; the Python SDK has no client).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

pytest.importorskip("ag_ui")

from ag_ui.core import EventType

from diminuendo.local.agents import DEMO_FAIL, DEMO_PERMISSION
from tests.conftest import Gateway, client
from tests.edges.agui_client import Run, run, run_input, verify_run

pytestmark = pytest.mark.timeout(60)


EDGE = "agui"  # the adapter of `edge_gateway` (tests/edges/conftest.py)


@pytest.fixture
async def http(edge_gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge_gateway.url, timeout=20) as c:
        yield c


def thread() -> str:
    return f"thread-{uuid.uuid4().hex[:8]}"


def session_of(result: Run) -> str:
    return result.events[1].snapshot["sessionId"]


async def test_echo_runs_on_a_thread_the_client_names(http: httpx.AsyncClient) -> None:
    thread_id = thread()
    first = await run(http, "/agui/echo", run_input(thread_id, "run-1", "hello agui world"))
    verify_run(first)
    assert first.text == "hello agui world"
    assert first.last.type.value == "RUN_FINISHED" and first.last.outcome is None
    assert (first.events[0].thread_id, first.events[0].run_id) == (thread_id, "run-1")
    (snapshot,) = first.of(EventType.MESSAGES_SNAPSHOT)
    assert [(m.role, m.content) for m in snapshot.messages][-2:] == [
        ("user", "hello agui world"),
        ("assistant", "hello agui world"),
    ]
    assert all(seq is not None for e, seq in zip(first.events, first.seqs, strict=True)
               if e.type.value == "TEXT_MESSAGE_CONTENT")  # fmt: skip

    second = await run(http, "/agui/echo", run_input(thread_id, "run-2", "again"))
    assert session_of(second) == session_of(first)  # the thread is bound to its session
    assert second.text == "again"
    assert min(s for s in second.seqs if s) > max(s for s in first.seqs if s)


async def test_demo_question_is_an_interrupt_and_the_resume_answers_it(
    http: httpx.AsyncClient,
) -> None:
    thread_id = thread()
    asked = await run(http, "/agui/demo", run_input(thread_id, "run-q", "take notes"))
    verify_run(asked)
    kinds = set(asked.types())
    assert {"REASONING_MESSAGE_CONTENT", "TOOL_CALL_ARGS", "TOOL_CALL_RESULT", "STEP_STARTED",
            "STATE_DELTA", "CUSTOM"} <= kinds  # fmt: skip
    (interrupt,) = asked.last.outcome.interrupts
    assert interrupt.reason == "question" and interrupt.message == "Keep the notes file?"
    assert interrupt.response_schema["properties"]["q1"]["enum"] == ["keep", "discard"]

    resume = [{"interruptId": interrupt.id, "status": "resolved", "payload": {"q1": "keep"}}]
    answered = await run(http, "/agui/demo", run_input(thread_id, "run-a", None, resume=resume))
    verify_run(answered)
    assert session_of(answered) == session_of(asked)
    assert "you answered keep" in answered.text
    assert answered.last.type.value == "RUN_FINISHED" and answered.last.outcome is None
    assert answered.last.usage[0].output_tokens > 0

    again = await run_status(http, thread_id, resume)
    assert again.status_code == 409 and again.json()["error"]["code"] == "INVALID_STATE"


async def run_status(http: httpx.AsyncClient, thread_id: str, resume: list) -> httpx.Response:
    return await http.post("/agui/demo", json=run_input(thread_id, "run-x", None, resume=resume))


async def test_permission_refused_through_the_resume(http: httpx.AsyncClient) -> None:
    thread_id = thread()
    asked = await run(http, "/agui/demo", run_input(thread_id, "run-p", DEMO_PERMISSION))
    (interrupt,) = asked.last.outcome.interrupts
    assert interrupt.reason == "permission" and interrupt.metadata["toolName"] == "bash"
    resume = [{"interruptId": interrupt.id, "status": "resolved", "payload": {"approved": False}}]
    refused = await run(http, "/agui/demo", run_input(thread_id, "run-r", None, resume=resume))
    verify_run(refused)
    assert "Permission refused" in refused.text


async def test_a_runtime_error_ends_the_run_with_run_error(http: httpx.AsyncClient) -> None:
    failed = await run(http, "/agui/demo", run_input(thread(), "run-f", DEMO_FAIL))
    verify_run(failed)
    assert failed.last.type.value == "RUN_ERROR"
    assert failed.last.code == "UPSTREAM_ERROR" and "failed on request" in failed.last.message


async def test_dropping_the_request_cancels_the_turn_seen_on_ws(
    http: httpx.AsyncClient, edge_gateway: Gateway
) -> None:
    """AG-UI's abort is the client dropping the request: the turn stops, and a /ws client
    joined to the same session sees it end as cancelled."""
    created = (await http.post("/api/threads", json={"agentType": "slow"})).json()
    sid = created["id"]
    async with client(edge_gateway.ws_url) as ws:
        await ws.request({"type": "join_session", "sessionId": sid})
        body = run_input(sid, "run-c", '{"deltas": 500, "interval_ms": 20}')
        partial = await run(http, f"/agui/threads/{sid}", body, stop_after=8)
        assert "TEXT_MESSAGE_CONTENT" in partial.types()
        frames = await ws.recv_until("turn_complete", timeout=10)
    started = next(f for f in frames if f["type"] == "turn_started")
    assert started["clientTurnId"] == "run-c"
    assert frames[-1]["stopReason"] == "cancelled"


async def test_ws_and_agui_share_one_seq_stream(
    http: httpx.AsyncClient, edge_gateway: Gateway
) -> None:
    """A session created on /ws runs a turn through AG-UI; the /ws client sees the same events
    with the same seqs the AG-UI stream carries as SSE ids."""
    async with client(edge_gateway.ws_url) as ws:
        sid = (await ws.request({"type": "create_session", "agentType": "echo"}))["session"]["id"]
        await ws.request({"type": "join_session", "sessionId": sid})
        result = await run(http, f"/agui/threads/{sid}", run_input(sid, "run-s", "one two three"))
        frames = await ws.recv_until("turn_complete")
    by_seq = {f["seq"]: f for f in frames if "seq" in f}
    text_seqs = [s for e, s in zip(result.events, result.seqs, strict=True)
                 if e.type.value == "TEXT_MESSAGE_CONTENT"]  # fmt: skip
    assert text_seqs and all(by_seq[s]["type"] == "text_delta" for s in text_seqs)
    assert "".join(by_seq[s]["text"] for s in text_seqs) == result.text == "one two three"

    # … and the other way round: the AG-UI session replays on /ws from seq 0.
    thread_id = thread()
    first = await run(http, "/agui/echo", run_input(thread_id, "run-t", "replayed"))
    async with client(edge_gateway.ws_url) as ws:
        reply = await ws.request(
            {"type": "join_session", "sessionId": session_of(first), "afterSeq": 0}
        )
        frames = await ws.recv_until("turn_complete")
    assert reply["type"] == "state_snapshot"
    replayed = "".join(f["text"] for f in frames if f["type"] == "text_delta")
    assert replayed == "replayed"


async def test_bad_input_gets_a_documented_error(http: httpx.AsyncClient) -> None:
    image = run_input("t", "r", None)
    image["messages"] = [
        {"id": "m", "role": "user",
         "content": [{"type": "image", "source": {"type": "url", "value": "https://x/y.png"}}]}
    ]  # fmt: skip
    cases = [
        ("/agui/echo", b"{not json", 400, "INVALID_MESSAGE"),
        ("/agui/echo", b'{"threadId": "t"}', 400, "INVALID_MESSAGE"),
        ("/agui/echo", httpx_json(run_input("t", "r", None)), 400, "INVALID_MESSAGE"),
        ("/agui/nosuchagent", httpx_json(run_input(thread(), "r", "x")), 400, "INVALID_MESSAGE"),
        ("/agui/threads/ses_nope", httpx_json(run_input("t", "r", "x")), 404, "SESSION_NOT_FOUND"),
        ("/agui/echo", httpx_json(run_input("t" * 200, "r", "x")), 400, "INVALID_MESSAGE"),
        ("/agui/echo", httpx_json(image), 400, "INVALID_MESSAGE"),
    ]
    for path, body, status, code in cases:
        response = await http.post(path, content=body, headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), path


def httpx_json(body: dict) -> bytes:
    return json.dumps(body).encode()


async def test_identity_and_isolation(prod) -> None:
    """Tenant B cannot see or drive tenant A's session through AG-UI; a viewer cannot start a
    run; no token, no run."""
    p = prod(EDGE_ADAPTERS="agui")
    alice, bob = p.token(tenant="acme"), p.token(user="auth0|bob", tenant="globex")
    viewer = p.token(user="auth0|vic", tenant="acme", role="viewer")
    async with p.http(alice) as a:
        first = await run(a, "/agui/echo", run_input("shared-thread", "r1", "secret of acme"))
        sid = session_of(first)
    async with p.http(bob) as b:
        refused = await b.post(f"/agui/threads/{sid}", json=run_input(sid, "r2", "x"))
        assert refused.status_code == 404
        # The same thread id (or A's session id) names B's own new session, never A's.
        for thread_id in ("shared-thread", sid):
            own = await run(b, "/agui/echo", run_input(thread_id, "r3", "mine"))
            assert session_of(own) != sid
            (snapshot,) = own.of(EventType.MESSAGES_SNAPSHOT)
            assert all("acme" not in (m.content or "") for m in snapshot.messages)
    async with p.http(viewer) as v:
        denied = await v.post(f"/agui/threads/{sid}", json=run_input(sid, "r4", "x"))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"
    async with p.http() as anonymous:
        assert (
            await anonymous.post("/agui/echo", json=run_input("t", "r", "x"))
        ).status_code == 401
