"""Free loopback ports for servers that tests and benchmarks start on 127.0.0.1.

A port the kernel picks with `bind(0)` comes from the ephemeral range, which every outgoing
connection also draws from. A suite or a benchmark that opens thousands of connections can take
a server's port in the moment between picking it and the server binding it ("address already in
use"; seen in the benchmark smoke run). So ports are drawn at random from the 12,000 below that
range, checked by binding, and never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (Linux's default where unreadable)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that nothing is bound to on `host` right now."""
    low, _ = ephemeral_range()
    candidates = range(max(1024, low - 12_000), low)
    ports: list[int] = []
    for _ in range(200 * count):
        port = random.choice(candidates)
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports in {candidates.start}-{candidates.stop - 1}")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def consecutive_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` free ports in a row, for a server that numbers its listeners from a first port
    (`dev --instances N`): none of them handed out before by this process, which a server
    started earlier in the same test run may still hold."""
    low, _ = ephemeral_range()
    candidates = range(max(1024, low - 12_000), low - count + 1)
    for _ in range(200):
        first = random.choice(candidates)
        run = list(range(first, first + count))
        if _handed_out.isdisjoint(run) and all(_bindable(host, port) for port in run):
            _handed_out.update(run)
            return run
    raise RuntimeError(f"no {count} consecutive free ports in {candidates.start}-{low - 1}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
