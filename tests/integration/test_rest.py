"""REST, SSE and JSON-RPC against a real gateway (PROTOCOL.md §8, §10), in dev mode."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import Gateway


@pytest.fixture
async def http(gateway: Gateway):
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as client:
        yield client


_line_iterators: dict[int, object] = {}


async def read_sse(response: httpx.Response, until: str, limit: int = 2000) -> list[dict]:
    """Parse SSE events until one of type `until` (each: id?, event, data). One line iterator
    per response, kept across calls, since a stream can only be iterated once."""
    lines = _line_iterators.setdefault(id(response), response.aiter_lines())
    events, current = [], {}
    async with asyncio.timeout(20):
        async for line in lines:
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    current["data"] = json.loads(current.get("data", "null"))
                    events.append(current)
                    if current.get("event") == until or len(events) >= limit:
                        return events
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    return events


async def test_threads_crud_and_errors(http: httpx.AsyncClient) -> None:
    created = await http.post("/api/threads", json={"agentType": "echo", "name": "rest"})
    assert created.status_code == 201
    thread = created.json()
    assert thread["agentType"] == "echo" and thread["status"] == "inactive"
    thread_id = thread["id"]

    listing = (await http.get("/api/threads")).json()["threads"]
    assert thread_id in [t["id"] for t in listing]
    assert (await http.get(f"/api/threads/{thread_id}")).json()["name"] == "rest"

    patched = await http.patch(
        f"/api/threads/{thread_id}", json={"name": "renamed", "archived": True}
    )
    assert patched.status_code == 200 and patched.json()["archived"] is True
    assert patched.json()["name"] == "renamed"
    assert thread_id not in [t["id"] for t in (await http.get("/api/threads")).json()["threads"]]
    archived = (await http.get("/api/threads", params={"includeArchived": "true"})).json()
    assert thread_id in [t["id"] for t in archived["threads"]]

    assert (await http.delete(f"/api/threads/{thread_id}")).status_code == 204
    missing = await http.get(f"/api/threads/{thread_id}")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "SESSION_NOT_FOUND", "message": "Session not found"}
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, "INVALID_JSON"),
        (b"{}", 400, "INVALID_MESSAGE"),
        (json.dumps({"agentType": 5}).encode(), 400, "INVALID_MESSAGE"),
        (json.dumps({"agentType": "nope"}).encode(), 400, "INVALID_MESSAGE"),
        (
            json.dumps({"agentType": "echo", "metadata": {"k": "v" * 17_000}}).encode(),
            400,
            "INVALID_MESSAGE",
        ),
        (b"x" * (3 * 1024 * 1024), 413, "MESSAGE_TOO_LARGE"),
    ],
)
async def test_create_rejects_bad_bodies(
    http: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    response = await http.post(
        "/api/threads", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text


async def test_turn_over_rest_and_sse_with_resume(http: httpx.AsyncClient) -> None:
    thread_id = (await http.post("/api/threads", json={"agentType": "echo"})).json()["id"]
    async with http.stream("GET", f"/api/threads/{thread_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        snapshot = (await read_sse(stream, "state_snapshot"))[-1]
        assert snapshot["data"]["sessionId"] == thread_id
        await read_sse(stream, "session_state")  # activating
        posted = await http.post(
            f"/api/threads/{thread_id}/messages", json={"text": "over rest", "clientTurnId": "c1"}
        )
        assert posted.status_code == 202
        turn_id = posted.json()["turnId"]
        events = await read_sse(stream, "turn_complete")
    with_ids = [e for e in events if "id" in e]
    assert [int(e["id"]) for e in with_ids] == [e["data"]["seq"] for e in with_ids]
    deltas = "".join(e["data"]["text"] for e in events if e["event"] == "text_delta")
    assert deltas == events[-1]["data"]["finalText"] == "over rest"
    assert events[-1]["data"]["turnId"] == turn_id

    busy_check = await http.post(f"/api/threads/{thread_id}/stop")
    assert busy_check.status_code == 202

    resume_from = int(with_ids[2]["id"])
    async with http.stream(
        "GET", f"/api/threads/{thread_id}/events", headers={"Last-Event-ID": str(resume_from)}
    ) as stream:
        replayed = await read_sse(stream, "turn_complete")
    assert replayed[0]["event"] == "state_snapshot" and replayed[0]["data"]["gap"] is False
    seqs = [int(e["id"]) for e in replayed if "id" in e]
    assert seqs[0] == resume_from + 1
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    history = (await http.get(f"/api/threads/{thread_id}/messages", params={"limit": 10})).json()
    assert [m["text"] for m in history["messages"]] == ["over rest", "over rest"]
    assert (
        await http.get(f"/api/threads/{thread_id}/messages", params={"limit": 0})
    ).status_code == 400


async def test_busy_and_waiting_answers(http: httpx.AsyncClient) -> None:
    thread_id = (await http.post("/api/threads", json={"agentType": "demo"})).json()["id"]
    async with http.stream("GET", f"/api/threads/{thread_id}/events") as stream:
        await read_sse(stream, "state_snapshot")
        assert (
            await http.post(f"/api/threads/{thread_id}/messages", json={"text": "go"})
        ).status_code == 202
        busy = await http.post(f"/api/threads/{thread_id}/messages", json={"text": "again"})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "SESSION_BUSY"
        question = (await read_sse(stream, "question_requested"))[-1]["data"]
        bad = await http.post(f"/api/threads/{thread_id}/answer", json={"requestId": "nope"})
        assert bad.status_code == 409 and bad.json()["error"]["code"] == "INVALID_STATE"
        answered = await http.post(
            f"/api/threads/{thread_id}/answer",
            json={"requestId": question["requestId"], "approved": True},
        )
        assert answered.status_code == 202
        steer = await http.post(f"/api/threads/{thread_id}/steer", json={"content": "faster"})
        assert steer.status_code in (202, 409)
        events = await read_sse(stream, "turn_complete")
    assert "approval_resolved" in [e["event"] for e in events]


async def test_models_and_me(http: httpx.AsyncClient) -> None:
    models = (await http.get("/api/models")).json()["models"]
    assert "mock" in [m["id"] for m in models]
    me = (await http.get("/api/me")).json()
    assert me["tenantId"] == "dev" and "threads.delete" in me["permissions"]


async def test_rest_rate_limit_answers_429_with_retry_after(start_gateway) -> None:
    gw = start_gateway(WS_RATE_LIMIT="3/10s")
    async with httpx.AsyncClient(base_url=gw.url) as http:
        statuses = [(await http.get("/api/threads")).status_code for _ in range(4)]
        assert statuses[:3] == [200, 200, 200]
        limited = await http.get("/api/threads")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "RATE_LIMITED"


async def test_rest_upstream_down_is_503(start_gateway, stack) -> None:
    gw = start_gateway()
    stack.fault("unison", "unavailable")
    try:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            response = await http.post("/api/threads", json={"agentType": "echo"})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    finally:
        stack.fault("unison", "ok")


async def test_rpc_single_batch_and_errors(http: httpx.AsyncClient) -> None:
    init = (
        await http.post("/rpc", json={"jsonrpc": "2.0", "id": "i", "method": "initialize"})
    ).json()
    assert init["id"] == "i" and init["result"]["protocolVersion"] == 1
    batch = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "conversation/create",
            "params": {"agentType": "echo"},
        },
        {"jsonrpc": "2.0", "id": 2, "method": "inference/models.list"},
        {"jsonrpc": "2.0", "id": 3, "method": "no/such"},
        {"jsonrpc": "2.0", "id": 4, "method": "conversation/send", "params": {"sessionId": 5}},
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "conversation/history",
            "params": {"sessionId": "ses_missing"},
        },
        {"jsonrpc": "2.0", "method": "health/check"},
        {"id": 6},
    ]
    replies = {r["id"]: r for r in (await http.post("/rpc", json=batch)).json()}
    assert replies[1]["result"]["agentType"] == "echo"
    assert "mock" in [m["id"] for m in replies[2]["result"]["models"]]
    assert replies[3]["error"]["code"] == -32601
    assert replies[4]["error"]["code"] == -32602
    assert replies[5]["error"]["code"] == -32012
    assert replies[5]["error"]["data"]["code"] == "SESSION_NOT_FOUND"
    assert replies[6]["error"]["code"] == -32600
    assert len(replies) == 6, "the notification gets no reply"

    session_id = replies[1]["result"]["id"]
    sent = (
        await http.post(
            "/rpc",
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "conversation/send",
                "params": {"sessionId": session_id, "text": "via rpc"},
            },
        )
    ).json()
    assert sent["result"]["turnId"].startswith("trn_")
    parse = (await http.post("/rpc", content=b"{oops")).json()
    assert parse["error"]["code"] == -32700 and parse["id"] is None
    methods = (
        await http.post("/rpc", json={"jsonrpc": "2.0", "id": 8, "method": "capability/list"})
    ).json()["result"]["methods"]
    assert "conversation/create" in methods and "stream/cancel" in methods


async def test_cors_is_permissive_in_dev_mode(http: httpx.AsyncClient) -> None:
    preflight = await http.options(
        "/api/threads",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] in ("*", "http://localhost:5173")
