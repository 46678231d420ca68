"""`BoundedCache`: the one shape of every lookup cache that a client can key (agent types, user
ids): a size bound and a freshness window.

A cache keyed by what clients send grows with what they send: a flood of random agent types or
user ids would otherwise keep one entry each for the life of the process. So every entry expires
after `ttl_s`, and past `max_entries` the entry stored longest ago goes first. Pure (the clock is
injectable), no I/O.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    __slots__ = ("_clock", "_entries", "max_entries", "ttl_s")

    def __init__(
        self, max_entries: int, ttl_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return self._fresh(key) is not None

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value stored for `key` less than `ttl_s` ago, else `default` (a stale entry is
        dropped on the way)."""
        entry = self._fresh(key)
        return default if entry is None else entry[1]

    def put(self, key: K, value: V) -> None:
        """Store `value`; the entry stored longest ago goes when the bound is exceeded."""
        entries = self._entries
        entries[key] = (self._clock(), value)
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def discard_if(self, doomed: Callable[[K], bool]) -> None:
        """Drop every entry whose key is `doomed` (a tenant's, in fleet mode)."""
        for key in [k for k in self._entries if doomed(k)]:
            del self._entries[key]

    def _fresh(self, key: K) -> tuple[float, V] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] >= self.ttl_s:
            del self._entries[key]
            return None
        return entry


class InvalidationStamps:
    """Fleet mode: a stamp per tenant that changes with each invalidation of its cached copies.
    A read takes the stamp before it asks the store and keeps its answer only if the stamp is
    the same after (an invalidation that arrived meanwhile may be newer than the answer).
    Bounded: past `max_tenants` the table is cleared and every stamp changes at once."""

    def __init__(self, max_tenants: int = 10_000) -> None:
        self._max_tenants = max_tenants
        self._stamps: dict[str, int] = {}
        self._counter = itertools.count(1)
        self._cleared = 0

    def of(self, tenant_id: str) -> tuple[int, int]:
        return self._cleared, self._stamps.get(tenant_id, 0)

    def bump(self, tenant_id: str) -> None:
        if len(self._stamps) >= self._max_tenants:
            self._stamps.clear()
            self._cleared = next(self._counter)
        self._stamps[tenant_id] = next(self._counter)


class CacheScope(Protocol):
    """Fleet mode (`fleet.tenants.TenantLinks`): whether this process may answer from its cached
    copies of a tenant's records, and the way to tell the other instances that one changed.
    Without `REDIS_URL` a cache has no scope: every copy is this process's own writes."""

    def trusted(self, tenant_id: str) -> bool:
        """True while every change of the tenant's records made elsewhere reaches this process
        (its channel is followed, no message lost since); a cache must neither answer from nor
        fill its copies of the tenant otherwise."""
        ...

    async def changed(self, tenant_id: str, record: str, key: str) -> None:
        """Tell the other instances that `record` (`"session"`, `"member"`) `key` of the tenant
        changed; returns once sent (never raises: Valkey down is logged and reported)."""
        ...
