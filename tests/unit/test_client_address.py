"""`address_key`: which client a per-address limit counts (PROTOCOL.md §13)."""

from __future__ import annotations

import pytest

from diminuendo.auth.client_address import address_key


@pytest.mark.parametrize(
    ("forwarded", "peer", "key"),
    [
        ("", "127.0.0.1", "127.0.0.1"),  # no trusted proxy header: the socket peer
        ("203.0.113.9", "10.0.0.2", "203.0.113.9"),  # the forwarded client wins
        ("[2001:db8:1:2::1]", "10.0.0.2", "2001:db8:1:2::/64"),  # Sanic brackets IPv6
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.7", "", "198.51.100.7"),  # IPv4-mapped counts as IPv4
        ("fe80::1%eth0", "", "fe80::/64"),  # a scope id does not make another client
        ("unknown", "10.0.0.2", "10.0.0.2"),  # not an address: the peer
        ("", "[::1]", "::/64"),
        ("", "/run/diminuendo.sock", "/run/diminuendo.sock"),  # a Unix socket is its own key
    ],
)
def test_address_key(forwarded: str, peer: str, key: str) -> None:
    assert address_key(forwarded, peer) == key
