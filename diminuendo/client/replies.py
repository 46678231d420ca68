"""Request/reply correlation: every client message carries a fresh `id`, the server echoes it on
its reply (PROTOCOL.md §2), and the reply resolves the future of the request that sent it.

Plain asyncio futures, no socket: the connection feeds each decoded frame to `resolve()` and
fails what is still pending when the socket drops (`fail_all`), because it cannot know whether
the server acted on a request whose reply never came.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from diminuendo.client.errors import ClientError, ServerError
from diminuendo.client.events import ErrorEvent, Event


def message(kind: str, **fields: Any) -> dict[str, Any]:
    """A client message; optional fields left as None are omitted, never sent as null."""
    return {"type": kind, **{k: v for k, v in fields.items() if v is not None}}


def server_error(event: ErrorEvent) -> ServerError:
    """The `error` frame as the exception a caller catches."""
    return ServerError(
        event.code,
        event.message,
        retry_after_ms=event.retry_after_ms,
        session_id=event.session_id,
        details=event.details,
    )


class PendingReplies:
    """The requests still waiting for their reply, by `id` (`c1`, `c2`, … per client)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Event]] = {}

    def expect(self) -> tuple[str, asyncio.Future[Event]]:
        """A fresh request id and the future its reply (or `error`) will resolve."""
        request_id = f"c{next(self._ids)}"
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return request_id, future

    def forget(self, request_id: str) -> None:
        """Stop waiting (the request finished, timed out or was never sent)."""
        self._waiting.pop(request_id, None)

    def resolve(self, event: Event) -> bool:
        """Hand `event` to the request it answers: an `error` frame as `ServerError`, any other
        frame as the reply. False when no request waits for it (an event, or a late reply)."""
        request_id = event.id
        future = self._waiting.pop(request_id, None) if request_id is not None else None
        if future is None or future.done():
            return False
        if isinstance(event, ErrorEvent):
            future.set_exception(server_error(event))
        else:
            future.set_result(event)
        return True

    def fail_all(self, error: ClientError) -> None:
        """Every waiting request raises `error` (the socket dropped, or the client closed)."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()
