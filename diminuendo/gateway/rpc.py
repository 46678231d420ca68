"""Fabric JSON-RPC 2.0 at `POST /rpc` (PROTOCOL.md §10, §13): single and batch calls onto the
same `SessionService`, authorised by the same permission table as the WebSocket, with params
validated by the same message structs and every call counted against the REST rate limit."""

from __future__ import annotations

import time
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
from diminuendo.gateway.rest import json_reply
from diminuendo.gateway.rest_auth import request_identity
from diminuendo.protocol import PROTOCOL_VERSION, rest
from diminuendo.protocol import messages as m
from diminuendo.protocol.codec import convert_message, decode_json
from diminuendo.protocol.errors import ErrorCode, GatewayError

bp = Blueprint("rpc")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = (
    -32700,
    -32600,
    -32601,
    -32602,
    -32603,
)
RATE_LIMITED = -32029
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
    ErrorCode.RATE_LIMITED: RATE_LIMITED,
    ErrorCode.INVALID_MESSAGE: INVALID_PARAMS,
    ErrorCode.INVALID_JSON: PARSE_ERROR,
}

Method = Callable[[Gateway, Identity, Any], Awaitable[Any]]


async def _initialize(gateway: Gateway, identity: Identity, params: m.Ping) -> Any:
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "serverInfo": {"name": "diminuendo", "version": __version__},
        "profiles": ["conversation", "inference"],
    }


async def _capabilities(gateway: Gateway, identity: Identity, params: m.Ping) -> Any:
    return {"methods": sorted(METHODS)}


async def _health(gateway: Gateway, identity: Identity, params: m.Ping) -> Any:
    return gateway.health_report.body()[0]


async def _create(gateway: Gateway, identity: Identity, params: m.CreateSession) -> Any:
    return await gateway.sessions.create_session(
        identity,
        params.agent_type,
        name=params.name,
        project_id=params.project_id,
        metadata=params.metadata,
    )


async def _list(gateway: Gateway, identity: Identity, params: m.ListSessions) -> Any:
    return {"sessions": await gateway.sessions.list_sessions(identity, params.include_archived)}


async def _send(gateway: Gateway, identity: Identity, params: m.RunTurn) -> Any:
    turn = await gateway.sessions.run_turn(
        identity, params.session_id, params.text, params.client_turn_id
    )
    return rest.TurnAccepted(turn_id=turn.turn_id)


async def _history(gateway: Gateway, identity: Identity, params: m.GetHistory) -> Any:
    return await gateway.sessions.history(
        identity, params.session_id, limit=params.limit, before=params.before
    )


async def _cancel(gateway: Gateway, identity: Identity, params: m.StopTurn) -> Any:
    await gateway.sessions.stop_turn(identity, params.session_id)
    return {}


async def _models(gateway: Gateway, identity: Identity, params: m.ListSessions) -> Any:
    return rest.ModelList(models=await gateway.ensemble.models())


# method → (implementation, the WebSocket message whose struct validates the params and whose
# permission the call needs)
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


def _error(call_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> Any:
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": call_id, "error": error}


def _valid_id(call_id: Any) -> bool:
    """JSON-RPC 2.0 §4: an id is a string, a number or null (`true` is not a number)."""
    return call_id is None or (
        isinstance(call_id, str | int | float) and not isinstance(call_id, bool)
    )


def _charge(gateway: Gateway, identity: Identity) -> None:
    """Each call counts against the caller's REST rate limit (the same window as `authorize`)."""
    wait = gateway.rest_limits.hit(f"{identity.tenant_id}/{identity.user_id}", time.monotonic())
    if wait is not None:
        raise GatewayError(ErrorCode.RATE_LIMITED, retry_after_ms=max(1, int(wait * 1000)))


async def _call(gateway: Gateway, identity: Identity | None, call: Any) -> dict[str, Any] | None:
    """One call's response, or None for a notification (which is never answered)."""
    if not isinstance(call, dict):
        return _error(None, INVALID_REQUEST, "A call must be a JSON object")
    call_id = call.get("id")
    if not _valid_id(call_id):
        return _error(None, INVALID_REQUEST, "`id` must be a string, a number or null")
    if call.get("jsonrpc") != "2.0" or not isinstance(call.get("method"), str):
        return _error(call_id, INVALID_REQUEST, "Invalid request")
    response = await _run(gateway, identity, call_id, call["method"], call.get("params", {}))
    return None if "id" not in call else response


async def _run(
    gateway: Gateway, identity: Identity | None, call_id: Any, name: str, params: Any
) -> dict[str, Any]:
    entry = METHODS.get(name)
    if entry is None:
        return _error(call_id, METHOD_NOT_FOUND, "Method not found")
    method, operation = entry
    try:
        if identity is None:
            raise GatewayError(ErrorCode.NOT_AUTHENTICATED)
        _charge(gateway, identity)
        require(identity, MESSAGE_PERMISSIONS[operation])
        if not isinstance(params, dict):
            raise GatewayError(ErrorCode.INVALID_MESSAGE, "`params` must be an object")
        result = await method(gateway, identity, convert_message(params, operation))
    except GatewayError as exc:
        data: dict[str, Any] = {"code": exc.code.value}
        if exc.retry_after_ms is not None:
            data["retryAfterMs"] = exc.retry_after_ms
        return _error(call_id, RPC_CODES.get(exc.code, INTERNAL), exc.message, data)
    except Exception as exc:
        logger.opt(exception=exc).error("rpc method {} failed", name)
        return _error(call_id, INTERNAL, "Internal error", {"code": "INTERNAL_ERROR"})
    return {"jsonrpc": "2.0", "id": call_id, "result": result}


@bp.post("/rpc")
async def rpc(request: Request) -> HTTPResponse:
    gateway: Gateway = request.app.ctx.gateway
    try:
        payload = decode_json(request.body or b"")
    except msgspec.DecodeError:
        return json(_error(None, PARSE_ERROR, "Parse error", {"code": "INVALID_JSON"}))
    try:
        identity: Identity | None = await request_identity(request)
    except GatewayError:
        identity = None  # each call answers -32010 on its own
    if not isinstance(payload, list):
        reply = await _call(gateway, identity, payload)
        return json_reply(reply) if reply is not None else empty(status=204)
    if not payload:
        return json(_error(None, INVALID_REQUEST, "Empty batch"))
    limit = gateway.settings.rpc_batch_max
    if len(payload) > limit:
        # Refused whole: running a prefix and dropping the rest would lose calls silently.
        return json(_error(None, INVALID_REQUEST, f"A batch holds at most {limit} calls"))
    replies = [await _call(gateway, identity, call) for call in payload]
    answered = [reply for reply in replies if reply is not None]
    return json_reply(answered) if answered else empty(status=204)
