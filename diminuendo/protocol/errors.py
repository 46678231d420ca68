"""The stable error codes of PROTOCOL.md §12 and the one exception type that carries them.

Every failure a client can see is a `GatewayError`: the code is API, the message is safe to show
a user (the caller must already have passed anything user- or upstream-derived through
`diminuendo.redaction.safe_message`). Transports turn it into their own shape: a WebSocket
`error` frame, a REST `{"error": …}` body with `http_status`, a JSON-RPC error.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from diminuendo.protocol.events import ErrorEvent


class ErrorCode(StrEnum):
    INVALID_JSON = "INVALID_JSON"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    AUTH_FAILED = "AUTH_FAILED"
    AUTH_RATE_LIMITED = "AUTH_RATE_LIMITED"
    PROTOCOL_VERSION_MISMATCH = "PROTOCOL_VERSION_MISMATCH"
    FORBIDDEN = "FORBIDDEN"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_BUSY = "SESSION_BUSY"
    INVALID_STATE = "INVALID_STATE"
    CAPACITY_EXCEEDED = "CAPACITY_EXCEEDED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    FILE_NOT_FOUND = "FILE_NOT_FOUND"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    DRAINING = "DRAINING"
    INTERNAL_ERROR = "INTERNAL_ERROR"


DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_JSON: "Frame is not valid JSON",
    ErrorCode.INVALID_MESSAGE: "Invalid message",
    ErrorCode.MESSAGE_TOO_LARGE: "Message too large",
    ErrorCode.RATE_LIMITED: "Too many messages",
    ErrorCode.NOT_AUTHENTICATED: "Authenticate first",
    ErrorCode.AUTH_FAILED: "Authentication failed",
    ErrorCode.AUTH_RATE_LIMITED: "Too many failed authentication attempts",
    ErrorCode.PROTOCOL_VERSION_MISMATCH: "Unsupported protocol version",
    ErrorCode.FORBIDDEN: "Permission denied",
    ErrorCode.SESSION_NOT_FOUND: "Session not found",
    ErrorCode.SESSION_BUSY: "A turn is already running in this session",
    ErrorCode.INVALID_STATE: "Not possible in the session's current state",
    ErrorCode.CAPACITY_EXCEEDED: "No capacity for another active session",
    ErrorCode.QUOTA_EXCEEDED: "A limit of your account or tenant is reached",
    ErrorCode.FILE_NOT_FOUND: "File not found",
    ErrorCode.FILE_TOO_LARGE: "File too large to send in one reply",
    ErrorCode.UPSTREAM_UNAVAILABLE: "A backend service is unavailable, try again shortly",
    ErrorCode.UPSTREAM_ERROR: "A backend service returned an error",
    ErrorCode.DRAINING: "Server is shutting down, reconnect to continue",
    ErrorCode.INTERNAL_ERROR: "Internal error",
}

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.NOT_AUTHENTICATED: 401,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.AUTH_RATE_LIMITED: 429,
    ErrorCode.PROTOCOL_VERSION_MISMATCH: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.SESSION_BUSY: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.CAPACITY_EXCEEDED: 503,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.FILE_NOT_FOUND: 404,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.UPSTREAM_UNAVAILABLE: 503,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.DRAINING: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}


class GatewayError(Exception):
    """A failure with a stable code and a user-safe message."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        session_id: str | None = None,
        retry_after_ms: int | None = None,
        details: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message or DEFAULT_MESSAGES[code]
        self.session_id = session_id
        self.retry_after_ms = retry_after_ms
        self.details = details
        self.extra = extra
        super().__init__(f"{code}: {self.message}")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_frame(self, request_id: str | None = None) -> ErrorEvent:
        """The WebSocket `error` frame (PROTOCOL.md §12); optional keys only when set. `extra`
        holds `supported` (a version mismatch) or `details` (in place of `self.details`)."""
        extra = self.extra or {}
        return ErrorEvent(
            code=self.code.value,
            message=self.message,
            id=request_id,
            session_id=self.session_id,
            retry_after_ms=self.retry_after_ms,
            details=extra.get("details", self.details),
            supported=extra.get("supported"),
        )
