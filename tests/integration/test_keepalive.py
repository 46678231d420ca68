"""The idle rule (PROTOCOL.md §6): a connection that sends nothing, not even a WebSocket pong, is
closed; one that only answers the server's pings stays open. Kept by the Hub's one keepalive task
(WS_IDLE_TIMEOUT=3 → a ping every second)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time

from tests.conftest import client


def silent_socket(port: int) -> socket.socket:
    """A WebSocket client that completes the upgrade and then never sends a byte (no pongs)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> bytes:
    """Everything the server sends until it closes the TCP connection (bounded in time)."""
    received = bytearray()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return bytes(received)
        received += chunk
    raise AssertionError("the silent connection was not closed in time")


async def test_silent_client_is_closed_and_one_that_answers_pings_stays(start_gateway) -> None:
    gw = start_gateway(WS_IDLE_TIMEOUT="3")
    async with client(gw.ws_url) as live:  # websockets answers pings; it sends nothing else
        sock = silent_socket(gw.port)
        started = time.monotonic()
        received = await asyncio.to_thread(read_until_closed, sock, 10.0)
        elapsed = time.monotonic() - started
        sock.close()
        assert 2.5 <= elapsed <= 6.0, elapsed
        assert b" 101 " in received.split(b"\r\n", 1)[0]
        assert b"\x89\x00" in received, "the server pinged"
        # The last frame is a close frame with code 1011 (idle).
        assert received.endswith(b"\x88\x0e" + struct.pack("!H", 1011) + b"idle timeout")

        assert (await live.request({"type": "ping"}))["type"] == "pong", "still open after 3 s+"
