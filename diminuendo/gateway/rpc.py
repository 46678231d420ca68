"""Fabric JSON-RPC 2.0 at `POST /rpc` (PROTOCOL.md §10): single and batch calls onto the same
`SessionService`, authorised by the same permission table as the WebSocket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from loguru import logger
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from diminuendo import __version__
from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import MESSAGE_PERMISSIONS, require
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.rest_auth import request_identity
from diminuendo.protocol import PROTOCOL_VERSION
from diminuendo.protocol import messages as m
from diminuendo.protocol.errors import ErrorCode, GatewayError

bp = Blueprint("rpc")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = (
    -32700,
    -32600,
    -32601,
    -32602,
    -32603,
)
RPC_CODES: dict[ErrorCode, int] = {
    ErrorCode.NOT_AUTHENTICATED: -32010,
    ErrorCode.AUTH_FAILED: -32010,
    ErrorCode.AUTH_RATE_LIMITED: -32010,
    ErrorCode.FORBIDDEN: -32011,
    ErrorCode.SESSION_NOT_FOUND: -32012,
    ErrorCode.FILE_NOT_FOUND: -32012,
    ErrorCode.SESSION_BUSY: -32013,
    ErrorCode.INVALID_STATE: -32013,
    ErrorCode.UPSTREAM_UNAVAILABLE: -32014,
    ErrorCode.UPSTREAM_ERROR: -32014,
    ErrorCode.CAPACITY_EXCEEDED: -32014,
    ErrorCode.DRAINING: -32014,
    ErrorCode.INVALID_MESSAGE: INVALID_PARAMS,
    ErrorCode.INVALID_JSON: PARSE_ERROR,
}


class InvalidParams(Exception):
    pass


Method = Callable[[Gateway, Identity, dict[str, Any]], Awaitable[Any]]


def _string(params: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"`{name}` must be a non-empty string")
    return value


async def _initialize(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "serverInfo": {"name": "diminuendo", "version": __version__},
        "profiles": ["conversation", "inference"],
    }


async def _capabilities(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    return {"methods": sorted(METHODS)}


async def _health(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    return gateway.health_body()[0]


async def _create(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    return await gateway.sessions.create_session(
        identity, _string(params, "agentType") or "", name=_string(params, "name", False)
    )


async def _list(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    include = params.get("includeArchived", False)
    if not isinstance(include, bool):
        raise InvalidParams("`includeArchived` must be a boolean")
    return {"sessions": await gateway.sessions.list_sessions(identity, include)}


async def _send(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    turn = await gateway.sessions.run_turn(
        identity, _string(params, "sessionId") or "", _string(params, "text") or ""
    )
    return {"turnId": turn.turn_id}


async def _history(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    limit = params.get("limit", 50)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500:
        raise InvalidParams("`limit` must be a whole number from 1 to 500")
    return await gateway.sessions.history(
        identity, _string(params, "sessionId") or "", limit=limit, before=None
    )


async def _cancel(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    await gateway.sessions.stop_turn(identity, _string(params, "sessionId") or "")
    return {}


async def _models(gateway: Gateway, identity: Identity, params: dict[str, Any]) -> Any:
    return {"models": await gateway.ensemble.models()}


# method → (implementation, the WebSocket operation whose permission it needs)
METHODS: dict[str, tuple[Method, type[m.ClientMessage]]] = {
    "initialize": (_initialize, m.Ping),
    "capability/list": (_capabilities, m.Ping),
    "health/check": (_health, m.Ping),
    "conversation/create": (_create, m.CreateSession),
    "conversation/list": (_list, m.ListSessions),
    "conversation/send": (_send, m.RunTurn),
    "conversation/history": (_history, m.GetHistory),
    "stream/cancel": (_cancel, m.StopTurn),
    "inference/models.list": (_models, m.ListSessions),
}


def _error(call_id: Any, code: int, message: str, data_code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data_code:
        error["data"] = {"code": data_code}
    return {"jsonrpc": "2.0", "id": call_id, "error": error}


async def _call(gateway: Gateway, identity: Identity | None, call: Any) -> dict[str, Any] | None:
    if (
        not isinstance(call, dict)
        or call.get("jsonrpc") != "2.0"
        or not isinstance(call.get("method"), str)
    ):
        call_id = call.get("id") if isinstance(call, dict) else None
        return _error(call_id, INVALID_REQUEST, "Invalid request")
    call_id = call.get("id")
    notification = "id" not in call
    params = call.get("params", {})
    if not isinstance(params, dict):
        return _error(call_id, INVALID_PARAMS, "`params` must be an object")
    entry = METHODS.get(call["method"])
    if entry is None:
        return None if notification else _error(call_id, METHOD_NOT_FOUND, "Method not found")
    method, operation = entry
    try:
        if identity is None:
            raise GatewayError(ErrorCode.NOT_AUTHENTICATED)
        require(identity, MESSAGE_PERMISSIONS[operation])
        result = await method(gateway, identity, params)
    except InvalidParams as exc:
        return None if notification else _error(call_id, INVALID_PARAMS, str(exc))
    except GatewayError as exc:
        code = RPC_CODES.get(exc.code, INTERNAL)
        return None if notification else _error(call_id, code, exc.message, exc.code.value)
    except Exception as exc:
        logger.opt(exception=exc).error("rpc method {} failed", call["method"])
        return (
            None if notification else _error(call_id, INTERNAL, "Internal error", "INTERNAL_ERROR")
        )
    return None if notification else {"jsonrpc": "2.0", "id": call_id, "result": result}


@bp.post("/rpc")
async def rpc(request: Request) -> HTTPResponse:
    gateway: Gateway = request.app.ctx.gateway
    try:
        payload = msgspec.json.decode(request.body or b"")
    except msgspec.DecodeError:
        return json(_error(None, PARSE_ERROR, "Parse error", "INVALID_JSON"))
    try:
        identity: Identity | None = await request_identity(request)
    except GatewayError:
        identity = None  # each call answers -32010 on its own
    if isinstance(payload, list):
        if not payload:
            return json(_error(None, INVALID_REQUEST, "Empty batch"))
        replies = [await _call(gateway, identity, call) for call in payload[:100]]
        answered = [reply for reply in replies if reply is not None]
        return json(answered) if answered else empty(status=204)
    reply = await _call(gateway, identity, payload)
    return json(reply) if reply is not None else empty(status=204)
