"""Tenant members (Unison `tenant:{id}/members`): the role lookup for authentication, and the
list/add/update/remove of `manage_members` under the rules of PROTOCOL.md §5
(`auth.policy.check_member_change`).

The rule spans several records (the last owner), while Unison offers compare-and-set per record
only, and DELETE without it. So a change is:

1. serialised per tenant on this instance (an `asyncio.Lock`), so one gateway never races itself;
2. decided on a fresh read of the tenant's records, with the actor's own level taken from its
   record there (a concurrent demotion of the actor counts), and written with compare-and-set on
   the member's version (a conflict re-reads and decides again);
3. re-checked after the write when it took an owner away: if another gateway instance removed the
   other owners meanwhile, the write is undone (compare-and-set again) and answered `FORBIDDEN`.
   Two instances removing each other's owners at once both see zero owners and both undo; one that
   re-checks after the other has undone keeps its change. Either way an owner is left.

A successful change is reported through `on_role_change` so open connections of that user take
the new role at once (`Hub.update_role`). In fleet mode (`scope`, set by `fleet.tenants`) it is
also sent to the other instances, which drop the cached role and report the stored one to their
own connections (`changed_elsewhere`); a role is cached only while the scope trusts the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from diminuendo.auth.identity import Identity, Role
from diminuendo.auth.policy import check_member_change
from diminuendo.cache import BoundedCache, CacheScope, InvalidationStamps
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.unison import CasConflict, Entry, UnisonClient, members_namespace

ROLE_CACHE_S = 30.0
# One entry per (tenant, user) that authenticated lately; bounded so a flood of user ids (every
# valid token of a large tenant, or many tenants) cannot grow it without end.
ROLE_CACHE_ENTRIES = 20_000
CHANGE_ATTEMPTS = 5

RoleChanged = Callable[[str, str, Role | None], None]
"""`(tenant_id, user_id, role)` after a change; `role` None: the member record was removed."""


def _role(entry: Entry | None) -> Role | None:
    """The role a member record names, None when there is no record or it names no known role."""
    if entry is None or not isinstance(entry.value, dict):
        return None
    try:
        return Role.parse(str(entry.value.get("role", "")))
    except ValueError:
        return None


@dataclass
class _TenantLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class MemberService:
    def __init__(self, unison: UnisonClient, *, on_role_change: RoleChanged | None = None) -> None:
        self.unison = unison
        self._on_role_change = on_role_change or (lambda tenant, user, role: None)
        self._roles: BoundedCache[tuple[str, str], Role | None] = BoundedCache(
            ROLE_CACHE_ENTRIES, ROLE_CACHE_S
        )
        self._locks: dict[str, _TenantLock] = {}
        self.scope: CacheScope | None = None  # fleet mode only
        self._stamps = InvalidationStamps()  # fleet mode: a read racing a change keeps nothing

    @property
    def cached_roles(self) -> int:
        return len(self._roles)

    async def role_of(self, tenant_id: str, user_id: str) -> Role | None:
        """The member record's role, cached briefly: it is read on every authentication."""
        key = (tenant_id, user_id)
        trusted = self.scope is None or self.scope.trusted(tenant_id)
        if trusted and key in self._roles:
            return self._roles.get(key)
        stamp = self._stamps.of(tenant_id)
        role = _role(await self.unison.get(members_namespace(tenant_id), user_id))
        if trusted and stamp == self._stamps.of(tenant_id):
            self._roles.put(key, role)
        return role

    async def changed_elsewhere(self, tenant_id: str, user_id: str) -> None:
        """Fleet mode: another instance changed this member. Its cached role goes, and this
        process's open connections of the user take the stored role, as after a local change
        (Unison down: logged; the next authentication reads the role afresh)."""
        self._roles.pop((tenant_id, user_id))
        self._stamps.bump(tenant_id)
        try:
            role = await self.role_of(tenant_id, user_id)
        except GatewayError as exc:
            logger.warning("member changed on another instance, role not re-read: {}", exc)
            return
        self._on_role_change(tenant_id, user_id, role)

    def forget_tenant(self, tenant_id: str) -> None:
        """Fleet mode: drop the tenant's cached roles (changes of them may have been missed)."""
        self._roles.discard_if(lambda key: key[0] == tenant_id)
        self._stamps.bump(tenant_id)

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
        new_role = None if action == "remove" else self._parse_role(role)
        async with self._serialised(tenant):
            for _ in range(CHANGE_ATTEMPTS):
                try:
                    await self._change(identity, action, user_id, new_role)
                except CasConflict:
                    continue  # the member changed since we read it: decide again
                break
            else:
                raise GatewayError(
                    ErrorCode.UPSTREAM_ERROR, "Members changed concurrently, try again"
                )
        self._roles.pop((tenant, user_id))
        self._on_role_change(tenant, user_id, new_role)
        if self.scope is not None:
            await self.scope.changed(tenant, "member", user_id)
        return await self.list(tenant)

    async def _change(
        self, identity: Identity, action: str, user_id: str, new_role: Role | None
    ) -> None:
        """One decide-write-recheck round; raises CasConflict when the member changed under it."""
        namespace = members_namespace(identity.tenant_id)
        records = {e.key: e for e in await self.unison.list(namespace)}
        previous = records.get(user_id)
        if previous is None and action != "add":
            raise GatewayError(ErrorCode.INVALID_MESSAGE, "No such member")
        actor_record = records.get(identity.user_id)
        actor = _role(actor_record) if actor_record is not None else None
        owners = sum(1 for e in records.values() if _role(e) is Role.OWNER)
        current = _role(previous)
        check_member_change(
            actor if actor is not None else identity.token_role, current, new_role, owners
        )
        written: Entry | None = None
        if new_role is None:
            # Unison's DELETE has no compare-and-set: a change since our read is caught below.
            await self.unison.delete(namespace, user_id, actor=identity.user_id)
        else:
            value = {
                "role": new_role.name.lower(),
                "addedBy": identity.user_id,
                "addedAt": int(time.time() * 1000),
            }
            written = await self.unison.put(
                namespace,
                user_id,
                value,
                actor=identity.user_id,
                cas=previous.version if previous is not None else 0,
            )
        if current is Role.OWNER and new_role is not Role.OWNER:
            assert previous is not None
            await self._keep_an_owner(identity.tenant_id, previous, written, identity.user_id)

    async def _keep_an_owner(
        self, tenant_id: str, previous: Entry, written: Entry | None, actor: str
    ) -> None:
        """After taking an owner away: if no owner is left (another instance removed the others
        at the same time), put the record back and refuse."""
        namespace = members_namespace(tenant_id)
        entries = await self.unison.list(namespace)
        if any(_role(e) is Role.OWNER for e in entries):
            return
        try:
            await self.unison.put(
                namespace,
                previous.key,
                previous.value,
                actor=actor,
                cas=written.version if written is not None else 0,
            )
        except CasConflict:
            # Someone changed that member after us; whoever did re-checks on their own.
            logger.warning("member {} changed while restoring the last owner", previous.key)
        if self.scope is not None:  # another instance may have read the role in between
            await self.scope.changed(tenant_id, "member", previous.key)
        raise GatewayError(ErrorCode.FORBIDDEN, "The last owner cannot be removed or demoted")

    @contextlib.asynccontextmanager
    async def _serialised(self, tenant: str) -> AsyncIterator[None]:
        """One member change per tenant at a time on this instance; the lock lives only while
        someone holds or awaits it, so idle tenants cost nothing."""
        entry = self._locks.get(tenant)
        if entry is None:
            entry = self._locks[tenant] = _TenantLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[tenant]

    @staticmethod
    def _parse_role(role: str | None) -> Role:
        try:
            return Role.parse(role or "")
        except ValueError:
            raise GatewayError(
                ErrorCode.INVALID_MESSAGE,
                "Field `role` must be one of guest, viewer, developer, admin, owner",
            ) from None
