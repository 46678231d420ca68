"""What a benchmark takes from the host: file descriptors, client source addresses, CPUs."""

from __future__ import annotations

import contextlib
import math
import resource

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


def cpu_plan(allowed: list[int], gateways: int) -> tuple[list[int], list[int]]:
    """(one CPU per gateway, the CPUs of everything else: the load generator, the local stack,
    Valkey). Each gateway gets a CPU of its own, the lowest ones, as a gateway process has its own
    core in production; the rest share what is left, or every CPU when no CPU is left (two
    gateways on a 2-core host: one core each, client, stack and Valkey on both). One CPU, or
    fewer CPUs than gateways: no pinning, ([], allowed)."""
    if len(allowed) < 2 or len(allowed) < gateways:
        return [], allowed
    rest = allowed[gateways:] or allowed
    return allowed[:gateways], rest


def describe_plan(gateway_cpus: list[int], rest: list[int]) -> str:
    """The plan as the benchmark prints it."""
    if not gateway_cpus:
        return f"not pinned: everything shares CPUs {_cpus(rest)}"
    own = ", ".join(f"gateway {i + 1} on CPU {cpu}" for i, cpu in enumerate(gateway_cpus))
    shared = " (shared with the gateways)" if set(rest) & set(gateway_cpus) else ""
    return f"pinned: {own}; client, local stack and Valkey on CPUs {_cpus(rest)}{shared}"


def _cpus(cpus: list[int]) -> str:
    return ",".join(str(cpu) for cpu in cpus)
