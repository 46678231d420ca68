"""Tokens expire (PROTOCOL.md §3): where the client gets one, and how it answers `auth_expiring`.

`token` may be a callable (sync or async) that the client calls for a fresh token at every
connect and whenever the server sends `auth_expiring`, so one socket outlives any number of
short-lived tokens. A plain string cannot be refreshed; the client says so instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from diminuendo.client.errors import ClientError, ConnectionFailed
from diminuendo.client.events import AuthExpiring

TokenSource = str | Callable[[], str | Awaitable[str]]
"""A bearer token, or a function (sync or async) returning a currently valid one."""

logger = logging.getLogger("diminuendo.client")


async def current_token(source: TokenSource | None) -> str | None:
    """The token to authenticate with now: the string, or what the callable returns. A
    failing callable is `ConnectionFailed`, so a reconnect retries it with backoff."""
    if source is None or isinstance(source, str):
        return source
    try:
        token = source()
        if inspect.isawaitable(token):
            token = await token
    except Exception as exc:
        raise ConnectionFailed(f"the token callback failed: {exc!r}") from exc
    return token


class TokenRefresh:
    """Answers `auth_expiring` by authenticating again, on the open socket, with a fresh token
    from the callback; the server then moves the connection's deadline. At most one refresh
    runs at a time. `reauthenticate` sends the `authenticate` request with the token given."""

    def __init__(self, reauthenticate: Callable[[str | None], Awaitable[None]]) -> None:
        self._reauthenticate = reauthenticate
        self._task: asyncio.Task[None] | None = None

    def on_expiring(self, source: TokenSource | None, event: AuthExpiring) -> None:
        """With a plain string there is nothing fresher to send: the socket will be closed with
        4003 and the reconnect fail, so say so now."""
        if source is None or isinstance(source, str):
            logger.warning(
                "the token expires at %d (epoch ms) and cannot be refreshed: "
                "pass a callable as token= to keep the connection",
                event.expires_at,
            )
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh(source), name="diminuendo-auth")

    async def _refresh(self, source: TokenSource) -> None:
        """A failure is only logged: at expiry the socket closes (4003) and the reconnect asks
        the callback again."""
        try:
            await self._reauthenticate(await current_token(source))
        except (ClientError, TimeoutError) as exc:
            logger.warning("refreshing the token failed: %s", exc)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
