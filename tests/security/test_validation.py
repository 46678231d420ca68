"""One validation for every surface (PROTOCOL.md §2, §5, §13): hostile input against a real
production gateway gets a documented error, never a crash, a 500, a dropped socket or an `ERROR`
log line.

Every test here was run against the code before its fix; its docstring says how it failed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import uuid
from typing import Any

import httpx

from diminuendo.wire import masked_frame
from tests.conftest import Client
from tests.security.raw_ws import read_frame

BAD_LOG = re.compile(r'"level":\s*"(error|critical)"|Traceback')
DEEP = 1000  # levels: about 2 KB of brackets


def error_lines(prod: Any) -> list[str]:
    return [line for line in prod.gw.output().splitlines() if BAD_LOG.search(line)]


def fresh_token(p: Any, role: str = "developer") -> str:
    """A token for a tenant of its own: the local stack is shared by every test."""
    return p.token(tenant=f"t-{uuid.uuid4().hex[:12]}", role=role)


async def new_session(c: Client, agent: str = "echo") -> str:
    reply = await c.request({"type": "create_session", "agentType": agent})
    assert reply["type"] == "session_created", reply
    return reply["session"]["id"]


# ----- item 8: nesting depth ----------------------------------------------------------------------


async def test_deep_nesting_is_invalid_json_on_every_surface(prod: Any) -> None:
    """Before the fix: the WebSocket closed with no reply, unauthenticated `POST /rpc` answered
    500, REST answered 500, and each try logged an error (msgspec's RecursionError at ~1,000
    levels escaped every decoder)."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    nested = "[" * DEEP + "]" * DEEP
    async with p.client(token) as c:
        await c.send({"type": "ping", "id": "deep", "ts": json.loads("[" * 10 + "]" * 10)})
        shallow = await c.recv()
        assert shallow["type"] == "error" and shallow["code"] == "INVALID_MESSAGE", shallow
        await c.ws.send(
            f'{{"type":"create_session","agentType":"echo","metadata":{{"a":{nested}}}}}'
        )
        reply = await c.recv()
        assert reply["type"] == "error" and reply["code"] == "INVALID_JSON", reply
        # Exactly 64 levels are fine; 65 are not.
        inside = "[" * 63 + "]" * 63  # plus the object around it: 64
        await c.ws.send(f'{{"type":"ping","id":"ok","extra":{inside}}}')
        assert (await c.recv())["type"] == "pong"
        await c.ws.send(f'{{"type":"ping","id":"no","extra":[{inside}]}}')
        assert (await c.recv())["code"] == "INVALID_JSON"
        # Brackets inside strings are not nesting.
        assert (await c.request({"type": "ping", "ts": 1, "x": "[" * 500}))["type"] == "pong"
        assert (await c.request({"type": "ping"}))["type"] == "pong"  # the socket stays open
    async with p.http(token) as http:
        body = f'{{"agentType":"echo","metadata":{{"a":{nested}}}}}'.encode()
        rest = await http.post("/api/threads", content=body)
        assert rest.status_code == 400 and rest.json()["error"]["code"] == "INVALID_JSON", rest.text
    async with p.http() as anonymous:
        rpc = await anonymous.post("/rpc", content=nested.encode())
        assert rpc.status_code == 200, rpc.text
        assert rpc.json()["error"]["code"] == -32700
    assert error_lines(p) == []


# ----- item 11: answer_question fails closed ------------------------------------------------------


async def _question(c: Client) -> tuple[str, str]:
    session_id = await new_session(c, "demo")
    snapshot = await c.request({"type": "join_session", "sessionId": session_id})
    assert snapshot["type"] == "state_snapshot", snapshot
    await c.request({"type": "run_turn", "sessionId": session_id, "text": "ask me"})
    asked = (await c.recv_until("question_requested", timeout=20))[-1]
    return session_id, asked["requestId"]


async def test_answer_without_approved_is_not_an_approval(prod: Any) -> None:
    """Before the fix: the runtime was sent `approved: true` and `approval_resolved` said
    `approved: true` — a permission request answered without a decision failed open. And
    `approved` with `dismissed` was accepted."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    async with p.client(token) as c:
        session_id, request_id = await _question(c)
        both = await c.request(
            {
                "type": "answer_question",
                "sessionId": session_id,
                "requestId": request_id,
                "approved": True,
                "dismissed": True,
            }
        )
        assert both["type"] == "error" and both["code"] == "INVALID_MESSAGE", both
        async with p.http(token) as http:
            rest = await http.post(
                f"/api/threads/{session_id}/answer",
                json={"requestId": request_id, "approved": True, "dismissed": True},
            )
            assert rest.status_code == 400, rest.text
        ack = await c.request(
            {"type": "answer_question", "sessionId": session_id, "requestId": request_id}
        )
        assert ack["type"] == "ack", ack
        resolved = (await c.recv_until("approval_resolved", timeout=20))[-1]
        assert resolved["approved"] is False, resolved


# ----- items 13, 24: integers in query strings and headers ----------------------------------------


async def test_integer_query_parameters_are_ascii_digits_only(prod: Any) -> None:
    """Before the fix: `Last-Event-ID: ²` and a 5,000-digit one answered 500; `afterSeq` and
    `limit` went through `int()`, which takes Arabic-Indic digits, `1_0`, `+5` and ` 5`."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    async with p.client(token) as c:
        session_id = await new_session(c)
    async with p.http(token) as http:
        for header in ("²", "9" * 5000, "-1", "+5", "1_0", "٣", "5 5", "0x10", "1" * 17):
            response = await http.get(
                f"/api/threads/{session_id}/events",
                headers={"Last-Event-ID": header.encode()},
            )
            assert response.status_code == 400, (header[:20], response.status_code, response.text)
            assert response.json()["error"]["code"] == "INVALID_MESSAGE"
        for bad in ("%D9%A3", "1_0", "%2B5", "%205", "5%20", "1e3", "9" * 17):
            events = await http.get(f"/api/threads/{session_id}/events?afterSeq={bad}")
            assert events.status_code == 400, (bad, events.status_code, events.text)
            history = await http.get(f"/api/threads/{session_id}/messages?limit={bad}")
            assert history.status_code == 400, (bad, history.status_code, history.text)
        fine = await http.get(f"/api/threads/{session_id}/messages?limit=7")
        assert fine.status_code == 200, fine.text
        async with http.stream(
            "GET", f"/api/threads/{session_id}/events", headers={"Last-Event-ID": "0"}
        ) as stream:
            assert stream.status_code == 200
    assert error_lines(p) == []


# ----- item 21: strings that reach an upstream URL ------------------------------------------------


async def test_strings_reaching_upstream_urls_are_bounded(prod: Any) -> None:
    """Before the fix: `get_history.before` of ~1 MB answered `INTERNAL_ERROR` (httpx
    `InvalidURL`, logged as an error), 1,025 characters `UPSTREAM_ERROR` / REST 502; a
    `list_files` path had no length limit at all."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    async with p.client(token, max_size=None) as c:
        session_id = await new_session(c)
        for before in ("b" * 1025, "b" * 900_000):
            reply = await c.request(
                {"type": "get_history", "sessionId": session_id, "before": before}
            )
            assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE", reply
            assert "before" in reply["message"]
        for message in (
            {"type": "list_files", "sessionId": session_id, "path": "a/" * 600},
            {"type": "create_session", "agentType": "echo", "projectId": "p" * 200},
            {"type": "join_session", "sessionId": session_id, "epoch": "e" * 200},
            {"type": "manage_members", "action": "update", "userId": "u", "role": "r" * 100},
        ):
            reply = await c.request(message)
            assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE", reply
    async with p.http(token) as http:
        response = await http.get(f"/api/threads/{session_id}/messages?before={'b' * 1025}")
        assert response.status_code == 400, response.text
        long_id = await http.get(f"/api/threads/{'s' * 200}")
        assert long_id.status_code == 400, long_id.text
    assert error_lines(p) == []


# ----- item 6 (the field-limit part): a name is 1-200 characters everywhere -----------------------


async def test_a_name_is_one_to_two_hundred_characters_on_every_surface(prod: Any) -> None:
    """Before the fix: `conversation/create` over `/rpc` stored and broadcast a 100,000-character
    name, and an empty name was accepted by `create_session` and `POST /api/threads`."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    async with p.client(token) as c:
        for name in ("", "n" * 201):
            reply = await c.request({"type": "create_session", "agentType": "echo", "name": name})
            assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE", reply
        async with p.http(token) as http:
            for name in ("", "n" * 201, "n" * 100_000):
                rest = await http.post("/api/threads", json={"agentType": "echo", "name": name})
                assert rest.status_code == 400, rest.text
                call = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "conversation/create",
                    "params": {"agentType": "echo", "name": name},
                }
                rpc = (await http.post("/rpc", json=call)).json()
                assert rpc["error"]["code"] == -32602, rpc
                assert rpc["error"]["data"]["code"] == "INVALID_MESSAGE"
            listed = (await http.get("/api/threads")).json()["threads"]
            assert listed == [], [len(t.get("name") or "") for t in listed]
            ok = await http.post("/api/threads", json={"agentType": "echo", "name": "n" * 200})
            assert ok.status_code == 201, ok.text
        # Nothing was broadcast but the one valid session.
        created = (await c.recv_until("session_created"))[-1]
        assert created["session"]["name"] == "n" * 200


# ----- item 25: client mistakes are not server errors ---------------------------------------------


async def test_a_get_with_a_body_logs_no_error(prod: Any) -> None:
    """Before the fix: `GET /api/threads/<id>/` with a body answered normally and Sanic logged
    `… body not consumed.` at ERROR level."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p, role="admin")
    async with p.client(token) as c:
        session_id = await new_session(c)
    async with p.http(token) as http:
        for path in (f"/api/threads/{session_id}", f"/api/threads/{session_id}/", "/api/threads"):
            response = await http.request("GET", path, content=b'{"hello": "world"}' * 100)
            assert response.status_code in (200, 404), (path, response.status_code)
        deleted = await http.request("DELETE", f"/api/threads/{session_id}", content=b"x" * 1000)
        assert deleted.status_code == 204
        assert (await http.get("/api/threads")).status_code == 200  # the connection still works
    await asyncio.sleep(0.2)
    assert error_lines(p) == []


# ----- item 20: invalid UTF-8 in a text frame -----------------------------------------------------


class RawSocket:
    """A WebSocket client that writes hand-built frames (so they can be invalid)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, token: str) -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        raw = cls(reader, writer)
        assert [(await raw.text())["type"] for _ in range(3)] == [
            "welcome",
            "connected",
            "authenticated",
        ]
        return raw

    def frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.writer.write(masked_frame(opcode, payload, fin=fin))

    async def read_frame(self) -> tuple[int, bytes]:
        return await asyncio.wait_for(read_frame(self.reader), 10)

    async def text(self) -> dict[str, Any]:
        opcode, payload = await self.read_frame()
        assert opcode == 1, (opcode, payload)
        return json.loads(payload)

    async def close_code(self) -> int:
        """Skip data frames until the server's close frame; its status code."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 8:
                return int.from_bytes(payload[:2], "big")

    def close(self) -> None:
        self.writer.close()


INVALID_UTF8 = {
    "invalid byte": b'{"type":"ping","id":"\xff"}',
    "surrogate": b'{"type":"ping","id":"\xed\xa0\x80"}',
    "overlong": b'{"type":"ping","id":"\xc0\xaf"}',
}


async def test_invalid_utf8_closes_with_1007(prod: Any) -> None:
    """Before the fix: Sanic's frame assembler raised `UnicodeDecodeError` in a task nobody
    awaited; the frame vanished without a reply, and in a fragmented message the boundaries fell
    out of step (the next valid frame was glued onto the broken one and answered
    `INVALID_JSON`). RFC 6455 §8.1 and PROTOCOL §2: close 1007."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    for name, payload in INVALID_UTF8.items():
        raw = await RawSocket.open(p.gw.port, token)
        try:
            raw.frame(0x1, payload)
            assert await raw.close_code() == 1007, name
        finally:
            raw.close()
    # Fragmented: a valid first fragment, an invalid continuation.
    raw = await RawSocket.open(p.gw.port, token)
    try:
        raw.frame(0x1, b'{"type":"ping",', fin=False)
        raw.frame(0x0, b'"id":"\xff"}')
        raw.frame(0x1, b'{"type":"ping","id":"after"}')
        assert await raw.close_code() == 1007
    finally:
        raw.close()
    # A multi-byte character split across fragments is valid UTF-8.
    raw = await RawSocket.open(p.gw.port, token)
    try:
        encoded = '{"type":"ping","id":"é€😀"}'.encode()
        split = encoded.index(b"\xe2") + 1
        raw.frame(0x1, encoded[:split], fin=False)
        raw.frame(0x0, encoded[split:])
        pong = await raw.text()
        assert pong["type"] == "pong" and pong["id"] == "é€😀", pong
    finally:
        raw.close()
    async with p.client(token) as c:  # the gateway is fine
        assert (await c.request({"type": "ping"}))["type"] == "pong"
    await asyncio.sleep(0.2)
    assert error_lines(p) == []


async def test_unauthenticated_rpc_with_bad_json_is_a_parse_error(prod: Any) -> None:
    """`POST /rpc` with junk answers -32700 (HTTP 200), whatever the junk."""
    p = prod()
    async with httpx.AsyncClient(base_url=p.gw.url, timeout=10) as http:
        for body in (b"", b"{", b"\xff\xfe", b'{"a":' * 70 + b"1" + b"}" * 70):
            response = await http.post("/rpc", content=body)
            assert response.status_code == 200, (body[:20], response.text)
            assert response.json()["error"]["code"] == -32700, response.text
    assert error_lines(p) == []
