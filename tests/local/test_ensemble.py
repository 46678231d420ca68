"""Ensemble stand-in over real HTTP: UPSTREAMS.md §2."""

import json
import time
from typing import Any

import httpx
import pytest

from diminuendo.local.stack import LocalStack

pytestmark = pytest.mark.timeout(10)


def rpc(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": "req-1", "method": method, "params": params or {}}


def generate(model: str = "mock", text: str = "hello there", **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": text})
    return rpc("inference/generate", {"model": model, "messages": messages, **extra})


async def test_health_needs_no_key(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as anonymous:
        reply = await anonymous.get(f"{stack.ensemble_url}/api/v1/health")
    body = reply.json()
    assert reply.status_code == 200
    assert body["status"] == "healthy"
    assert body["providers"] == {"mock": {"ok": True}}
    assert isinstance(body["version"], str)


async def test_rpc_requires_the_key(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as anonymous:
        reply = await anonymous.post(f"{stack.ensemble_url}/rpc", json=rpc("inference/models.list"))
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "UNAUTHORIZED"


async def test_models_list(stack: LocalStack, client: httpx.AsyncClient) -> None:
    reply = (
        await client.post(f"{stack.ensemble_url}/rpc", json=rpc("inference/models.list"))
    ).json()
    assert reply["id"] == "req-1"
    models = reply["result"]["models"]
    assert [m["id"] for m in models] == ["mock", "mock-slow"]
    assert models[0]["capabilities"] == {"streaming": True, "tools": False}


async def test_generate_is_deterministic(stack: LocalStack, client: httpx.AsyncClient) -> None:
    replies = [
        (await client.post(f"{stack.ensemble_url}/rpc", json=generate())).json() for _ in range(2)
    ]
    result = replies[0]["result"]
    assert result["content"] == [
        {"type": "text", "text": "You said: hello there. This is the mock model."}
    ]
    assert result["content"] == replies[1]["result"]["content"]
    assert result["model"] == "mock"
    assert result["finishReason"] == "stop"
    assert result["usage"] == {"inputTokens": 4, "outputTokens": 9}


async def test_max_tokens_truncates(stack: LocalStack, client: httpx.AsyncClient) -> None:
    reply = await client.post(f"{stack.ensemble_url}/rpc", json=generate(max_tokens=2))
    result = reply.json()["result"]
    assert result["content"][0]["text"] == "You said: "
    assert result["finishReason"] == "length"


async def read_sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in (await response.aread()).decode().split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.parametrize("model", ["mock", "mock-slow"])
async def test_streaming_generate(stack: LocalStack, client: httpx.AsyncClient, model: str) -> None:
    started_at = time.monotonic()
    body = generate(model=model, stream=True)
    async with client.stream("POST", f"{stack.ensemble_url}/rpc", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_sse(response)
    elapsed = time.monotonic() - started_at
    names = [name for name, _ in events]
    assert names[0] == "started" and names[-1] == "completed"
    assert set(names[1:-1]) == {"delta"}
    streamed = "".join(data["text"] for name, data in events if name == "delta")
    completed = events[-1][1]
    assert streamed == completed["content"][0]["text"]
    assert completed["model"] == model
    if model == "mock-slow":
        assert elapsed >= 0.05 * (len(names) - 2)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (rpc("inference/nope"), -32601),
        (generate(model="gpt-nothing"), -32602),
        (rpc("inference/generate", {"model": "mock", "messages": "hi"}), -32602),
        ({"jsonrpc": "1.0", "method": "inference/models.list"}, -32600),
        ([rpc("inference/models.list")], -32600),
    ],
)
async def test_rpc_errors(
    stack: LocalStack, client: httpx.AsyncClient, payload: Any, code: int
) -> None:
    reply = await client.post(f"{stack.ensemble_url}/rpc", json=payload)
    assert reply.status_code == 200
    assert reply.json()["error"]["code"] == code


async def test_rpc_parse_error(stack: LocalStack, client: httpx.AsyncClient) -> None:
    reply = await client.post(f"{stack.ensemble_url}/rpc", content=b"{oops")
    assert reply.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "parse error"},
    }
