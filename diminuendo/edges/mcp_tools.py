"""The MCP tool set and resources (docs/EDGES.md), built on the `mcp` SDK's `MCPServer`.

Defined once, served over streamable HTTP at `/mcp` by the gateway (`diminuendo.edges.mcp`);
`diminuendo mcp` (stdio) forwards to that endpoint rather than defining the tools again.

Every tool and resource reads the caller and the gateway from the HTTP request the SDK hands it:
the `/mcp` route authenticated the bearer token exactly as REST does and put both into the ASGI
scope, and each tool checks its own permission in the one table (`auth/policy.py`). A gateway
refusal becomes the tool's error result (`isError`, the error code first, and `status: error`
with `code` and `message` in the structured content); a turn the runtime fails is an error
result of the same shape, with the code the gateway's own clients see.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from diminuendo import __version__
from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import MESSAGE_PERMISSIONS, require
from diminuendo.edges.abandoned import stop_abandoned_turn
from diminuendo.edges.asgi import SCOPE_GATEWAY, SCOPE_IDENTITY
from diminuendo.edges.mcp_turn import TurnWatch, summary
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.stream_limits import held_stream, token_expired
from diminuendo.protocol import messages as m
from diminuendo.protocol.codec import convert_message
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.stream import Frame, Replay

# Keys of the ASGI scope through which the `/mcp` route hands the caller to the tools.

_decode_event = msgspec.json.Decoder().decode
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _caller(ctx: Context, operation: type[m.ClientMessage]) -> tuple[Gateway, Identity]:
    scope = ctx.request_context.request.scope
    identity: Identity = scope[SCOPE_IDENTITY]
    require(identity, MESSAGE_PERMISSIONS[operation])
    return scope[SCOPE_GATEWAY], identity


def _tool_errors(tool: _F) -> _F:
    """A gateway refusal is the tool's error result, its code first (`CODE: message`) and in
    the structured content, as a turn's runtime error is."""

    @functools.wraps(tool)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await tool(*args, **kwargs)
        except GatewayError as exc:
            return _result({"status": "error", "code": str(exc.code), "message": exc.message})

    return guarded  # type: ignore[return-value]


def _resource_errors(read: _F) -> _F:
    @functools.wraps(read)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await read(*args, **kwargs)
        except GatewayError as exc:
            raise ResourceError(f"{exc.code}: {exc.message}") from None

    return guarded  # type: ignore[return-value]


class _WatchSubscriber:
    """Feeds the session's frames to a `TurnWatch` and wakes the waiting tool call."""

    def __init__(self, watch: TurnWatch) -> None:
        self.watch = watch
        self.ready = asyncio.Event()

    def deliver(self, frame: Frame) -> None:
        if self.watch.observe(_decode_event(frame.data)):
            self.ready.set()


def _result(result: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=summary(result))],
        structured_content=result,
        is_error=result["status"] == "error",
    )


async def _follow(
    ctx: Context,
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    act: Callable[[TurnWatch, dict[str, Any]], Awaitable[None]],
) -> CallToolResult:
    """Subscribe to the session, `act` (start or continue a turn), then report progress until
    the turn ends or waits for an answer. A cancelled call stops the turn. The call is a
    stream like REST's SSE: it holds a place toward the connection limits (over one it is
    refused before the turn starts) and ends with `NOT_AUTHENTICATED` when its token expires,
    the turn going on in the runtime."""
    with held_stream(gateway, identity) as ends_at:
        return await _follow_turn(ctx, gateway, identity, session_id, act, ends_at)


async def _follow_turn(
    ctx: Context,
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    act: Callable[[TurnWatch, dict[str, Any]], Awaitable[None]],
    ends_at: float,
) -> CallToolResult:
    watch = TurnWatch(session_id)
    subscriber = _WatchSubscriber(watch)
    joined: dict[str, Any] = {}

    def send(snapshot: dict[str, Any], replay: Replay) -> None:
        joined.update(snapshot)

    sessions = gateway.sessions
    await sessions.join(identity, subscriber, session_id, after_seq=None, epoch=None, send=send)
    try:
        await act(watch, joined)
        while not watch.done:
            if gateway.draining:
                raise GatewayError(ErrorCode.DRAINING)
            left = ends_at - time.time()
            if left <= 0:
                raise token_expired()
            subscriber.ready.clear()
            try:
                await asyncio.wait_for(subscriber.ready.wait(), min(1.0, left))
            except TimeoutError:
                continue
            progress = watch.take_progress()
            if progress is not None:
                await ctx.report_progress(progress.progress, message=progress.message)
        assert watch.result is not None
        return _result(watch.result)
    except asyncio.CancelledError:
        if not watch.done and watch.turn_id is not None:
            stop_abandoned_turn(gateway, identity, session_id, watch.turn_id)
        raise
    finally:
        sessions.leave(session_id, subscriber)


def build_server() -> MCPServer:
    """The gateway's MCP server: the tools and resource templates below."""
    server: MCPServer = MCPServer(
        "diminuendo",
        version=__version__,
        # Nothing would ever publish to a subscription: the gateway keeps no MCP session.
        subscriptions=False,
        instructions=(
            "Agent sessions of the Diminuendo gateway. list_agent_types, then start_session, "
            "then run_turn; when a turn returns status input_required, answer_question "
            "continues it. Transcripts and workspace files are resources."
        ),
    )
    read_only = ToolAnnotations(readOnlyHint=True)

    @server.tool(annotations=read_only)
    @_tool_errors
    async def list_agent_types(ctx: Context) -> dict[str, Any]:
        """The agent types a session can be started with."""
        gateway, _ = _caller(ctx, m.ListSessions)
        return {"agentTypes": await gateway.podium.agent_types()}

    @server.tool(annotations=read_only)
    @_tool_errors
    async def list_sessions(ctx: Context, include_archived: bool = False) -> dict[str, Any]:
        """Your sessions, most recently active first."""
        gateway, identity = _caller(ctx, m.ListSessions)
        return {"sessions": await gateway.sessions.list_sessions(identity, include_archived)}

    @server.tool()
    @_tool_errors
    async def start_session(
        ctx: Context, agent_type: str, name: str | None = None
    ) -> dict[str, Any]:
        """Start a session with an agent type; returns the session (its `id` is what the other
        tools take as session_id)."""
        gateway, identity = _caller(ctx, m.CreateSession)
        body = convert_message({"agentType": agent_type, "name": name}, m.CreateSession)
        return await gateway.sessions.create_session(identity, body.agent_type, name=body.name)

    @server.tool()
    @_tool_errors
    async def run_turn(ctx: Context, session_id: str, text: str) -> CallToolResult:
        """Send a message to the session's agent and wait for its answer, with progress
        notifications while it works. Returns the final text, or status input_required with
        the agent's question (answer it with answer_question)."""
        gateway, identity = _caller(ctx, m.RunTurn)
        turn = convert_message({"sessionId": session_id, "text": text}, m.RunTurn)

        async def start(watch: TurnWatch, joined: dict[str, Any]) -> None:
            def accepted(turn_id: str) -> None:
                watch.turn_id = turn_id

            await gateway.sessions.run_turn(
                identity, turn.session_id, turn.text, on_accept=accepted
            )

        return await _follow(ctx, gateway, identity, turn.session_id, start)

    @server.tool()
    @_tool_errors
    async def answer_question(
        ctx: Context,
        session_id: str,
        request_id: str,
        answers: dict[str, Any] | None = None,
        approved: bool | None = None,
        dismissed: bool = False,
    ) -> CallToolResult:
        """Answer the question (answers: question id → answer) or permission request
        (approved: true/false) a turn is waiting on, then wait for the turn to go on as
        run_turn does. dismissed=true declines to answer."""
        gateway, identity = _caller(ctx, m.AnswerQuestion)
        fields = {"sessionId": session_id, "requestId": request_id, "answers": answers}
        if approved is not None:
            fields["approved"] = approved
        # Unanswered means not approved, and both true is refused: the WebSocket message's rules.
        given = convert_message({**fields, "dismissed": dismissed}, m.AnswerQuestion)

        async def answer(watch: TurnWatch, joined: dict[str, Any]) -> None:
            watch.turn_id = (joined.get("currentTurn") or {}).get("turnId")
            await gateway.sessions.answer(
                identity,
                given.session_id,
                given.request_id,
                answers=given.answers,
                approved=given.approved,
                dismissed=given.dismissed,
            )

        return await _follow(ctx, gateway, identity, given.session_id, answer)

    @server.tool()
    @_tool_errors
    async def stop_turn(ctx: Context, session_id: str) -> dict[str, Any]:
        """Stop the session's running turn (nothing happens when none is running)."""
        gateway, identity = _caller(ctx, m.StopTurn)
        stop = convert_message({"sessionId": session_id}, m.StopTurn)
        await gateway.sessions.stop_turn(identity, stop.session_id)
        return {"sessionId": session_id, "stopped": True}

    @server.resource(
        "diminuendo://sessions/{session_id}/transcript",
        name="transcript",
        description="A session's durable transcript (the latest 500 messages), as JSON",
        mime_type="application/json",
    )
    @_resource_errors
    async def transcript(session_id: str, ctx: Context) -> str:
        gateway, identity = _caller(ctx, m.GetHistory)
        history = await gateway.sessions.history(identity, session_id, limit=500, before=None)
        return json.dumps(history)

    @server.resource(
        "diminuendo://sessions/{session_id}/files/{+path}",
        name="workspace-file",
        description="A file of a session's workspace, as the agent last wrote it",
    )
    @_resource_errors
    async def workspace_file(session_id: str, path: str, ctx: Context) -> str | bytes:
        gateway, identity = _caller(ctx, m.ReadFile)
        file = await gateway.sessions.read_file(identity, session_id, path)
        if file["encoding"] == "base64":
            return base64.b64decode(file["content"])
        return file["content"]

    return server
