"""Opening one socket: the upgrade and the `welcome → connected → authenticated` handshake
(PROTOCOL.md §2, §3), with every way it can fail turned into a `ClientError` a caller can read.

Used for the first connect and for every reconnect; it knows nothing of requests or
subscriptions, only how to get from a URL to an authenticated socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from diminuendo import __version__
from diminuendo.client.errors import ClientError, ConnectionFailed, ProtocolError, ServerError
from diminuendo.client.events import (
    Authenticated,
    Connected,
    ErrorEvent,
    Identity,
    ServerFrame,
    Welcome,
    decode_event,
)
from diminuendo.client.replies import message, server_error
from diminuendo.protocol import SUBPROTOCOL

# §6: the server sends a heartbeat every `heartbeatIntervalMs`; a client that hears nothing for
# that long plus this grace (35 s at the default 30 s) treats the socket as stale.
STALE_GRACE_S = 5.0

_encoder = msgspec.json.Encoder()
Frame = TypeVar("Frame", bound=ServerFrame)


@dataclass(frozen=True)
class Opened:
    """An authenticated socket and what its handshake told the client."""

    ws: ClientConnection
    identity: Identity
    server_version: str
    stale_after_s: float  # no frame for this long: the socket is stale


async def open_socket(
    url: str,
    *,
    protocol_version: int,
    open_timeout_s: float,
    token: Callable[[], Awaitable[str | None]],
) -> Opened:
    """Connect and authenticate, in at most `open_timeout_s` for each of the two steps.
    `token` is asked only when the server requires authentication. Raises `ConnectionFailed`
    (retrying may help), `ServerError` (the server said why) or `ProtocolError`."""
    try:
        ws = await connect(
            _upgrade_url(url, protocol_version),
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            compression=None,  # §2: no compression
            max_size=None,  # the server bounds its own frames; a file may be large
            open_timeout=open_timeout_s,
            user_agent_header=f"diminuendo-client/{__version__}",
        )
    except InvalidStatus as exc:
        raise _refusal(url, exc) from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise ConnectionFailed(f"cannot connect to {url}: {_reason(exc)}") from exc
    try:
        async with asyncio.timeout(open_timeout_s):
            return await _handshake(ws, protocol_version, token)
    except BaseException as exc:
        ws.transport.abort()
        if isinstance(exc, TimeoutError | ConnectionClosed):
            raise ConnectionFailed(f"handshake with {url} failed: {_reason(exc)}") from exc
        raise


def _upgrade_url(url: str, protocol_version: int) -> str:
    """The URL with `?protocolVersion=N`, so the server refuses a version it does not speak
    before the handshake, also in dev mode where no `authenticate` is sent."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "protocolVersion"]
    query.append(("protocolVersion", str(protocol_version)))
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _handshake(
    ws: ClientConnection, protocol_version: int, token: Callable[[], Awaitable[str | None]]
) -> Opened:
    """welcome → connected → authenticated, sending `authenticate` when the server asks."""
    welcome = await _receive(ws, Welcome)
    if welcome.protocol_version != protocol_version:
        raise ProtocolError(f"the server speaks protocol {welcome.protocol_version}")
    connected = await _receive(ws, Connected)
    if welcome.requires_auth:
        bearer = await token()
        if bearer is None:
            raise ServerError("NOT_AUTHENTICATED", "The server requires a token")
        authenticate = message("authenticate", token=bearer, protocolVersion=protocol_version)
        await ws.send(_encoder.encode(authenticate), text=True)
    authenticated = await _receive(ws, Authenticated)
    return Opened(
        ws=ws,
        identity=authenticated.identity,
        server_version=welcome.server_version,
        stale_after_s=connected.heartbeat_interval_ms / 1000 + STALE_GRACE_S,
    )


async def _receive(ws: ClientConnection, expected: type[Frame]) -> Frame:
    """The next handshake frame of type `expected`; an `error` frame raises it."""
    while True:
        event = decode_event(await ws.recv())
        if isinstance(event, ErrorEvent):
            raise server_error(event)
        if isinstance(event, expected):
            return event


def _refusal(url: str, exc: InvalidStatus) -> ClientError:
    """An upgrade refused with an HTTP status: the body's `{"error": {code, message}}` when the
    gateway sent one (401 bad token, 403 origin, 503 draining), else the bare status."""
    status = exc.response.status_code
    try:
        error = msgspec.json.decode(exc.response.body or b"")["error"]
        return ServerError(str(error["code"]), f"{error['message']} (HTTP {status} from {url})")
    except (msgspec.DecodeError, KeyError, TypeError):
        return ConnectionFailed(f"{url} refused the connection with HTTP {status}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
