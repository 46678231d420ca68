"""The objects that server frames carry (a session, an identity, a history message …), as typed
structs in wire order (see `protocol/events.py`); `SessionMeta` is also what REST returns."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


def always_sent(default: Any) -> Any:
    """The default of a frame field that the gateway always sends, for decoding a frame that
    lacks it. Under `omit_defaults` msgspec leaves out a field whose value is its default, but
    not one whose default comes from a factory it cannot compare (this lambda), so the field
    stays on the wire whatever its value (tests/unit/test_protocol_events.py pins the bytes)."""
    if default == []:
        return msgspec.field(default_factory=lambda: [])
    return msgspec.field(default_factory=lambda: default)


class WireStruct(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """camelCase on the wire, every field encoded, immutable once built.

    Every subclass says `kw_only=True` again: msgspec does not inherit it, and a subclass
    without it puts its own fields before the inherited ones (out of wire order). A metaclass
    that adds it was tried: msgspec's fast paths want `StructMeta` itself, and building then
    encoding an `ack` took 3-4x as long (docs/DECISIONS.md, "Typed frames")."""


class Identity(WireStruct, kw_only=True):
    """The `identity` of `authenticated` (§3); `email` is `null` when the token has none."""

    user_id: str
    email: str | None = None
    tenant_id: str
    role: str


class TokenUsage(WireStruct, kw_only=True):
    input: int = 0
    output: int = 0


class SessionMeta(WireStruct, kw_only=True):
    """A session (§4). Times are Unix ms."""

    id: str
    tenant_id: str
    owner_id: str
    agent_type: str
    name: str | None = None
    project_id: str | None = None
    status: str = "inactive"
    archived: bool = False
    created_at: int
    updated_at: int
    last_activity_at: int
    epoch: str = ""
    last_seq: int = 0
    token_usage: TokenUsage = TokenUsage()
    metadata: dict[str, Any] | None = None


class CurrentTurn(WireStruct, kw_only=True):
    """The running turn in a `state_snapshot`, with the text streamed so far."""

    turn_id: str
    text: str
    started_at: int


class Question(WireStruct, kw_only=True):
    id: str
    text: str
    options: list[Any] | None = None


class Usage(WireStruct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None


class HistoryToolCall(WireStruct, kw_only=True):
    tool_call_id: str | None = None
    tool_name: str | None = None
    args: Any = None
    output: Any = None


class HistoryMessage(WireStruct, kw_only=True):
    """`truncated`: the message alone was larger than a reply, so `text` is cut (and
    `tool_calls` may be left out); the durable transcript keeps it whole. `toolCalls` and
    `truncated` are absent when not set; `turnId` and `ts` are `null` when unknown."""

    id: str
    role: str
    text: str
    turn_id: str | None = None
    ts: int | None = None
    tool_calls: list[HistoryToolCall] | UnsetType = UNSET
    truncated: bool | UnsetType = UNSET


class FileEntry(WireStruct, kw_only=True):
    path: str
    type: str
    size: int | None = None
    modified_at: int | None = None


class FileIteration(WireStruct, kw_only=True):
    iteration: int
    timestamp: int
    size: int
    hash: str


class Member(WireStruct, kw_only=True):
    user_id: str
    role: str
