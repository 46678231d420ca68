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

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from lib.options import option, parse_options
from lib.valkey import valkey_url

from diminuendo.fleet.broadcasts import TenantBroadcasts, _Broadcast
from diminuendo.fleet.bus import Bus
from diminuendo.fleet.connection import open_client
from diminuendo.fleet.keys import Keyspace

KEYS = Keyspace("dimbench")
ALL_TENANTS = "dimbench:tenants"  # the single channel of the alternative
EVENT = {"type": "session_created", "session": {"id": "ses_0123456789abcdef", "name": "x" * 40}}


@dataclass(frozen=True, kw_only=True)
class ValkeyBroadcastOptions:
    url: str | None = option(None, "an existing Valkey (default: start one)")
    tenants: int = option(1000)
    served: int = option(100, "tenants this instance serves")
    messages: int = option(20_000)


class Tally:
    """Messages the receiving instance got, and those for tenants it serves (`done` once all
    of the latter have arrived)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.delivered = 0
        self.done = asyncio.Event()

    def deliver(self, _owner: str, _event: dict[str, Any]) -> None:
        self.delivered += 1
        if self.delivered == self.expected:
            self.done.set()


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


def one_channel_bus(url: str, served: list[str], tally: Tally) -> Bus:
    """The alternative: every tenant's broadcasts on one channel, decoded and then dropped
    unless the tenant is served here."""
    wanted = set(served)
    decode = msgspec.json.Decoder(_Broadcast).decode

    def on_message(_channel: str, data: bytes) -> None:
        tally.received += 1
        message = decode(data)
        if message.tenant_id in wanted:
            tally.deliver(message.owner_id, message.event)

    return Bus(url, on_message=on_message, on_gap=lambda _c: None, timeout_s=5.0)


async def receive(url: str, options: ValkeyBroadcastOptions, single: bool) -> None:
    served = [f"tenant-{n}" for n in range(options.served)]
    tally = Tally(options.messages * options.served // options.tenants)
    client = open_client(url, timeout_s=5.0)
    before = int((await client.info("memory"))["used_memory"])
    if single:
        bus = one_channel_bus(url, served, tally)
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
            await broadcasts.watch(tenant, tally.deliver)
    subscribed_ms = (time.perf_counter() - started) * 1000
    after = int((await client.info("memory"))["used_memory"])

    sender = multiprocessing.get_context("spawn").Process(
        target=publish, args=(url, options.tenants, options.messages, single)
    )
    cpu = time.process_time()
    sender.start()
    await asyncio.wait_for(tally.done.wait(), 120)
    cpu = time.process_time() - cpu
    sender.join(30)
    if single:
        task.cancel()
    else:
        tally.received = tally.delivered
        await broadcasts.close()
    mode = "one channel" if single else "per tenant"
    channels = 1 if single else options.served
    print(
        f"valkey_broadcast [{mode}]: {channels} channel(s) subscribed in {subscribed_ms:.0f} ms, "
        f"{(after - before) / channels:,.0f} B of Valkey memory each"
    )
    print(
        f"valkey_broadcast [{mode}]: received {tally.received} of {options.messages} messages "
        f"({tally.delivered} for served tenants), receiver CPU "
        f"{cpu * 1e6 / options.messages:.2f} µs per published message"
    )
    await client.aclose()


async def run(url: str, options: ValkeyBroadcastOptions) -> None:
    for single in (False, True):
        await receive(url, options, single)


def main() -> None:
    options = parse_options(ValkeyBroadcastOptions, __doc__.splitlines()[0])
    with valkey_url(options.url) as url:
        asyncio.run(run(url, options))


if __name__ == "__main__":
    main()
