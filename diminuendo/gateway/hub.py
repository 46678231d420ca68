"""All open client connections of this process: tenant broadcast, heartbeats, keepalive, counts.

One heartbeat task and one keepalive task for the whole process, not one of each per connection
(Sanic's own keepalive is one task per socket): at 10,000 connections a task per socket costs
memory, and its ping round trip through futures and timers cost ~7% of a core at 5,000.

Keepalive (PROTOCOL.md §6): every `keepalive_interval_s` each connection gets a WebSocket ping,
which a live client answers with a pong; a connection that has sent nothing at all, not even a
pong, for `idle_timeout_s` is closed with 1011.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from diminuendo.auth.identity import Role, sees_only_own_sessions
from diminuendo.auth.policy import may_read_session
from diminuendo.gateway.connection import Connection
from diminuendo.protocol.codec import encode_frame
from diminuendo.sessions.stream import Subscriber

CLOSE_IDLE = 1011
ROUND_SLICE = 200


class Hub:
    def __init__(self, heartbeat_interval_s: float, *, idle_timeout_s: float = 90.0) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.keepalive_interval_s = min(30.0, idle_timeout_s / 3)
        self.connections: set[Connection] = set()
        self._by_tenant: dict[str, set[Connection]] = defaultdict(set)
        # Per tenant, the connections that may read every session of it, and the few whose role
        # reads only their own (guests): a lifecycle broadcast checks only the latter.
        self._readers: dict[str, set[Connection]] = {}
        self._own_only: dict[str, set[Connection]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Kept in step rather than counted, so /health and /metrics cost O(1) per scrape.
        self.authenticated_count = 0

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)

    def authenticated(self, connection: Connection) -> None:
        assert connection.identity is not None
        self._by_tenant[connection.identity.tenant_id].add(connection)
        self.authenticated_count += 1
        self._track_read_scope(connection)

    def remove(self, connection: Connection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        if connection.identity is not None:
            self.authenticated_count -= 1
            tenant = self._by_tenant.get(connection.identity.tenant_id)
            if tenant is not None:
                tenant.discard(connection)
                if not tenant:
                    del self._by_tenant[connection.identity.tenant_id]
            self._track_read_scope(connection, gone=True)

    def update_role(self, tenant_id: str, user_id: str, role: Role | None) -> list[Connection]:
        """A member record changed (`role` None: removed): that user's open connections here
        take the role at once, so their next permission check and broadcast use it. Returns
        those connections."""
        changed = []
        for connection in self._by_tenant.get(tenant_id, ()):
            identity = connection.identity
            if identity is not None and identity.user_id == user_id:
                connection.identity = identity.with_member_role(role)
                self._track_read_scope(connection)
                changed.append(connection)
        return changed

    def identity_changed(self, connection: Connection) -> None:
        """The connection re-authenticated as the same user, maybe with another role."""
        self._track_read_scope(connection)

    def _track_read_scope(self, connection: Connection, gone: bool = False) -> None:
        """File the connection under its tenant's readers or own-only connections (or neither,
        once `gone`)."""
        assert connection.identity is not None
        tenant = connection.identity.tenant_id
        own_only = sees_only_own_sessions(connection.identity.role)
        for index, member in (
            (self._readers, not gone and not own_only),
            (self._own_only, not gone and own_only),
        ):
            connections = index.get(tenant)
            if member:
                if connections is None:
                    connections = index[tenant] = set()
                connections.add(connection)
            elif connections is not None:
                connections.discard(connection)
                if not connections:
                    del index[tenant]

    def broadcast(
        self, tenant_id: str, owner_id: str, event: dict[str, Any], exclude: Subscriber | None
    ) -> None:
        """Send a lifecycle event about a session of `owner_id` to the tenant's connections that
        may read it (`auth.policy.may_read_session`), never another tenant's. Only the tenant's
        own-only (guest) connections are checked one by one."""
        readers = self._readers.get(tenant_id, ())
        own_only = self._own_only.get(tenant_id, ())
        if not readers and not own_only:
            return
        data = encode_frame(event)
        for connection in readers:
            if connection is not exclude:
                connection.send_encoded(data)
        for connection in own_only:
            if connection is not exclude and may_read_session(
                connection.identity, tenant_id, owner_id
            ):
                connection.send_encoded(data)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="ws-heartbeat"),
            asyncio.create_task(self._keepalive_loop(), name="ws-keepalive"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            data = encode_frame({"type": "heartbeat", "ts": int(time.time() * 1000)})
            await self._each_connection(Connection.send_encoded, data)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval_s)
            now = time.monotonic()
            await self._each_connection(self._keep_alive, now)

    def _keep_alive(self, connection: Connection, now: float) -> None:
        """Drop a connection that has been silent too long; ping the others."""
        if now - connection.heard_at() > self.idle_timeout_s:
            connection.drop(CLOSE_IDLE, "idle timeout")
        else:
            connection.ping()

    async def _each_connection(self, action: Callable[[Connection, Any], None], arg: Any) -> None:
        """`action(connection, arg)` for every connection, yielding to the loop after every
        `ROUND_SLICE` of them: one frame to each of 5,000 connections in one go blocked every
        stream for ~100 ms."""
        for index, connection in enumerate(list(self.connections)):
            if not connection.closed:
                action(connection, arg)
            if index % ROUND_SLICE == ROUND_SLICE - 1:
                await asyncio.sleep(0)

    async def close_all(self, code: int, reason: str, timeout_s: float = 5.0) -> None:
        """Close every connection with `code` and wait (bounded) until the close frames are out,
        so nothing later in shutdown (Sanic cancelling handlers) can replace the code."""
        closing = [c.close(code, reason) for c in list(self.connections)]
        pending = [task for task in closing if task is not None]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
