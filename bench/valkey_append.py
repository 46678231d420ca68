"""Cost of the fleet's replay log in Valkey: appends per second through the fenced Lua script
(`diminuendo.fleet.replay_log`), and bytes of Valkey memory per retained event.

    python bench/valkey_append.py                       # starts its own valkey-server
    python bench/valkey_append.py --url redis://host:6379/0 --sessions 500 --events 200000

Each session is leased once (as its owner would), then `--concurrency` tasks append `--events`
payloads of `--payload` bytes spread over the sessions, each append one round trip (the gateway's
case: one frame, one append). Memory is `INFO memory`'s `used_memory` after the run minus before,
over the events Valkey retains (`XLEN` summed), so trimming by `--max-events` is accounted for.
Run on a quiet machine; the figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from lib.options import option, parse_options
from lib.valkey import valkey_url

from diminuendo.fleet.connection import open_client
from diminuendo.fleet.keys import Keyspace
from diminuendo.fleet.lease import Leases
from diminuendo.fleet.replay_log import ReplayLog


@dataclass(frozen=True, kw_only=True)
class ValkeyAppendOptions:
    url: str | None = option(None, "an existing Valkey (default: start one)")
    sessions: int = option(100)
    events: int = option(100_000)
    payload: int = option(300, "bytes per event")
    concurrency: int = option(64)
    max_events: int = option(10_000)
    max_bytes: int = option(8 * 1024 * 1024)


async def run(url: str, options: ValkeyAppendOptions) -> None:
    client = open_client(url, timeout_s=5.0)
    keys = Keyspace("dimbench")
    log = ReplayLog(client, url, keys, max_events=options.max_events, max_bytes=options.max_bytes)
    leases = Leases(client, url, keys, "bench")
    sessions = [f"ses_bench{n:06d}" for n in range(options.sessions)]
    await client.flushall()
    before = int((await client.info("memory"))["used_memory"])
    tokens = []
    for session in sessions:
        lease = await leases.acquire(session, 600_000)
        assert lease is not None
        tokens.append(lease.token)
    payload = b'{"type":"text","data":"' + b"x" * max(options.payload - 25, 0) + b'"}'
    remaining = iter(range(options.events))

    async def worker() -> None:
        for n in remaining:
            index = n % len(sessions)
            await log.append(sessions[index], payload, owner_token=tokens[index])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(options.concurrency)))
    elapsed = time.perf_counter() - started
    after = int((await client.info("memory"))["used_memory"])
    retained = sum([await client.xlen(keys.session(s).log) for s in sessions])
    events, sessions_n, in_flight = options.events, options.sessions, options.concurrency
    print(f"valkey_append: {events} appends of {len(payload)} B over {sessions_n} sessions")
    print(f"valkey_append: {events / elapsed:,.0f} appends/s ({in_flight} in flight)")
    print(f"valkey_append: {retained} events retained, {(after - before) / retained:,.0f} B/event")
    await client.aclose()


def main() -> None:
    options = parse_options(ValkeyAppendOptions, __doc__.splitlines()[0])
    with valkey_url(options.url) as url:
        asyncio.run(run(url, options))


if __name__ == "__main__":
    main()
