"""Per-task request context (request, connection, tenant, session ids) for logs and upstream calls.

Context variables follow asyncio tasks, so a value set while handling one client message is seen
by the log lines and upstream requests that message causes, and by nothing else.
"""

from __future__ import annotations

import itertools
import re
import secrets
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

_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count()
# The whole value must match (`fullmatch`): with `re.match` and `$`, a final newline passed, and
# httpx refuses a header holding one, so every upstream call of that request failed.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_request_id() -> str:
    """A fresh 16-hex-digit request id: random per process, then a counter. Unique enough to
    join one request's log lines across services, and a fraction of uuid4's cost (it is minted
    for every HTTP request and every WebSocket message)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


def incoming_request_id(value: str | None) -> str:
    """A caller's X-Request-ID when all of it is a safe token (1-64 of `A-Za-z0-9._:-`), so it
    can be propagated upstream and logged as is; otherwise a fresh id."""
    if value and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()
