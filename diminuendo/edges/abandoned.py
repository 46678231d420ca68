"""Stopping the turn of an edge client that went away (shared by the HTTP edge adapters).

An AG-UI client aborts a run by dropping its request; an MCP host cancels a tool call. Either way
the Sanic handler is being cancelled, so the stop runs as its own task, kept referenced here until
it finishes. Only the edge that started or continued the turn stops it; `/ws` and REST clients
that merely watch a session never do.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from diminuendo.auth.identity import Identity
from diminuendo.gateway.context import Gateway
from diminuendo.protocol.errors import GatewayError

_stopping: set[asyncio.Task[None]] = set()


def stop_abandoned_turn(gateway: Gateway, identity: Identity, session_id: str) -> None:
    task = asyncio.create_task(_stop(gateway, identity, session_id))
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)


async def _stop(gateway: Gateway, identity: Identity, session_id: str) -> None:
    try:
        await gateway.sessions.stop_turn(identity, session_id)
    except GatewayError as exc:  # the session is gone, or its runtime is
        logger.info("could not stop the abandoned turn of {}: {}", session_id, exc.code)
