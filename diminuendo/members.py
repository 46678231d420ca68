"""Tenant members (Unison `tenant:{id}/members`): role lookup for authentication, and the
list/add/update/remove of `manage_members` with the last-owner rule."""

from __future__ import annotations

import time
from typing import Any

from diminuendo.auth.identity import Identity, Role
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.unison import UnisonClient, members_namespace

ROLE_CACHE_S = 30.0


class MemberService:
    def __init__(self, unison: UnisonClient) -> None:
        self.unison = unison
        self._roles: dict[tuple[str, str], tuple[float, Role | None]] = {}

    async def role_of(self, tenant_id: str, user_id: str) -> Role | None:
        """The member record's role, cached briefly: it is read on every authentication."""
        key = (tenant_id, user_id)
        cached = self._roles.get(key)
        if cached and time.monotonic() - cached[0] < ROLE_CACHE_S:
            return cached[1]
        entry = await self.unison.get(members_namespace(tenant_id), user_id)
        role = None
        if entry is not None and isinstance(entry.value, dict):
            try:
                role = Role.parse(str(entry.value.get("role", "")))
            except ValueError:
                role = None
        self._roles[key] = (time.monotonic(), role)
        return role

    async def list(self, tenant_id: str) -> list[dict[str, Any]]:
        entries = await self.unison.list(members_namespace(tenant_id))
        return [
            {"userId": e.key, "role": str(e.value.get("role", "")).lower()}
            for e in entries
            if isinstance(e.value, dict)
        ]

    async def manage(
        self, identity: Identity, action: str, *, user_id: str | None, role: str | None
    ) -> list[dict[str, Any]]:
        tenant = identity.tenant_id
        if action == "list":
            return await self.list(tenant)
        if not user_id:
            raise GatewayError(ErrorCode.INVALID_MESSAGE, "Field `userId` is required")
        members = await self.list(tenant)
        current = {m["userId"]: m["role"] for m in members}
        owners = [u for u, r in current.items() if r == "owner"]
        if action in ("add", "update"):
            new_role = self._parse_role(role)
            if new_role > identity.role:
                raise GatewayError(ErrorCode.FORBIDDEN, "Cannot grant a role above your own")
            if action == "update" and user_id not in current:
                raise GatewayError(ErrorCode.INVALID_MESSAGE, "No such member")
            if current.get(user_id) == "owner" and new_role != Role.OWNER and owners == [user_id]:
                raise GatewayError(ErrorCode.FORBIDDEN, "The last owner cannot be demoted")
            await self.unison.put(
                members_namespace(tenant),
                user_id,
                {
                    "role": new_role.name.lower(),
                    "addedBy": identity.user_id,
                    "addedAt": int(time.time() * 1000),
                },
                actor=identity.user_id,
            )
        else:  # remove
            if user_id not in current:
                raise GatewayError(ErrorCode.INVALID_MESSAGE, "No such member")
            if owners == [user_id]:
                raise GatewayError(ErrorCode.FORBIDDEN, "The last owner cannot be removed")
            await self.unison.delete(members_namespace(tenant), user_id, actor=identity.user_id)
        self._roles.pop((tenant, user_id), None)
        return await self.list(tenant)

    @staticmethod
    def _parse_role(role: str | None) -> Role:
        try:
            return Role.parse(role or "")
        except ValueError:
            raise GatewayError(
                ErrorCode.INVALID_MESSAGE,
                "Field `role` must be one of guest, viewer, developer, admin, owner",
            ) from None
