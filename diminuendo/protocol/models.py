"""Resource shapes shared by the WebSocket, REST and the Unison record: `SessionMeta`."""

from __future__ import annotations

from typing import Any

import msgspec

# Fields Unison keeps for the gateway that clients never see.
_INTERNAL_FIELDS = ("instanceId", "deploymentId")


class TokenUsage(msgspec.Struct, kw_only=True):
    input: int = 0
    output: int = 0


class SessionRecord(msgspec.Struct, rename="camel", kw_only=True):
    """A session as stored in Unison (`tenant:{tenantId}/sessions`); `to_wire` is SessionMeta."""

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
    token_usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    metadata: dict[str, Any] | None = None
    instance_id: str | None = None
    deployment_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = msgspec.to_builtins(self)
        for name in _INTERNAL_FIELDS:
            wire.pop(name, None)
        return wire
