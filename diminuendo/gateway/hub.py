"""All open client connections of this process: tenant broadcast, heartbeats, counts.

One heartbeat task for the whole process (not one per connection) keeps the per-connection cost
at the minimum the budget of 10,000 connections per process asks for.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from diminuendo.gateway.connection import Connection
from diminuendo.protocol.codec import encode_frame
from diminuendo.sessions.stream import Subscriber


class Hub:
    def __init__(self, heartbeat_interval_s: float) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.connections: set[Connection] = set()
        self._by_tenant: dict[str, set[Connection]] = defaultdict(set)
        self._heartbeat: asyncio.Task[None] | None = None
        # Kept in step rather than counted, so /health and /metrics cost O(1) per scrape.
        self.authenticated_count = 0

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)

    def authenticated(self, connection: Connection) -> None:
        assert connection.identity is not None
        self._by_tenant[connection.identity.tenant_id].add(connection)
        self.authenticated_count += 1

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

    def broadcast(self, tenant_id: str, event: dict[str, Any], exclude: Subscriber | None) -> None:
        """Send a lifecycle event to the tenant's connections (never another tenant's)."""
        targets = self._by_tenant.get(tenant_id)
        if not targets:
            return
        data = None
        for connection in targets:
            if connection is exclude:
                continue
            if data is None:
                data = encode_frame(event)
            connection.send_encoded(data)

    def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="ws-heartbeat")

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            data = encode_frame({"type": "heartbeat", "ts": int(time.time() * 1000)})
            for connection in list(self.connections):
                connection.send_encoded(data)

    async def close_all(self, code: int, reason: str, timeout_s: float = 5.0) -> None:
        """Close every connection with `code` and wait (bounded) until the close frames are out,
        so nothing later in shutdown (Sanic cancelling handlers) can replace the code."""
        closing = [c.close(code, reason) for c in list(self.connections)]
        pending = [task for task in closing if task is not None]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
