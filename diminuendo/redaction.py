"""The one redaction function: error replies, logs and health output all pass through it.

Secrets reach text by accident — an upstream echoing a header, an exception holding a URL with
credentials, a client pasting a token into a name. Rather than trust each call site, everything
that leaves the process as text is scrubbed here.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"
MAX_CLIENT_MESSAGE = 500

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # JWTs (three base64url parts, header starts with eyJ) anywhere in text.
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Authorization headers and bearer.<jwt> subprotocols.
    (re.compile(r"(?i)\b(bearer)([ .]+)[A-Za-z0-9._~+/=-]{8,}"), r"\1\2" + REDACTED),
    # URL credentials: scheme://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
    # key=value / "key": "value" pairs whose name says secret.
    (
        re.compile(
            r"(?i)((?:api[_-]?key|secret|token|password|passwd|authorization|credential)s?"
            r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+"
        ),
        r"\1" + REDACTED,
    ),
    # Well-known provider key shapes.
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
)

# Tracebacks and file paths never reach a client.
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*", re.S)
_FILE_PATH = re.compile(r"(?:/[\w.-]+){2,}\.py\b|File \"[^\"]+\"")


def redact(text: str) -> str:
    """Remove bearer tokens, JWTs, API keys and URL credentials from `text`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def safe_message(text: str, limit: int = MAX_CLIENT_MESSAGE) -> str:
    """A message fit for a client: redacted, no traceback or source path, at most `limit` chars."""
    text = _FILE_PATH.sub("[path]", _TRACEBACK.sub("", redact(text))).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or "Error"
