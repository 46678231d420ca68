"""Ensemble stand-in: JSON-RPC inference with deterministic mock models.

Mock replies are a pure function of the last user message so tests can assert on exact text.

A real model too (UPSTREAMS.md §4): when the environment of the process that builds the stand-in
has `OPENAI_BASE_URL` (and optionally `OPENAI_API_KEY`), e.g.

    OPENAI_BASE_URL=http://127.0.0.1:11434/v1 diminuendo dev

`inference/models.list` also lists that OpenAI-compatible endpoint's models (provider
`openai-compatible`, cached 60 s; an unreachable endpoint leaves just the mock models) and
`inference/generate` for one of them is proxied to its `/chat/completions`, streaming or not. An
upstream failure is a `failed` event (`{code, message}`, codes in `openai_proxy`) when streaming,
and a JSON-RPC error -32000 with `data.code` otherwise. The variables are read when the stand-in
is constructed: a running stack does not see later changes. See `openai_proxy` for the details.
"""

import asyncio
import json as jsonlib
import secrets
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

from loguru import logger
from sanic import HTTPResponse, Request, json

from diminuendo import __version__
from diminuendo.local.openai_proxy import Completion, OpenAIProxy, UpstreamFailure
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
UPSTREAM_FAILED = -32000  # JSON-RPC "server error": the proxied endpoint let the call down


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


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


def _checked(params: dict[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
    """Validate the messages and max_tokens of generate params."""
    messages = params.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RpcError(INVALID_PARAMS, "messages must be a list of {role, content}")
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise RpcError(INVALID_PARAMS, "max_tokens must be a positive integer")
    return messages, max_tokens


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return count_tokens("\n".join(_content_text(m.get("content")) for m in messages))


def _result(model: str, text: str, finish: str, input_tokens: int, output_tokens: int) -> dict:
    return {
        "id": f"gen_{secrets.token_hex(8)}",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "finishReason": finish,
        "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens},
    }


def _generation(params: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    """Validate generate params for a mock model; return it, the reply pieces and the result."""
    model = params.get("model")
    if model not in _DELTA_DELAY_S:
        raise RpcError(INVALID_PARAMS, f"unknown model: {model!r}")
    messages, max_tokens = _checked(params)
    pieces = word_pieces(mock_reply(messages))
    finish = "stop"
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], "length"
    text = "".join(pieces)
    result = _result(model, text, finish, _prompt_tokens(messages), count_tokens(text))
    return model, pieces, result


def _proxied_result(model: str, messages: list[dict[str, Any]], done: Completion) -> dict:
    """The Ensemble result of a proxied generation, counting tokens where the endpoint did not."""
    input_tokens = done.input_tokens
    if input_tokens is None:
        input_tokens = _prompt_tokens(messages)
    output_tokens = done.output_tokens
    if output_tokens is None:
        output_tokens = count_tokens(done.text)
    return _result(model, done.text, done.finish_reason, input_tokens, output_tokens)


def _openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"role": str(m.get("role") or "user"), "content": _content_text(m.get("content"))}
        for m in messages
    ]


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {jsonlib.dumps(data)}\n\n"


class EnsembleStandIn:
    """Serves UPSTREAMS.md §2 with the `mock` and `mock-slow` models, plus the models of the
    OpenAI-compatible endpoint named by `OPENAI_BASE_URL` when it is set (module docstring).

    `environ` defaults to `os.environ`; tests may pass a mapping instead.
    """

    def __init__(self, api_key: str, environ: Mapping[str, str] | None = None) -> None:
        self.proxy = OpenAIProxy.from_env(environ)
        self.service = LocalService("ensemble", api_key, public_paths=("/api/v1/health",))
        add = self.service.app.add_route
        add(self._health, "/api/v1/health", methods=["GET"], name="health")
        add(self._rpc, "/rpc", methods=["POST"], name="rpc")

    async def start(self, host: str, port: int) -> None:
        await self.service.start(host, port)

    async def stop(self) -> None:
        try:
            await self.service.stop()
        finally:
            if self.proxy is not None:
                await self.proxy.close()

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
                    return _rpc_result(call_id, {"models": await self._models()})
                case "inference/generate" if await self._proxied(params.get("model")):
                    return await self._generate_proxied(request, call_id, params)
                case "inference/generate":
                    model, pieces, result = _generation(params)
                    if params.get("stream") is True:
                        await self._stream(request, model, pieces, result)
                        return None
                    return _rpc_result(call_id, result)
                case method:
                    raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        except RpcError as err:
            return _rpc_error(call_id, err.code, err.message, err.data)

    async def _models(self) -> list[dict[str, Any]]:
        if self.proxy is None:
            return MODELS
        mock_ids = {model["id"] for model in MODELS}
        upstream = [m for m in await self.proxy.models() if m["id"] not in mock_ids]
        return MODELS + upstream

    async def _proxied(self, model: Any) -> bool:
        """Whether a generate call for `model` goes to the OpenAI-compatible endpoint."""
        if self.proxy is None or not isinstance(model, str) or model in _DELTA_DELAY_S:
            return False
        return await self.proxy.serves(model)

    async def _generate_proxied(
        self, request: Request, call_id: Any, params: dict[str, Any]
    ) -> HTTPResponse | None:
        assert self.proxy is not None
        model: str = params["model"]
        messages, max_tokens = _checked(params)
        upstream_messages = _openai_messages(messages)
        if params.get("stream") is True:
            await self._stream_proxied(request, model, messages, upstream_messages, max_tokens)
            return None
        try:
            done = await self.proxy.complete(model, upstream_messages, max_tokens)
        except UpstreamFailure as failure:
            logger.warning("local ensemble: {} failed: {}", model, failure.message)
            raise RpcError(UPSTREAM_FAILED, failure.message, {"code": failure.code}) from None
        return _rpc_result(call_id, _proxied_result(model, messages, done))

    async def _stream_proxied(
        self,
        request: Request,
        model: str,
        messages: list[dict[str, Any]],
        upstream_messages: list[dict[str, str]],
        max_tokens: int | None,
    ) -> None:
        assert self.proxy is not None
        response = await request.respond(
            content_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
        generation_id = f"gen_{secrets.token_hex(8)}"
        await response.send(_sse("started", {"id": generation_id, "model": model}))
        done = Completion()
        deltas = self.proxy.stream_chat(model, upstream_messages, max_tokens, done)
        try:
            async with aclosing(deltas):
                async for piece in deltas:
                    if self.service.stopping:
                        return await self._end_stopping(response)
                    await response.send(_sse("delta", {"text": piece}))
        except UpstreamFailure as failure:
            logger.warning("local ensemble: {} failed: {}", model, failure.message)
            failed = {"code": failure.code, "message": failure.message}
            await response.send(_sse("failed", failed))
        else:
            result = _proxied_result(model, messages, done)
            result["id"] = generation_id
            await response.send(_sse("completed", result))
        await response.eof()

    async def _end_stopping(self, response: HTTPResponse) -> None:
        """End a stream cut short by a stop with `failed`, so the caller learns why."""
        await response.send(_sse("failed", self.service.stopping_error()))
        await response.eof()

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
            if self.service.stopping:
                return await self._end_stopping(response)
            await response.send(_sse("delta", {"text": piece}))
        await response.send(_sse("completed", result))
        await response.eof()


def _rpc_result(call_id: Any, result: dict[str, Any]) -> HTTPResponse:
    return json({"jsonrpc": "2.0", "id": call_id, "result": result})


def _rpc_error(
    call_id: Any, code: int, message: str, data: dict[str, Any] | None = None
) -> HTTPResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json({"jsonrpc": "2.0", "id": call_id, "error": error})
