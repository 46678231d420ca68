"""What a benchmark takes from the host: file descriptors, client source addresses, CPUs."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys

from diminuendo.local.ports import ephemeral_range


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) to at least `wanted`; return the soft
    limit now in force. Children (gateway, stack) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ephemeral_ports() -> int:
    low, high = ephemeral_range()
    return high - low + 1


def source_addresses(connections: int) -> list[str | None]:
    """Client source addresses: None (the kernel's choice, 127.0.0.1) while one address has
    ports enough, else 127.0.0.2, 127.0.0.3, … each bound explicitly (a bound port is exclusive
    per source address, so leave head room)."""
    per_address = int(ephemeral_ports() * 0.8)
    if connections <= per_address:
        return [None]
    count = math.ceil(connections / per_address)
    return [f"127.0.0.{i}" for i in range(2, 2 + count)]


def pin_load_generator() -> int | None:
    """Leave one CPU to the gateway: this process (and so everything it starts: the local stack,
    wrk, py-spy) moves to the other CPUs it may use. Returns the gateway's CPU (the lowest this
    process may use), or None, unpinned, where it may use only one."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        print("one CPU: --pin ignored, the gateway shares it", file=sys.stderr)
        return None
    os.sched_setaffinity(0, allowed[1:])
    return allowed[0]
