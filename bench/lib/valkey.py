"""A Valkey for the fleet benchmarks: the one named by `--url`, or a valkey-server of their own;
and what a benchmark reads of it (its memory, the entries of the sessions' logs)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diminuendo.local.valkey import LocalValkey


@contextlib.contextmanager
def valkey_url(url: str | None) -> Iterator[str]:
    """`url`, or else a valkey-server started on 127.0.0.1 in a temporary directory for the
    block (`diminuendo.local.valkey`, as the tests use) and stopped after it."""
    if url:
        yield url
        return
    with local_valkey() as server:
        yield server.url


@contextlib.contextmanager
def local_valkey() -> Iterator[LocalValkey]:
    """A valkey-server of the benchmark's own for the block (its PID for the CPU meter)."""
    from diminuendo.local.valkey import LocalValkey

    with tempfile.TemporaryDirectory(prefix="valkey-bench-") as data_dir:
        server = LocalValkey(Path(data_dir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def used_memory(url: str) -> int:
    """`INFO memory` `used_memory` (bytes)."""
    from diminuendo.fleet.connection import open_client

    client = open_client(url, timeout_s=10)
    try:
        return int((await client.info("memory"))["used_memory"])
    finally:
        await client.aclose()


async def retained_events(url: str, session_ids: list[str], prefix: str = "dim") -> int:
    """The entries the sessions' logs hold (`XLEN` of each, pipelined)."""
    from diminuendo.fleet.connection import open_client
    from diminuendo.fleet.keys import Keyspace

    keys = Keyspace(prefix)
    client = open_client(url, timeout_s=30)
    try:
        total = 0
        for start in range(0, len(session_ids), 1000):
            pipe = client.pipeline(transaction=False)
            for session_id in session_ids[start : start + 1000]:
                pipe.xlen(keys.session(session_id).log)
            total += sum(await pipe.execute())
        return total
    finally:
        await client.aclose()
