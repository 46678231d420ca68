"""The dev-mode Host rule (DNS-rebinding guard): which `Host` values name a loopback host."""

from __future__ import annotations

import pytest

from diminuendo.gateway.host_guard import loopback_host, probe_hosts


@pytest.mark.parametrize(
    "header",
    [
        "localhost",
        "LocalHost:8001",
        "127.0.0.1",
        "127.0.0.1:8001",
        "127.9.9.9:1",
        "[::1]",
        "[::1]:8001",
        "[0:0:0:0:0:0:0:1]:80",
        " localhost:8001 ",
    ],
)
def test_loopback_names_and_addresses_with_any_port(header: str) -> None:
    assert loopback_host(header)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "evil.example",
        "evil.example:8001",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "localhost:",
        "localhost:80x",
        "localhost:\uff18\uff10",  # full-width digits are digits to str.isdigit
        "localhost:80:80",
        "::1",  # an IPv6 literal needs brackets
        "[::1",
        "[::1]x",
        "[::1]:",
        "[127.0.0.1]",
        "10.0.0.1",
        "0.0.0.0:8001",
        "127.1",
        "2130706433",
    ],
)
def test_everything_else_is_foreign(header: str) -> None:
    assert not loopback_host(header)


def test_every_fast_path_host_passes_the_full_rule() -> None:
    hosts = probe_hosts(8001)
    assert b"localhost:8001" in hosts and b"[::1]" in hosts
    assert all(loopback_host(host.decode()) for host in hosts)
