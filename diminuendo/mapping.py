"""Podium runtime frame → client event: one pure, table-driven projection.

Podium speaks snake_case and several generations of event names; clients get the camelCase events
of PROTOCOL.md §6. Everything about that translation lives in `_TABLE` below, so a change upstream
is a change to one row, and the function is tested on its own (UPSTREAMS.md §1).

The projection is an allow-list: only the fields named in a row leave, so internal upstream fields
(`event_id`, `instance_id`, …) never reach a client. It adds no `sessionId`, `seq` or `ts`: those
belong to the session's stream, which stamps them when it publishes.

Malformed input never raises, because one bad frame must not take down the runtime socket that
carries every other event of the session. The rules:

* a frame that is not a mapping, or has no usable event name → `None`;
* a `content` that is absent or null counts as `{}`; any other non-object `content` → `None`;
* a field value of the wrong type counts as absent: a required field then gets its default, an
  optional one is omitted (never sent as null). The only conversions: an integral float becomes an
  int (`3.0` tokens), and a decimal-string `cost` (as Ensemble reports it) becomes a number;
* a row with a drop rule (`text_delta`, `thinking.progress`) maps to `None` when its text is empty
  or absent, since an empty delta carries nothing and an empty thinking block is noise;
* nested values (`args`, `output`, `questions`, `steps`, `answers`, `options`) pass through
  unchanged once their container type is right;
* a `turn_error` keeps its code only when it is one of PROTOCOL §12 (else `UPSTREAM_ERROR`) and
  its message goes through `redaction.safe_message`: runtime exception text can hold keys, URL
  credentials, tokens, paths and tracebacks, and it is shown to every member of the session.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from diminuendo.protocol.errors import ErrorCode
from diminuendo.redaction import safe_message

__all__ = ["Unknown", "event_name", "map_event"]


class Unknown(NamedTuple):
    """An event name with no row. The caller logs it once per name and counts it; it is not
    forwarded, because a client cannot act on an event it has no contract for."""

    name: str


# ---- value coercers: return the client value, or None when the value is unusable


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):  # bool is an int subclass, but True is not an exit code
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _number(value: Any) -> int | float | None:
    # Costs arrive as JSON numbers or as decimal strings (Ensemble reports "0.000111").
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _json(value: Any) -> Any:
    return value


def _safe_text(value: Any) -> str | None:
    # Runtime error text reaches users: redacted, no traceback or path, ≤ 500 chars (§12).
    return safe_message(value) if isinstance(value, str) and value.strip() else None


_ERROR_CODES = frozenset(ErrorCode)


def _error_code(value: Any) -> str | None:
    # Only the stable §12 codes: a client switches on them (a runtime's own `AGENT_ERROR` is not).
    return value if isinstance(value, str) and value in _ERROR_CODES else None


# ---- the table

_Coerce = Callable[[Any], Any]
# A default is a factory, so a mutable default ({} or []) is never shared between events.
_Default = Callable[[], Any] | None


class _Field(NamedTuple):
    src: str  # snake_case key in the Podium content
    dst: str  # camelCase key in the client event
    coerce: _Coerce
    default: _Default  # None: optional, omitted when absent


class _Row(NamedTuple):
    names: tuple[str, ...]  # Podium event names, aliases included
    type: str  # client event type
    fields: tuple[_Field, ...]
    drop_if_empty: str | None = None  # client key whose empty/absent value drops the event


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _req(src: str, coerce: _Coerce, default: Callable[[], Any]) -> _Field:
    return _Field(src, _camel(src), coerce, default)


def _opt(src: str, coerce: _Coerce) -> _Field:
    return _Field(src, _camel(src), coerce, None)


def _const(value: str | int) -> Callable[[], str | int]:
    return lambda: value


def _project(content: Mapping[Any, Any], fields: tuple[_Field, ...], out: dict[str, Any]) -> None:
    """Copy `fields` from `content` into `out`, applying coercion and defaults."""
    for src, dst, coerce, default in fields:
        value = content.get(src)
        if value is not None:
            value = coerce(value)
        if value is None:
            if default is None:
                continue
            value = default()
        out[dst] = value


def _record(*fields: _Field) -> _Coerce:
    """A coercer for a nested object that is itself projected (e.g. `usage`)."""

    def coerce(value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        out: dict[str, Any] = {}
        _project(value, fields, out)
        return out

    return coerce


_TOKEN_FIELDS = (
    _req("input_tokens", _int, _const(0)),
    _req("output_tokens", _int, _const(0)),
    _opt("cost", _number),
)
_TOOL_CALL_ID = _req("tool_call_id", _str, str)
_TOOL_NAME = _req("tool_name", _str, str)
_REQUEST_ID = _req("request_id", _str, str)
_TEXT = _req("text", _str, str)
_STEPS = _req("steps", _list, list)
_STEP_ID = _req("step_id", _str, str)

_TABLE: tuple[_Row, ...] = (
    _Row(("created", "stream_start"), "turn_started", (_opt("client_turn_id", _str),)),
    _Row(("update", "stream_update"), "text_delta", (_TEXT,), drop_if_empty="text"),
    _Row(
        ("complete", "stream_end", "stream_complete"),
        "turn_complete",
        (
            _req("final_text", _str, str),
            _req("stop_reason", _str, _const("end_turn")),
            _opt("usage", _record(*_TOKEN_FIELDS)),
        ),
    ),
    # A turn error must carry a §12 code a client can switch on, even when the agent gave none
    # or its own, and a message safe to show a user, whatever the agent's exception held.
    _Row(
        ("error",),
        "turn_error",
        (_req("code", _error_code, _const("UPSTREAM_ERROR")), _req("message", _safe_text, str)),
    ),
    _Row(("tool.call_start",), "tool_call_start", (_TOOL_CALL_ID, _TOOL_NAME)),
    _Row(("tool.call_delta",), "tool_call_delta", (_TOOL_CALL_ID, _req("args_delta", _str, str))),
    _Row(("tool.call",), "tool_call", (_TOOL_CALL_ID, _TOOL_NAME, _req("args", _json, dict))),
    _Row(
        ("tool.result",),
        "tool_result",
        (_TOOL_CALL_ID, _req("output", _json, str), _req("is_error", _bool, bool)),
    ),
    _Row(("tool.error",), "tool_error", (_TOOL_CALL_ID, _req("message", _str, str))),
    _Row(
        ("tool.question_requested",),
        "question_requested",
        (_REQUEST_ID, _req("questions", _list, list)),
    ),
    _Row(
        ("tool.permission_requested",),
        "permission_requested",
        (_REQUEST_ID, _TOOL_NAME, _req("description", _str, str), _opt("options", _list)),
    ),
    _Row(
        ("tool.approval_resolved",),
        "approval_resolved",
        (_REQUEST_ID, _opt("approved", _bool), _opt("answers", _object), _opt("dismissed", _bool)),
    ),
    _Row(("thinking.start",), "thinking.start", ()),
    _Row(
        ("thinking.progress", "thinking_update"),
        "thinking.progress",
        (_TEXT,),
        drop_if_empty="text",
    ),
    _Row(("thinking.complete",), "thinking.complete", ()),
    _Row(
        ("terminal.stream",),
        "terminal.stream",
        (_req("data", _str, str), _opt("terminal_id", _str)),
    ),
    # -1 when the exit code is missing: 0 would claim success, and real codes are 0-255.
    _Row(
        ("terminal.complete",),
        "terminal.complete",
        (_req("exit_code", _int, _const(-1)), _opt("terminal_id", _str)),
    ),
    _Row(("sandbox.provisioning",), "sandbox.provisioning", ()),
    _Row(("sandbox.init",), "sandbox.init", ()),
    _Row(("sandbox.removed",), "sandbox.removed", ()),
    _Row(("plan.created",), "plan.created", (_STEPS,)),
    _Row(("plan.step_started",), "plan.step_started", (_STEP_ID,)),
    _Row(("plan.step_completed",), "plan.step_completed", (_STEP_ID,)),
    _Row(("plan.revised",), "plan.revised", (_STEPS,)),
    _Row(("file.changed",), "file_changed", (_req("path", _str, str), _opt("iteration", _int))),
    _Row(("usage",), "usage_update", _TOKEN_FIELDS),
)

# Precomputed once: the hot path is one dict lookup per frame.
_ROWS: dict[str, _Row] = {name: row for row in _TABLE for name in row.names}

_NO_CONTENT: Mapping[str, Any] = MappingProxyType({})


# ---- public API


def event_name(frame: Mapping[str, Any]) -> str | None:
    """The Podium event name: `event_type`, else `content.event_type`, else `type`.

    Runtimes of different generations put the name in different places; the envelope `type` is
    the last resort because newer runtimes set it to the generic `"update"`. A non-string or empty
    candidate is skipped. Returns None when no candidate is usable (including a non-mapping frame).
    """
    if not isinstance(frame, Mapping):
        return None
    name = frame.get("event_type")
    if isinstance(name, str) and name:
        return name
    content = frame.get("content")
    if isinstance(content, dict):
        name = content.get("event_type")
        if isinstance(name, str) and name:
            return name
    name = frame.get("type")
    if isinstance(name, str) and name:
        return name
    return None


def map_event(frame: Mapping[str, Any]) -> dict[str, Any] | Unknown | None:
    """Project one Podium runtime frame onto its client event.

    Returns the event as a dict whose first key is `"type"`, then `turnId` when `content.turn_id`
    is a string, then the row's fields in camelCase; `Unknown(name)` for a name with no row; and
    None for a frame that is unusable or dropped by a rule (see the module docstring). Never raises.
    """
    name = event_name(frame)
    if name is None:
        return None
    row = _ROWS.get(name)
    if row is None:
        return Unknown(name)
    content = frame.get("content")
    if content is None:
        content = _NO_CONTENT
    elif not isinstance(content, dict):
        return None
    out: dict[str, Any] = {"type": row.type}
    turn_id = content.get("turn_id")
    if isinstance(turn_id, str):
        out["turnId"] = turn_id
    _project(content, row.fields, out)
    if row.drop_if_empty is not None and not out[row.drop_if_empty]:
        return None
    return out
