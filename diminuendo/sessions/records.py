"""Session records in Unison: a bounded read cache, the compare-and-set writer and the background
persistence of active sessions.

Records are written on lifecycle changes only, in the background, so no client event waits on a
metadata write. Reads are cached briefly (`RECORD_CACHE_S`) and a stale copy answers while Unison
is down. Who may see a record is not decided here: `access.authorize` is.

Fleet mode (`scope` set by `fleet.tenants`): other instances write the same records, so a copy is
kept and answered only while the scope trusts the tenant (every change made elsewhere reaches
this process), each write and delete tells the other instances (`scope.changed`) before it
returns, and a copy whose read raced an invalidation of its tenant is not kept (`_stamps`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from loguru import logger

from diminuendo.cache import CacheScope, InvalidationStamps
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.models import SessionRecord
from diminuendo.sessions.active import ActiveSession
from diminuendo.sessions.live import now_ms
from diminuendo.upstreams.resilience import backoff_delay
from diminuendo.upstreams.unison import CasConflict, Entry, UnisonClient, sessions_namespace

__all__ = ["Persister", "RecordStore"]

RECORD_CACHE_S = 5.0
RECORD_CACHE_ENTRIES = 50_000
LISTING_CACHE_TENANTS = 1_000
PERSIST_CONCURRENCY = 16
PERSIST_DEBOUNCE_S = 0.2
PERSIST_RETRIES = 20  # with backoff capped at 5 s: about a minute of Unison outage
_UPDATE_ATTEMPTS = 5


class RecordStore:
    """The Unison repository of session records, with its caches."""

    def __init__(self, unison: UnisonClient) -> None:
        self.unison = unison
        self._records: OrderedDict[str, tuple[float, int, SessionRecord]] = OrderedDict()
        self._listings: OrderedDict[str, list[Entry]] = OrderedDict()
        self.scope: CacheScope | None = None  # fleet mode only
        self._stamps = InvalidationStamps()  # fleet mode: a read racing a change keeps nothing

    def __repr__(self) -> str:
        return f"RecordStore(cached={len(self._records)})"

    def __len__(self) -> int:
        """Session records held for reads (bounded by RECORD_CACHE_ENTRIES)."""
        return len(self._records)

    async def read(self, tenant_id: str, session_id: str) -> tuple[SessionRecord, int]:
        """The record and its version; `SESSION_NOT_FOUND` when there is none."""
        scope = self.scope
        trusted = scope is None or scope.trusted(tenant_id)
        cached = self._records.get(session_id)
        if cached and trusted and time.monotonic() - cached[0] < RECORD_CACHE_S:
            return cached[2], cached[1]
        stamp = None if scope is None else self._stamps.of(tenant_id)
        try:
            entry = await self.unison.get(sessions_namespace(tenant_id), session_id)
        except GatewayError as exc:
            if cached is None or exc.code != ErrorCode.UPSTREAM_UNAVAILABLE:
                raise
            return cached[2], cached[1]  # Unison is down: a stale copy is safe to read
        if entry is None:
            self._records.pop(session_id, None)
            raise GatewayError(ErrorCode.SESSION_NOT_FOUND, session_id=session_id)
        record = msgspec.convert(entry.value, SessionRecord)
        if trusted and (stamp is None or stamp == self._stamps.of(tenant_id)):
            self._remember(record, entry.version)
        return record, entry.version

    async def list(self, tenant_id: str) -> list[SessionRecord]:
        """Every record of the tenant; the last listing seen while Unison is down."""
        try:
            entries = await self.unison.list(sessions_namespace(tenant_id))
        except GatewayError as exc:
            stale = self._listings.get(tenant_id)
            if stale is None or exc.code != ErrorCode.UPSTREAM_UNAVAILABLE:
                raise
            entries = stale
        else:
            self._listings[tenant_id] = entries
            self._listings.move_to_end(tenant_id)
            if len(self._listings) > LISTING_CACHE_TENANTS:
                self._listings.popitem(last=False)
        return [msgspec.convert(entry.value, SessionRecord) for entry in entries]

    async def write(self, record: SessionRecord, version: int | None, actor: str) -> int:
        """Compare-and-set (`version` None: create); raises `CasConflict`. The new version."""
        scope, tenant_id = self.scope, record.tenant_id
        stamp = None if scope is None else self._stamps.of(tenant_id)
        entry = await self.unison.put(
            sessions_namespace(tenant_id),
            record.id,
            msgspec.to_builtins(record),
            actor=actor,
            cas=version,
        )
        if scope is None or (scope.trusted(tenant_id) and stamp == self._stamps.of(tenant_id)):
            self._remember(record, entry.version)
        if scope is not None:
            await scope.changed(tenant_id, "session", record.id)
        return entry.version

    async def update(
        self,
        load: Callable[[], Coroutine[Any, Any, tuple[SessionRecord, int]]],
        change: Callable[[SessionRecord], None],
        actor: str,
    ) -> tuple[SessionRecord, int]:
        """Read-modify-write with compare-and-set; on conflict re-read and re-apply."""
        for _ in range(_UPDATE_ATTEMPTS):
            record, version = await load()
            record = msgspec.structs.replace(record)
            change(record)
            record.updated_at = now_ms()
            try:
                return record, await self.write(record, version, actor)
            except CasConflict:
                self._records.pop(record.id, None)
        raise GatewayError(ErrorCode.UPSTREAM_ERROR, "Session changed concurrently, try again")

    async def delete(self, record: SessionRecord, actor: str) -> None:
        await self.unison.delete(sessions_namespace(record.tenant_id), record.id, actor=actor)
        self._records.pop(record.id, None)
        if self.scope is not None:
            await self.scope.changed(record.tenant_id, "session", record.id)

    def forget(self, tenant_id: str, session_id: str) -> None:
        """Drop a cached record another instance changed (fleet mode), and any copy of the
        tenant's being read right now (it may predate the change)."""
        self._records.pop(session_id, None)
        self._stamps.bump(tenant_id)

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop every cached record and listing of a tenant whose changes on other instances
        may have been missed (fleet mode: its channel was not followed, or messages were lost)."""
        for session_id in [k for k, (_, _, r) in self._records.items() if r.tenant_id == tenant_id]:
            del self._records[session_id]
        self._listings.pop(tenant_id, None)
        self._stamps.bump(tenant_id)

    def _remember(self, record: SessionRecord, version: int) -> None:
        """Bounded record cache: fresh for RECORD_CACHE_S, kept longer as a stale fallback."""
        self._records[record.id] = (time.monotonic(), version, record)
        self._records.move_to_end(record.id)
        if len(self._records) > RECORD_CACHE_ENTRIES:
            self._records.popitem(last=False)


class Persister:
    """Writes active sessions' lifecycle fields in the background, coalescing bursts.

    At most PERSIST_CONCURRENCY record writes are in flight: thousands of sessions changing state
    at once must not flood the HTTP pool that client requests and health probes share (measured:
    an unbounded burst livelocked the gateway in httpcore's pool scan)."""

    def __init__(self, records: RecordStore) -> None:
        self.records = records
        self.slots = asyncio.Semaphore(PERSIST_CONCURRENCY)
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"Persister(in_flight={len(self._background)})"

    def persist(self, active: ActiveSession) -> None:
        if active.writing:
            active.dirty = True
            return
        active.writing = True
        task = asyncio.create_task(self._persist_loop(active))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def write_now(self, active: ActiveSession) -> None:
        """Record the active session at once (a new instance: a crash must not orphan it); a
        concurrent change (a rename) is merged in the background."""
        async with self.slots:
            try:
                active.version = await self.records.write(
                    active.current(), active.version, "diminuendo"
                )
            except CasConflict:
                self.persist(active)

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait for the writes under way (each at most `timeout_s`), cancelling the slow ones."""
        for task in list(self._background):
            try:
                async with asyncio.timeout(timeout_s):
                    await task
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()

    async def _persist_loop(self, active: ActiveSession) -> None:
        failures = 0
        try:
            while True:
                await asyncio.sleep(PERSIST_DEBOUNCE_S)  # one write for a burst of transitions
                active.dirty = False
                try:
                    failures = await self._write_once(active, failures)
                except _Stop:
                    return
                if not active.dirty:
                    return
        finally:
            active.writing = False

    async def _write_once(self, active: ActiveSession, failures: int) -> int:
        """One write of the lifecycle fields; returns the failures so far (0 after a success)."""
        stream = active.live.stream
        record = msgspec.structs.replace(
            active.current(),
            status=active.live.status.value,
            epoch=stream.epoch,
            last_seq=stream.last_seq,
            updated_at=now_ms(),
        )
        try:
            # The in-memory record may change while the write is under way, so it is not
            # replaced by what was written; only the version moves on.
            async with self.slots:
                active.version = await self.records.write(record, active.version, "diminuendo")
            return failures
        except CasConflict as conflict:
            if conflict.current is None:
                raise _Stop from None  # deleted meanwhile
            # Someone else wrote (a rename elsewhere): take their user-owned fields, keep the
            # fields this process owns while it holds the session (usage and last activity
            # are in `active.live`).
            mine = active.record
            active.record = msgspec.structs.replace(
                msgspec.convert(conflict.current.value, SessionRecord),
                instance_id=mine.instance_id,
                deployment_id=mine.deployment_id,
            )
            active.version = conflict.current.version
            active.dirty = True
            return failures
        except GatewayError as exc:
            failures += 1
            if failures > PERSIST_RETRIES:
                logger.error("giving up persisting session {}: {}", active.record.id, exc)
                raise _Stop from exc
            logger.warning("could not persist session {} yet: {}", active.record.id, exc)
            await asyncio.sleep(backoff_delay(failures, base=0.5, cap=5.0))
            active.dirty = True
            return failures


class _Stop(Exception):
    """Nothing more to write: the record was deleted meanwhile, or PERSIST_RETRIES failures in a
    row abandoned the write (logged)."""
