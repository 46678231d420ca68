"""The typed frames of `protocol/events.py` from what `SessionService` answers with.

The service hands the gateway wire-shaped payloads (dicts with camelCase keys, nested values
ready to encode: a snapshot, a history or events page, a file listing …); `reply` puts one into
its frame with the `id` of the request it answers, so the handlers never spell a frame. Nothing
is copied or validated: the nested values are encoded as they are.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec

from diminuendo.auth.identity import Identity
from diminuendo.protocol import events as ev
from diminuendo.protocol import shapes

F = TypeVar("F", bound=ev.ServerFrame)


@cache
def _names(kind: type[ev.ServerFrame]) -> tuple[tuple[str, str], ...]:
    """(attribute, wire key) of each field of `kind`."""
    return tuple((f.name, f.encode_name) for f in msgspec.structs.fields(kind))


def reply(kind: type[F], payload: dict[str, Any], request_id: str | None) -> F:
    """The frame `kind` holding the `payload` keys it has a field for, answering `request_id`."""
    values = {name: payload[key] for name, key in _names(kind) if key in payload}
    return kind(**values, id=request_id)


def identity(who: Identity) -> shapes.Identity:
    """The `identity` of `authenticated` (§3)."""
    return msgspec.convert(who.to_wire(), shapes.Identity)
