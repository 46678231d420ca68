"""The key every per-client-address limit counts under (PROTOCOL.md §3, §13).

Which address is the client's is Sanic's proxy configuration (`PROXIES_COUNT`, `REAL_IP_HEADER`,
`FORWARDED_SECRET`): the forwarded address when it says which header to trust, else the socket
peer. Behind a proxy that is not configured, every client has the proxy's address, and one
client's failures would count against all of them.

IPv6 clients are counted per /64: a subscriber is usually given a whole /64 and can pick any of
its 2^64 addresses, so counting single addresses would hand one client that many budgets.
"""

from __future__ import annotations

import ipaddress

IPV6_PREFIX = 64


def address_key(forwarded: str, peer: str) -> str:
    """One IPv4 address or one IPv6 /64 (as ``2001:db8::/64``) for a client.

    ``forwarded`` is what the trusted proxy header says (Sanic's ``request.remote_addr``, empty
    when no proxy setting applies) and wins when it is an IP address; otherwise ``peer``, the
    socket's address (``request.ip``). An IPv4-mapped IPv6 address counts as its IPv4 address.
    A peer that is no IP address at all (a Unix socket) is its own key.
    """
    for candidate in (forwarded, peer):
        key = _ip_key(candidate)
        if key is not None:
            return key
    return peer


def _ip_key(text: str) -> str | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    host_bits = 128 - IPV6_PREFIX
    return str(ipaddress.IPv6Network((int(ip) >> host_bits << host_bits, IPV6_PREFIX)))
