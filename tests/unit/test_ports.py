"""Ports for test and benchmark servers: free, distinct, out of outgoing connections' way."""

from __future__ import annotations

import socket

import pytest

from diminuendo.local import ports
from diminuendo.local.ports import consecutive_free_ports, ephemeral_range, free_port, free_ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low, _ = ephemeral_range()
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for port in ports:
        assert 1024 <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if it was not free


def test_a_port_is_never_handed_out_twice_even_once_free_again() -> None:
    seen = set(free_ports(50))
    assert seen.isdisjoint(free_port() for _ in range(50))


def test_a_port_something_is_bound_to_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    low, _ = ephemeral_range()
    with socket.socket() as holder:
        held = next(p for p in range(low - 1, low - 500, -1) if _bound(holder, p))
        spare = next(p for p in range(low - 1000, low - 2000, -1) if _unused(p))
        draws = iter([held, spare])
        monkeypatch.setattr(ports.random, "choice", lambda candidates: next(draws))
        assert free_ports(1) == [spare]


def test_consecutive_ports_are_a_free_run_never_handed_out_before() -> None:
    """`dev --instances 3 --port P` listens on P, P+1, P+2: a run in which a port handed out
    earlier (a server of an earlier test may hold it) never appears."""
    earlier = set(free_ports(100))
    for _ in range(20):
        run = consecutive_free_ports(3)
        assert run == list(range(run[0], run[0] + 3))
        assert earlier.isdisjoint(run)
        earlier.update(run)
        for port in run:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))


def _unused(port: int) -> bool:
    with socket.socket() as sock:
        return port not in ports._handed_out and _bound(sock, port)


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True
