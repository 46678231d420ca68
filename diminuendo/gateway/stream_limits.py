"""The admission and token lifetime of a long-lived HTTP stream (PROTOCOL.md §3, §13): REST's
SSE and the edges' streamed runs (AG-UI's run, MCP's turn-following tool calls, A2A's streamed
tasks) hold a place like a WebSocket connection and end when their token does.

One place for the policy, so that every stream counts and expires the same way: a stream cannot
be handed a fresh token, so at `exp` + `AUTH_CLOCK_LEEWAY` it ends and the client comes back
with a new one (the turn goes on in the runtime, as when a socket closes).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from diminuendo.auth.identity import Identity
from diminuendo.gateway.context import Gateway
from diminuendo.protocol.errors import ErrorCode, GatewayError

TOKEN_EXPIRED_MESSAGE = "Your token expired; come back with a fresh one"
# The code an edge stream ends with when its client did not keep up (AG-UI `RUN_ERROR`, A2A's
# failed task; REST's SSE just ends and /ws closes 4008). Not a §12 error of a request.
SLOW_CONSUMER = "SLOW_CONSUMER"


@contextlib.contextmanager
def held_stream(gateway: Gateway, identity: Identity) -> Iterator[float]:
    """Count a stream of `identity` toward `MAX_CONNECTIONS` and `MAX_CONNECTIONS_PER_USER`
    while the block runs, and give the time (epoch seconds) it must end. Over a limit it raises
    the §13 refusal (`CAPACITY_EXCEEDED` 503, `QUOTA_EXCEEDED` 429) and counts nothing."""
    gateway.hub.open_stream(identity)
    try:
        yield stream_deadline(gateway, identity)
    finally:
        gateway.hub.close_stream(identity)


def stream_deadline(gateway: Gateway, identity: Identity) -> float:
    """When a stream of `identity` must end: its token's `exp` + leeway, or never (dev mode)."""
    if identity.expires_at is None:
        return math.inf
    return identity.expires_at + gateway.settings.auth_clock_leeway_s


def token_expired() -> GatewayError:
    """The error a stream ends with at its deadline, in each protocol's own shape."""
    return GatewayError(ErrorCode.NOT_AUTHENTICATED, TOKEN_EXPIRED_MESSAGE)
