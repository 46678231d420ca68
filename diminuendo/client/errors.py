"""What the client raises. Everything derives from `ClientError`, so one `except` covers it."""

from __future__ import annotations

from typing import Any

# Codes that say "try again later" rather than "this will never work" (PROTOCOL.md §12).
RETRYABLE_CODES = frozenset(
    {"RATE_LIMITED", "AUTH_RATE_LIMITED", "CAPACITY_EXCEEDED", "UPSTREAM_UNAVAILABLE", "DRAINING"}
)


class ClientError(Exception):
    """Base of every error this client raises."""


class ProtocolError(ClientError):
    """The server sent something that is not a protocol frame (not JSON, not an object, no
    string `type`), or a reply of a type the request cannot have."""


class ServerError(ClientError):
    """The server answered with an `error` (or refused the upgrade with one). `code` is the
    stable §12 code to switch on; `message` is safe to show a user."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after_ms: int | None = None,
        session_id: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.session_id = session_id
        self.details = details

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (rate limits, capacity, draining)."""
        return self.code in RETRYABLE_CODES


class ConnectionFailed(ClientError):
    """No connection could be opened: refused, timed out, or the handshake failed."""


class ConnectionLost(ClientError):
    """The connection dropped while a request waited for its reply (it may or may not have taken
    effect), or the client gave up reconnecting, or it was closed."""
