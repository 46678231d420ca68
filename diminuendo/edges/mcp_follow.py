"""A tool call that follows a turn (`run_turn`, `answer_question`): the I/O half of
`mcp_turn.TurnWatch` (docs/EDGES.md "MCP").

The call subscribes to the session, starts or continues the turn, and reports progress until
the turn ends or waits for an answer; its result is the turn's as a tool result. It is a stream
like REST's SSE: it holds a place toward the connection limits (over one it is refused before
the turn starts) and ends with `NOT_AUTHENTICATED` when its token expires, or `DRAINING` when the
gateway shuts down, the turn going on in the runtime. A cancelled call stops the turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent

from diminuendo.auth.identity import Identity
from diminuendo.edges.abandoned import stop_abandoned_turn
from diminuendo.edges.mcp_turn import TurnWatch, summary
from diminuendo.edges.subscription import decode_event, subscribed
from diminuendo.gateway.context import Gateway
from diminuendo.gateway.stream_limits import held_stream, token_expired
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.sessions.stream import Frame

# What a following call does once subscribed: start or continue the turn (given the watch and
# the join snapshot).
Act = Callable[[TurnWatch, dict[str, Any]], Awaitable[None]]


def tool_result(result: dict[str, Any]) -> CallToolResult:
    """A result dict (a turn's, or a refusal's `status: error`) as the tool result: its summary
    as text for the model, the dict itself as the structured content."""
    return CallToolResult(
        content=[TextContent(type="text", text=summary(result))],
        structured_content=result,
        is_error=result["status"] == "error",
    )


class _WatchSubscriber:
    """Feeds the session's frames to a `TurnWatch` and wakes the waiting tool call."""

    def __init__(self, watch: TurnWatch) -> None:
        self.watch = watch
        self.ready = asyncio.Event()

    def deliver(self, frame: Frame) -> None:
        if self.watch.observe(decode_event(frame.data)):
            self.ready.set()


async def follow(
    ctx: Context, gateway: Gateway, identity: Identity, session_id: str, act: Act
) -> CallToolResult:
    """Subscribe to the session, `act`, then report progress until the turn ends or waits for
    an answer, holding a place toward the connection limits all along."""
    with held_stream(gateway, identity) as ends_at:
        return await _follow_turn(ctx, gateway, identity, session_id, act, ends_at)


async def _follow_turn(
    ctx: Context,
    gateway: Gateway,
    identity: Identity,
    session_id: str,
    act: Act,
    ends_at: float,
) -> CallToolResult:
    watch = TurnWatch(session_id)
    subscriber = _WatchSubscriber(watch)
    async with subscribed(gateway, identity, session_id, subscriber) as joined:
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
                await _report_progress(ctx, watch)
            # The turn's last text can arrive with its end while a report was being sent.
            await _report_progress(ctx, watch)
            assert watch.result is not None
            return tool_result(watch.result)
        except asyncio.CancelledError:
            if not watch.done and watch.turn_id is not None:
                stop_abandoned_turn(gateway, identity, session_id, watch.turn_id)
            raise


async def _report_progress(ctx: Context, watch: TurnWatch) -> None:
    progress = watch.take_progress()
    if progress is not None:
        await ctx.report_progress(progress.progress, message=progress.message)
