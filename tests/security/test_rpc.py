"""Fabric JSON-RPC (`POST /rpc`, PROTOCOL.md §10, §13) against a real production gateway: the
REST rate limit counts every call, batches are bounded, ids are checked, nothing is dropped
silently.

Every test here was run against the code before its fix; its docstring says how it failed.
"""

from __future__ import annotations

import uuid
from typing import Any


def call(method: str, call_id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}


def fresh_token(p: Any) -> str:
    return p.token(tenant=f"t-{uuid.uuid4().hex[:12]}")


async def test_every_call_counts_against_the_rest_rate_limit(prod: Any) -> None:
    """Before the fix: `/rpc` had no rate limit at all — 300 calls in three batches of 100
    all ran, while REST answered 429 after 60."""
    p = prod(WS_RATE_LIMIT="10/60s")
    token = fresh_token(p)
    async with p.http(token) as http:
        batch = [call("conversation/list", i) for i in range(15)]
        replies = (await http.post("/rpc", json=batch)).json()
        assert [r["id"] for r in replies] == list(range(15))
        assert all("result" in r for r in replies[:10]), replies[:10]
        for reply in replies[10:]:
            assert reply["error"]["code"] == -32029, reply
            assert reply["error"]["data"]["code"] == "RATE_LIMITED"
            assert reply["error"]["data"]["retryAfterMs"] > 0
        # One budget: REST is limited too now, and RPC stays limited.
        rest = await http.get("/api/threads")
        assert rest.status_code == 429 and "Retry-After" in rest.headers
        single = (await http.post("/rpc", json=call("initialize", "x"))).json()
        assert single["error"]["code"] == -32029, single
    other = fresh_token(p)  # another user has a budget of their own
    async with p.http(other) as http:
        assert "result" in (await http.post("/rpc", json=call("initialize"))).json()


async def test_a_batch_over_rpc_batch_max_is_refused_whole(prod: Any) -> None:
    """Before the fix: batches were cut at 100 calls and the rest dropped without a word; 21
    calls all ran although RPC_BATCH_MAX is 20."""
    p = prod(WS_RATE_LIMIT="1000/10s", RPC_BATCH_MAX="20")
    token = fresh_token(p)
    async with p.http(token) as http:
        too_many = [call("conversation/create", i, agentType="echo") for i in range(21)]
        reply = (await http.post("/rpc", json=too_many)).json()
        assert isinstance(reply, dict), reply
        assert reply["error"]["code"] == -32600 and reply["id"] is None, reply
        assert "20" in reply["error"]["message"]
        huge = [call("initialize", i) for i in range(150)]
        assert (await http.post("/rpc", json=huge)).json()["error"]["code"] == -32600
        assert (await http.get("/api/threads")).json()["threads"] == []  # nothing ran
        twenty = [call("conversation/create", i, agentType="echo") for i in range(20)]
        replies = (await http.post("/rpc", json=twenty)).json()
        assert len(replies) == 20 and all("result" in r for r in replies), replies[:2]


async def test_ids_must_be_string_number_or_null(prod: Any) -> None:
    """Before the fix: object and array ids were executed and echoed back."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    async with p.http(token) as http:
        for bad in ({"a": 1}, [1], True):
            reply = (await http.post("/rpc", json=call("initialize", bad))).json()
            assert reply["error"]["code"] == -32600 and reply["id"] is None, (bad, reply)
        for good in ("abc", 7, 1.5, None):
            reply = (await http.post("/rpc", json=call("initialize", good))).json()
            assert reply["id"] == good and "result" in reply, (good, reply)
        mixed = [call("initialize", "a"), call("initialize", [2]), call("nope", "c")]
        replies = (await http.post("/rpc", json=mixed)).json()
        assert [r["id"] for r in replies] == ["a", None, "c"]
        assert [r.get("error", {}).get("code") for r in replies] == [None, -32600, -32601]


async def test_params_are_validated_by_the_message_structs(prod: Any) -> None:
    """Before the fix: params were checked by hand (`_string`), so `conversation/send` took a
    text of any size and `conversation/history` ignored what the WebSocket schema says."""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = fresh_token(p)
    async with p.http(token) as http:
        created = await http.post("/rpc", json=call("conversation/create", agentType="echo"))
        session_id = created.json()["result"]["id"]
        for method, params, field in (
            ("conversation/send", {"sessionId": session_id, "text": "x" * 300_000}, "text"),
            ("conversation/send", {"sessionId": "s" * 200, "text": "hi"}, "sessionId"),
            ("conversation/history", {"sessionId": session_id, "limit": 501}, "limit"),
            ("conversation/history", {"sessionId": session_id, "before": "b" * 200}, "before"),
            ("conversation/list", {"includeArchived": "yes"}, "includeArchived"),
            ("stream/cancel", {}, "sessionId"),
        ):
            reply = (await http.post("/rpc", json=call(method, **params))).json()
            assert reply["error"]["code"] == -32602, (method, reply)
            assert field in reply["error"]["message"], (field, reply)
        history = (
            await http.post("/rpc", json=call("conversation/history", sessionId=session_id))
        ).json()
        assert history["result"]["messages"] == [], history
