"""Tenant broadcasts: one channel per tenant (`diminuendo.fleet.broadcasts`) against one channel
for every tenant, as seen by an instance that serves a share of the tenants.

    python bench/valkey_broadcast.py                  # starts its own valkey-server
    python bench/valkey_broadcast.py --tenants 1000 --served 100 --messages 20000

A sender process publishes `--messages` broadcasts spread evenly over `--tenants` tenants, in
pipelined batches (a busy fleet). The receiving instance (this process) serves `--served` of the
tenants. Per-tenant mode: it watches those tenants' channels through `TenantBroadcasts` and
receives only their messages. One-channel mode: it subscribes one channel, receives every
message and drops the other tenants' after decoding (what a single channel costs every
instance). Printed: subscription time and Valkey memory per tenant channel, messages received,
and the receiver's CPU time (`time.process_time`) per published message. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import redis

from diminuendo.fleet.broadcasts import TenantBroadcasts, _Broadcast
from diminuendo.fleet.bus import Bus
from diminuendo.fleet.connection import open_client
from diminuendo.fleet.keys import Keyspace

KEYS = Keyspace("dimbench")
ALL_TENANTS = "dimbench:tenants"  # the single channel of the alternative
EVENT = {"type": "session_created", "session": {"id": "ses_0123456789abcdef", "name": "x" * 40}}


def publish(url: str, tenants: int, messages: int, single: bool) -> None:
    """The sender: a synchronous client in its own process, so its CPU is not measured."""
    client = redis.Redis.from_url(url)
    encode = msgspec.json.Encoder().encode
    pipe = client.pipeline(transaction=False)
    for n in range(messages):
        tenant = f"tenant-{n % tenants}"
        data = encode(_Broadcast("sender", tenant, "user-1", EVENT))
        pipe.publish(ALL_TENANTS if single else KEYS.tenant_channel(tenant), data)
        if n % 200 == 199:
            pipe.execute()
    pipe.execute()
    client.close()


async def receive(url: str, args: argparse.Namespace, single: bool) -> None:
    served = [f"tenant-{n}" for n in range(args.served)]
    expected = args.messages * args.served // args.tenants
    delivered = 0
    received = 0
    done = asyncio.Event()

    def deliver(_owner: str, _event: dict[str, Any]) -> None:
        nonlocal delivered
        delivered += 1
        if delivered == expected:
            done.set()

    client = open_client(url, timeout_s=5.0)
    before = int((await client.info("memory"))["used_memory"])
    if single:
        wanted = set(served)
        decode = msgspec.json.Decoder(_Broadcast).decode

        def on_message(_channel: str, data: bytes) -> None:
            nonlocal received
            received += 1
            message = decode(data)
            if message.tenant_id in wanted:
                deliver(message.owner_id, message.event)

        bus = Bus(url, on_message=on_message, on_gap=lambda _c: None, timeout_s=5.0)
        task = asyncio.create_task(bus.run())
        started = time.perf_counter()
        await bus.subscribe(ALL_TENANTS)
    else:
        broadcasts = TenantBroadcasts(
            client,
            url,
            KEYS,
            "receiver",
            on_invalidate=lambda *_: None,
            on_gap=lambda _t: None,
            bus_timeout_s=5.0,
        )
        await broadcasts.start()
        started = time.perf_counter()
        for tenant in served:
            await broadcasts.watch(tenant, deliver)
    subscribed_ms = (time.perf_counter() - started) * 1000
    after = int((await client.info("memory"))["used_memory"])

    sender = multiprocessing.get_context("spawn").Process(
        target=publish, args=(url, args.tenants, args.messages, single)
    )
    cpu = time.process_time()
    sender.start()
    await asyncio.wait_for(done.wait(), 120)
    cpu = time.process_time() - cpu
    sender.join(30)
    if single:
        task.cancel()
    else:
        received = delivered
        await broadcasts.close()
    mode = "one channel" if single else "per tenant"
    channels = 1 if single else args.served
    print(
        f"valkey_broadcast [{mode}]: {channels} channel(s) subscribed in {subscribed_ms:.0f} ms, "
        f"{(after - before) / channels:,.0f} B of Valkey memory each"
    )
    print(
        f"valkey_broadcast [{mode}]: received {received} of {args.messages} messages "
        f"({delivered} for served tenants), receiver CPU {cpu * 1e6 / args.messages:.2f} µs "
        f"per published message"
    )
    await client.aclose()


async def run(url: str, args: argparse.Namespace) -> None:
    for single in (False, True):
        await receive(url, args, single)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing Valkey (default: start one)")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--served", type=int, default=100, help="tenants this instance serves")
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args))
        return
    from diminuendo.local.valkey import LocalValkey

    with tempfile.TemporaryDirectory(prefix="valkey-bench-") as data_dir:
        server = LocalValkey(Path(data_dir))
        server.start()
        try:
            asyncio.run(run(server.url, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
