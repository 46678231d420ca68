"""The MCP tool set and resources (docs/EDGES.md), built on the `mcp` SDK's `MCPServer`.

Defined once, served over streamable HTTP at `/mcp` by the gateway (`diminuendo.edges.mcp`);
`diminuendo mcp` (stdio) forwards to that endpoint rather than defining the tools again. Each
tool (a method of `Tools`) and resource is a small function, registered from the `TOOLS` and
`RESOURCES` tables; a tool that runs a turn follows it through `mcp_follow`.

Every tool and resource reads the caller and the gateway from the HTTP request the SDK hands it:
the `/mcp` route authenticated the bearer token exactly as REST does and put both into the ASGI
scope, and each tool checks its own permission in the one table (`auth/policy.py`). A gateway
refusal becomes the tool's error result (`isError`, the error code first, and `status: error`
with `code` and `message` in the structured content); a turn the runtime fails is an error
result of the same shape, with the code the gateway's own clients see.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import CallToolResult, ToolAnnotations

from diminuendo import __version__
from diminuendo.auth.identity import Identity
from diminuendo.auth.policy import MESSAGE_PERMISSIONS, require
from diminuendo.edges.asgi import SCOPE_GATEWAY, SCOPE_IDENTITY
from diminuendo.edges.mcp_follow import follow, tool_result
from diminuendo.edges.mcp_turn import TurnWatch
from diminuendo.edges.replies import send_reply
from diminuendo.gateway.context import Gateway
from diminuendo.protocol import messages as m
from diminuendo.protocol.codec import convert_message
from diminuendo.protocol.errors import GatewayError

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
            return tool_result({"status": "error", "code": str(exc.code), "message": exc.message})

    return guarded  # type: ignore[return-value]


def _resource_errors(read: _F) -> _F:
    @functools.wraps(read)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await read(*args, **kwargs)
        except GatewayError as exc:
            raise ResourceError(f"{exc.code}: {exc.message}") from None

    return guarded  # type: ignore[return-value]


# ----- tools --------------------------------------------------------------------------------


class Tools:
    """The tools, each a static method: the SDK takes a tool's name, description and input
    schema from its function's name, docstring and signature. (A docstring is sent as it is,
    indentation included, so these keep the indentation their descriptions have always had.)"""

    @staticmethod
    async def list_agent_types(ctx: Context) -> dict[str, Any]:
        """The agent types a session can be started with."""
        gateway, _ = _caller(ctx, m.ListSessions)
        return {"agentTypes": await gateway.podium.agent_types()}

    @staticmethod
    async def list_sessions(ctx: Context, include_archived: bool = False) -> dict[str, Any]:
        """Your sessions, most recently active first."""
        gateway, identity = _caller(ctx, m.ListSessions)
        return {"sessions": await gateway.sessions.list_sessions(identity, include_archived)}

    @staticmethod
    async def start_session(
        ctx: Context, agent_type: str, name: str | None = None
    ) -> dict[str, Any]:
        """Start a session with an agent type; returns the session (its `id` is what the other
        tools take as session_id)."""
        gateway, identity = _caller(ctx, m.CreateSession)
        body = convert_message({"agentType": agent_type, "name": name}, m.CreateSession)
        return await gateway.sessions.create_session(identity, body.agent_type, name=body.name)

    @staticmethod
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

        return await follow(ctx, gateway, identity, turn.session_id, start)

    @staticmethod
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
            await send_reply(gateway, identity, given.session_id, given.request_id, given)

        return await follow(ctx, gateway, identity, given.session_id, answer)

    @staticmethod
    async def stop_turn(ctx: Context, session_id: str) -> dict[str, Any]:
        """Stop the session's running turn (nothing happens when none is running)."""
        gateway, identity = _caller(ctx, m.StopTurn)
        stop = convert_message({"sessionId": session_id}, m.StopTurn)
        await gateway.sessions.stop_turn(identity, stop.session_id)
        return {"sessionId": session_id, "stopped": True}


_READ_ONLY = ToolAnnotations(readOnlyHint=True)

# Each tool with its annotations, in the order `tools/list` gives them.
TOOLS: tuple[tuple[Callable[..., Awaitable[Any]], ToolAnnotations | None], ...] = (
    (Tools.list_agent_types, _READ_ONLY),
    (Tools.list_sessions, _READ_ONLY),
    (Tools.start_session, None),
    (Tools.run_turn, None),
    (Tools.answer_question, None),
    (Tools.stop_turn, None),
)


# ----- resources ----------------------------------------------------------------------------


async def transcript(session_id: str, ctx: Context) -> str:
    gateway, identity = _caller(ctx, m.GetHistory)
    history = await gateway.sessions.history(identity, session_id, limit=500, before=None)
    return json.dumps(history)


async def workspace_file(session_id: str, path: str, ctx: Context) -> str | bytes:
    gateway, identity = _caller(ctx, m.ReadFile)
    file = await gateway.sessions.read_file(identity, session_id, path)
    if file["encoding"] == "base64":
        return base64.b64decode(file["content"])
    return file["content"]


class Resource(NamedTuple):
    """A resource template: its URI template, what `resources/templates/list` says of it, and
    the function that reads it (its parameters are the template's variables)."""

    uri: str
    name: str
    description: str
    mime_type: str | None
    read: Callable[..., Awaitable[Any]]


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "diminuendo://sessions/{session_id}/transcript",
        "transcript",
        "A session's durable transcript (the latest 500 messages), as JSON",
        "application/json",
        transcript,
    ),
    Resource(
        "diminuendo://sessions/{session_id}/files/{+path}",
        "workspace-file",
        "A file of a session's workspace, as the agent last wrote it",
        None,
        workspace_file,
    ),
)


def build_server() -> MCPServer:
    """The gateway's MCP server: the `TOOLS` and the `RESOURCES` templates."""
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
    for tool, hints in TOOLS:
        server.tool(annotations=hints)(_tool_errors(tool))
    for resource in RESOURCES:
        server.resource(
            resource.uri,
            name=resource.name,
            description=resource.description,
            mime_type=resource.mime_type,
        )(_resource_errors(resource.read))
    return server
