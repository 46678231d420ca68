"""One owner per session: a lease in Valkey with a fencing token.

The instance that holds a session's runtime socket holds its lease: the key `lease` holds
`<fence>:<instance_id>` with a TTL (`SESSION_LEASE_TTL`). `fence` is a counter incremented on
every acquisition and never expired, so each owner's token is new. The replay log's append
script compares the caller's token with the lease, so an owner that was paused (GC, SIGSTOP, a
stalled VM) past its TTL cannot append once another instance took the session — its token is no
longer the current one — however late it wakes up.

Contract of `Leases` (all methods raise `FleetUnavailable` when Valkey cannot be reached in time):

- `acquire(session_id, ttl_ms)` → a `Lease` if the session had no owner (or already was ours:
  then the TTL is renewed and the token kept), `None` if another instance holds it.
- `renew(lease)` → `True` if the lease was still ours and now lasts `ttl_ms` again, `False` if it
  was lost (expired, or taken by another instance); compare-and-pexpire in one script.
- `release(lease)` → `True` if it was ours and is deleted; never deletes another owner's lease.
- `holder(session_id)` → the current `<fence>:<instance>` or `None`; `holders` for many.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger
from redis.asyncio import Redis

from diminuendo.fleet.connection import FleetUnavailable, Script, unavailable_as
from diminuendo.fleet.keys import Keyspace

# KEYS: lease, fence · ARGV: instance id, ttl ms · → {1, token} acquired, {0, holder} taken.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then
  if string.sub(holder, -string.len(ARGV[1]) - 1) == ':' .. ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, holder}
  end
  return {0, holder}
end
local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return {1, token}
"""
# KEYS: lease · ARGV: token, ttl ms → 1 renewed, 0 lost.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lease · ARGV: token → 1 deleted, 0 not ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Lease:
    session_id: str
    token: str  # `<fence>:<instance_id>`, what the append script compares
    ttl_ms: int

    @property
    def fence(self) -> int:
        return int(self.token.partition(":")[0])


class Leases:
    """Session leases of one instance (`instance_id` must be unique per process: a restarted
    process takes a new one, so it never mistakes its predecessor's lease for its own)."""

    def __init__(self, client: Redis, url: str, keyspace: Keyspace, instance_id: str) -> None:
        if ":" in instance_id or not instance_id:
            raise ValueError("instance_id must be non-empty and contain no ':'")
        self._client = client
        self._url = url
        self._keys = keyspace
        self.instance_id = instance_id
        self._acquire = Script(client, _ACQUIRE)
        self._renew = Script(client, _RENEW)
        self._release = Script(client, _RELEASE)

    async def acquire(self, session_id: str, ttl_ms: int) -> Lease | None:
        keys = self._keys.session(session_id)
        with unavailable_as(self._url, "lease acquire"):
            won, token = await self._acquire([keys.lease, keys.fence], [self.instance_id, ttl_ms])
        return Lease(session_id, token.decode(), ttl_ms) if won else None

    async def renew(self, lease: Lease) -> bool:
        return (await self.renew_all([lease]))[0]

    async def renew_all(self, leases: list[Lease]) -> list[bool]:
        """`renew` for many leases in one round trip (the renewer's tick)."""
        if not leases:
            return []
        calls = [
            ([self._keys.session(lease.session_id).lease], [lease.token, lease.ttl_ms])
            for lease in leases
        ]
        with unavailable_as(self._url, "lease renew"):
            results = await self._renew.pipelined(calls)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [bool(result) for result in results]

    async def release(self, lease: Lease) -> bool:
        keys = [self._keys.session(lease.session_id).lease]
        with unavailable_as(self._url, "lease release"):
            return bool(await self._release(keys, [lease.token]))

    async def holder(self, session_id: str) -> str | None:
        with unavailable_as(self._url, "lease lookup"):
            value = await self._client.get(self._keys.session(session_id).lease)
        return value.decode() if value is not None else None

    async def holders(self, session_ids: list[str]) -> list[str | None]:
        """`holder` for many sessions in one round trip (a GET each: their keys are in as many
        Cluster slots, which one MGET may not span)."""
        if not session_ids:
            return []
        with unavailable_as(self._url, "lease lookup"):
            async with self._client.pipeline(transaction=False) as pipe:
                for session_id in session_ids:
                    pipe.get(self._keys.session(session_id).lease)
                values = await pipe.execute()
        return [value.decode() if value is not None else None for value in values]


class LeaseRenewer:
    """Keeps every held lease alive: renews them all in one round trip every third of the TTL
    and reports each lost one to `on_lost` (once). A lease counts as lost when Valkey says it is
    no longer ours, or when no renewal succeeded for a whole TTL (Valkey unreachable: the lease
    has expired there, another instance may own the session)."""

    def __init__(self, leases: Leases, ttl_ms: int, on_lost: Callable[[Lease], None]) -> None:
        self._leases = leases
        self._ttl_s = ttl_ms / 1000
        self._on_lost = on_lost
        self._held: dict[str, tuple[Lease, float]] = {}  # session id → (lease, renewed at)

    def hold(self, lease: Lease) -> None:
        self._held[lease.session_id] = (lease, time.monotonic())

    def drop(self, session_id: str) -> Lease | None:
        """Stop renewing (before `Leases.release`, or when the session closed)."""
        entry = self._held.pop(session_id, None)
        return entry[0] if entry else None

    @property
    def held(self) -> list[Lease]:
        return [lease for lease, _ in self._held.values()]

    async def tick(self) -> None:
        """One renewal of every held lease; `run` calls it on the timer."""
        entries = list(self._held.values())
        now = time.monotonic()
        renewed_at: float | None = now  # measured before the round trip: errs on the safe side
        try:
            renewed = await self._leases.renew_all([lease for lease, _ in entries])
        except FleetUnavailable as exc:
            logger.warning("lease renewal failed: {}", exc)
            renewed = [now - at < self._ttl_s for _, at in entries]  # not expired yet
            renewed_at = None
        for (lease, at), ok in zip(entries, renewed, strict=True):
            current = self._held.get(lease.session_id)
            if current is None or current[0] != lease:
                continue  # dropped or replaced while the round trip ran
            if ok:
                self._held[lease.session_id] = (lease, renewed_at or at)
            else:
                del self._held[lease.session_id]
                self._on_lost(lease)

    async def run(self) -> None:
        """Renew until cancelled."""
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            await self.tick()
