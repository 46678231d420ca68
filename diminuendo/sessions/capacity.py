"""Who may activate another session when capacity is short (PROTOCOL.md §4, §13) — pure.

Three rules, so that one tenant cannot take the instance from the others:

- **Tenant quota.** A tenant holding `per_tenant` active sessions gets another only by freeing
  one of its own idle sessions (least recently used first); else `QUOTA_EXCEEDED`.
- **Fair eviction.** When the instance holds `total`, the idle session to deactivate comes from
  the tenant holding the most active sessions, and a tenant may take an idle session of another
  only if that tenant holds at least two more than it does (after the swap it still holds at
  least as many), so it can never evict a smaller tenant; else `CAPACITY_EXCEEDED`.
- **Reserve.** The last tenth of `total` is kept for tenants under their fair share,
  `total // (tenants holding sessions + 1)` (the + 1 leaves room for a tenant not yet there): a
  tenant at or above it enters the reserve only by freeing a session as above. So a tenant alone
  on the instance fills nine tenths, not all of it, and the next tenant still gets capacity.

Busy sessions (subscribed, or running a turn) are never deactivated to make room.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from diminuendo.protocol.errors import ErrorCode, GatewayError

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    total: int  # MAX_ACTIVE_SESSIONS
    per_tenant: int  # MAX_ACTIVE_SESSIONS_PER_TENANT

    @property
    def reserve(self) -> int:
        return self.total // 10


class Admission(Enum):
    ADMIT = "admit"  # a free slot
    FREE_OWN = "free own"  # at the tenant quota: only one of its own idle sessions may go
    FREE_FAIRLY = "free fairly"  # instance full (or the reserve): an idle session, fairly


def admission(tenant: str, held: Mapping[str, int], total: int, limits: Limits) -> Admission:
    """What it takes for `tenant` to activate one more session. `held`: active sessions per
    tenant (tenants holding none may be absent), `total`: their sum."""
    mine = held.get(tenant, 0)
    if mine >= limits.per_tenant:
        return Admission.FREE_OWN
    if total < limits.total - limits.reserve:
        return Admission.ADMIT
    if total < limits.total:
        tenants = sum(1 for t, n in held.items() if n > 0 and t != tenant) + 1
        if mine < limits.total // (tenants + 1):
            return Admission.ADMIT
    return Admission.FREE_FAIRLY


def choose_victim(
    tenant: str,
    held: Mapping[str, int],
    idle: Iterable[tuple[str, float, T]],
    need: Admission,
) -> T | None:
    """The idle session to deactivate so `tenant` can activate one, or None when there is none
    it may take. `idle`: (tenant, last used, session) of every idle active session."""
    mine = held.get(tenant, 0)
    best: T | None = None
    best_key: tuple[int, float] | None = None
    for owner, last_used, session in idle:
        holds = held.get(owner, 0)
        if owner != tenant and (need is Admission.FREE_OWN or holds <= mine + 1):
            continue
        key = (-holds, last_used)  # the biggest tenant first, then its least recently used
        if best_key is None or key < best_key:
            best, best_key = session, key
    return best


class Slots:
    """Active sessions held per tenant (only tenants holding some) and in all, kept in step by
    `take`/`free` so admitting a session costs no walk over every session."""

    __slots__ = ("held", "limits", "total")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.held: dict[str, int] = {}
        self.total = 0

    def __repr__(self) -> str:
        return f"Slots({self.total}/{self.limits.total})"

    def take(self, tenant: str) -> None:
        self.held[tenant] = self.held.get(tenant, 0) + 1
        self.total += 1

    def free(self, tenant: str) -> None:
        left = self.held[tenant] - 1
        if left:
            self.held[tenant] = left
        else:
            del self.held[tenant]
        self.total -= 1

    def need(self, tenant: str) -> Admission:
        return admission(tenant, self.held, self.total, self.limits)

    def victim(self, tenant: str, idle: Iterable[tuple[str, float, T]], need: Admission) -> T:
        """The idle session to free for `tenant` (`choose_victim`), or `QUOTA_EXCEEDED` /
        `CAPACITY_EXCEEDED` when there is none it may take."""
        victim = choose_victim(tenant, self.held, idle, need)
        if victim is None and need is Admission.FREE_OWN:
            raise GatewayError(
                ErrorCode.QUOTA_EXCEEDED,
                f"Your tenant has {self.held.get(tenant, 0)} active sessions, its limit;"
                " leave one and it makes room for the next",
            )
        if victim is None:
            raise GatewayError(ErrorCode.CAPACITY_EXCEEDED)
        return victim
