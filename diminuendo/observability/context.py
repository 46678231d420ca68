"""Per-task request context (request, connection, tenant, session ids) for logs and upstream calls.

Context variables follow asyncio tasks, so a value set while handling one client message is seen
by the log lines and upstream requests that message causes, and by nothing else.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
client_id: ContextVar[str | None] = ContextVar("client_id", default=None)
tenant_id: ContextVar[str | None] = ContextVar("tenant_id", default=None)
session_id: ContextVar[str | None] = ContextVar("session_id", default=None)

ALL = {
    "request_id": request_id,
    "client_id": client_id,
    "tenant_id": tenant_id,
    "session_id": session_id,
}
