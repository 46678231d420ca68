"""The session as Unison stores it: the wire `SessionMeta` plus what only the gateway reads."""

from __future__ import annotations

from typing import Any

from diminuendo.protocol.shapes import SessionMeta, TokenUsage

__all__ = ["SessionRecord", "TokenUsage"]


class SessionRecord(SessionMeta, frozen=False, kw_only=True):
    """A session as stored in Unison (`tenant:{tenantId}/sessions`): `SessionMeta` (what
    clients see) and the runtime it runs on. Mutable: the gateway updates it in place."""

    instance_id: str | None = None
    deployment_id: str | None = None

    def meta(self, **changes: Any) -> SessionMeta:
        """What clients see of this record, with `changes` (live status, epoch, seq) applied."""
        fields = {name: getattr(self, name) for name in SessionMeta.__struct_fields__}
        return SessionMeta(**(fields | changes))
