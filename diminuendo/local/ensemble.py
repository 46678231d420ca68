"""Ensemble stand-in: JSON-RPC inference with deterministic mock models.

Replies are a pure function of the last user message so tests can assert on exact text.
"""

import asyncio
import json as jsonlib
import secrets
from typing import Any

from sanic import HTTPResponse, Request, json

from diminuendo import __version__
from diminuendo.local.service import LocalService
from diminuendo.local.textutil import count_tokens, word_pieces

MODELS = [
    {"id": "mock", "provider": "mock", "capabilities": {"streaming": True, "tools": False}},
    {"id": "mock-slow", "provider": "mock", "capabilities": {"streaming": True, "tools": False}},
]
_DELTA_DELAY_S = {"mock": 0.0, "mock-slow": 0.05}

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def mock_reply(messages: list[dict[str, Any]]) -> str:
    """The mock model's answer: it repeats the last user message back."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _content_text(message.get("content")).strip()
            if text:
                return f"You said: {text}. This is the mock model."
    return "Hello from the mock model."


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


def _generation(params: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    """Validate generate params; return the model, the reply pieces and the full result."""
    model = params.get("model")
    if model not in _DELTA_DELAY_S:
        raise RpcError(INVALID_PARAMS, f"unknown model: {model!r}")
    messages = params.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RpcError(INVALID_PARAMS, "messages must be a list of {role, content}")
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise RpcError(INVALID_PARAMS, "max_tokens must be a positive integer")
    pieces = word_pieces(mock_reply(messages))
    finish = "stop"
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], "length"
    text = "".join(pieces)
    prompt = "\n".join(_content_text(m.get("content")) for m in messages)
    result = {
        "id": f"gen_{secrets.token_hex(8)}",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "finishReason": finish,
        "usage": {"inputTokens": count_tokens(prompt), "outputTokens": count_tokens(text)},
    }
    return model, pieces, result


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {jsonlib.dumps(data)}\n\n"


class EnsembleStandIn:
    """Serves UPSTREAMS.md §2 with the `mock` and `mock-slow` models (no OpenAI proxying)."""

    def __init__(self, api_key: str) -> None:
        self.service = LocalService("ensemble", api_key, public_paths=("/api/v1/health",))
        add = self.service.app.add_route
        add(self._health, "/api/v1/health", methods=["GET"], name="health")
        add(self._rpc, "/rpc", methods=["POST"], name="rpc")

    async def start(self, host: str, port: int) -> None:
        await self.service.start(host, port)

    async def stop(self) -> None:
        await self.service.stop()

    async def _health(self, request: Request) -> HTTPResponse:
        return json(
            {"status": "healthy", "version": __version__, "providers": {"mock": {"ok": True}}}
        )

    async def _rpc(self, request: Request) -> HTTPResponse | None:
        try:
            call = jsonlib.loads(request.body or b"")
        except ValueError:
            return _rpc_error(None, PARSE_ERROR, "parse error")
        if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or "method" not in call:
            return _rpc_error(None, INVALID_REQUEST, "expected one JSON-RPC 2.0 request object")
        call_id = call.get("id")
        params = call.get("params") or {}
        try:
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "params must be an object")
            match call["method"]:
                case "inference/models.list":
                    return _rpc_result(call_id, {"models": MODELS})
                case "inference/generate":
                    model, pieces, result = _generation(params)
                    if params.get("stream") is True:
                        await self._stream(request, model, pieces, result)
                        return None
                    return _rpc_result(call_id, result)
                case method:
                    raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        except RpcError as err:
            return _rpc_error(call_id, err.code, err.message)

    async def _stream(
        self, request: Request, model: str, pieces: list[str], result: dict[str, Any]
    ) -> None:
        response = await request.respond(
            content_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
        await response.send(_sse("started", {"id": result["id"], "model": model}))
        for piece in pieces:
            if _DELTA_DELAY_S[model]:
                await asyncio.sleep(_DELTA_DELAY_S[model])
            await response.send(_sse("delta", {"text": piece}))
        await response.send(_sse("completed", result))
        await response.eof()


def _rpc_result(call_id: Any, result: dict[str, Any]) -> HTTPResponse:
    return json({"jsonrpc": "2.0", "id": call_id, "result": result})


def _rpc_error(call_id: Any, code: int, message: str) -> HTTPResponse:
    return json({"jsonrpc": "2.0", "id": call_id, "error": {"code": code, "message": message}})
