"""All open client connections of this process: tenant broadcast, heartbeats, keepalive, counts,
admission and token expiry.

One heartbeat task and one keepalive task for the whole process, not one of each per connection
(Sanic's own keepalive is one task per socket): at 10,000 connections a task per socket costs
memory, and its ping round trip through futures and timers cost ~7% of a core at 5,000.

Keepalive (PROTOCOL.md §6): every `keepalive_interval_s` each connection gets a WebSocket ping,
which a live client answers with a pong; a connection that has sent nothing at all, not even a
pong, for `idle_timeout_s` is closed with 1011.

Admission (PROTOCOL.md §13): every connection is counted by `Admission` as it comes and goes,
pending under its client address until it authenticates, then under its user; SSE streams are
counted beside them (`open_stream`/`close_stream`).

Token expiry (PROTOCOL.md §3): one sweep every `EXPIRY_TICK_S` for the whole process reads the
`ExpirySchedule` of every connection authenticated by a JWT, sends `auth_expiring` once before
`exp` and closes with 4003 at `exp` + leeway; a fresh token (`set_identity`) moves both.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from diminuendo.auth.admission import Admission
from diminuendo.auth.expiry import RESOLUTION_S, ExpirySchedule
from diminuendo.auth.identity import Identity, Role, sees_only_own_sessions
from diminuendo.auth.policy import may_read_session
from diminuendo.gateway.connection import Connection
from diminuendo.protocol.codec import encode_frame
from diminuendo.protocol.events import AuthExpiring, Heartbeat
from diminuendo.sessions.stream import Subscriber

CLOSE_IDLE = 1011
CLOSE_AUTH_EXPIRED = 4003
ROUND_SLICE = 200
EXPIRY_TICK_S = RESOLUTION_S


class Hub:
    def __init__(
        self,
        heartbeat_interval_s: float,
        *,
        admission: Admission,
        expiry: ExpirySchedule[Connection],
        idle_timeout_s: float = 90.0,
    ) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.keepalive_interval_s = min(30.0, idle_timeout_s / 3)
        self.admission = admission
        self._expiry = expiry
        self.connections: set[Connection] = set()
        self._by_tenant: dict[str, set[Connection]] = defaultdict(set)
        # Per tenant, the connections that may read every session of it, and the few whose role
        # reads only their own (guests): a lifecycle broadcast checks only the latter.
        self._readers: dict[str, set[Connection]] = {}
        self._own_only: dict[str, set[Connection]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Kept in step rather than counted, so /health and /metrics cost O(1) per scrape.
        self.authenticated_count = 0
        # Fleet mode: told when this process gets its first connection of a tenant (True) and
        # loses its last (False), to follow the tenant's broadcasts from other instances.
        self.on_tenant: Callable[[str, bool], None] = lambda tenant_id, present: None

    def check_connection(self, address: str, identity: Identity | None) -> None:
        """Raise the §13 refusal for a new connection from `address` (`identity`: the token on
        its upgrade, None when it will authenticate by message), before its upgrade."""
        self.admission.check_connection(address, identity.user_id if identity else None)

    def add(self, connection: Connection) -> None:
        """Admit a connection; its `identity` is already set when the upgrade carried a token.
        Raises `GatewayError` and adds nothing when a §13 limit is reached (a race the
        check before the upgrade lost)."""
        identity = connection.identity
        self.admission.admit_connection(connection.ip, identity.user_id if identity else None)
        self.connections.add(connection)
        if identity is not None:
            self._authenticated(connection, identity)

    def set_identity(self, connection: Connection, identity: Identity) -> None:
        """Authenticate `connection` as `identity`, or renew it with a fresh token of the same
        user (the caller refuses another user). Raises `QUOTA_EXCEEDED`, leaving the connection
        unauthenticated, when the user already holds `MAX_CONNECTIONS_PER_USER`."""
        if connection.identity is None:
            self.admission.authenticated(connection.ip, identity.user_id)
            connection.identity = identity
            self._authenticated(connection, identity)
        else:
            connection.identity = identity  # maybe with another role
            self._track_read_scope(connection)
            self._track_expiry(connection, identity)

    def _authenticated(self, connection: Connection, identity: Identity) -> None:
        tenant = self._by_tenant[identity.tenant_id]
        if not tenant:
            self.on_tenant(identity.tenant_id, True)
        tenant.add(connection)
        self.authenticated_count += 1
        self._track_read_scope(connection)
        self._track_expiry(connection, identity)

    def _track_expiry(self, connection: Connection, identity: Identity) -> None:
        if identity.expires_at is not None:  # the dev identity does not expire
            self._expiry.track(connection, identity.expires_at)

    def remove(self, connection: Connection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        identity = connection.identity
        self.admission.release_connection(connection.ip, identity.user_id if identity else None)
        if identity is not None:
            self.authenticated_count -= 1
            self._expiry.forget(connection)
            tenant = self._by_tenant.get(identity.tenant_id)
            if tenant is not None:
                tenant.discard(connection)
                if not tenant:
                    del self._by_tenant[identity.tenant_id]
                    self.on_tenant(identity.tenant_id, False)
            self._track_read_scope(connection, gone=True)

    def open_stream(self, identity: Identity) -> None:
        """Count an SSE stream of `identity`, or raise the §13 refusal (503 / 429)."""
        self.admission.admit_stream(identity.user_id)

    def close_stream(self, identity: Identity) -> None:
        self.admission.release_stream(identity.user_id)

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
            asyncio.create_task(self._expiry_loop(), name="ws-auth-expiry"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            data = encode_frame(Heartbeat(ts=int(time.time() * 1000)))
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

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK_S)
            await self._expire(time.time())

    async def _expire(self, now: float) -> None:
        """Warn the connections whose token expires within the refresh window (once per token)
        and close those past `exp` + leeway with 4003; yields to the loop every `ROUND_SLICE`."""
        due = self._expiry.due(now)
        for index, (connection, expires_at) in enumerate(due.warn):
            connection.send(AuthExpiring(expires_at=int(expires_at * 1000)))
            if index % ROUND_SLICE == ROUND_SLICE - 1:
                await asyncio.sleep(0)
        for connection in due.close:
            connection.close(CLOSE_AUTH_EXPIRED, "authentication expired")

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
