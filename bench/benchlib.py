"""A minimal WebSocket client for the benchmarks: `ws_connect`, the `WS` protocol it returns,
the gateway's handshake, and closing many sockets at once. The rest of the benchmarks' plumbing
(servers, /proc readings, results, options) is in `lib/`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections import deque
from collections.abc import Callable
from typing import Any

# ----- a minimal WebSocket client -----------------------------------------------------------


class WSError(Exception):
    pass


class WS(asyncio.Protocol):
    """The client end of one WebSocket, parsing as little as possible.

    Text frames are handed to `on_text(payload_bytes)` when set, else queued for `recv()`. Pings
    are answered, a close frame is echoed. No extension, no compression; server frames are
    unmasked (RFC 6455), client frames masked.
    """

    def __init__(self, request: bytes, on_text: Callable[[bytes], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None
        self.upgraded: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.close_code: int | None = None
        self._buf = bytearray()
        self._is_open = False
        self._frag: bytearray | None = None
        self._inbox: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._is_open = False
        if not self.upgraded.done():
            self.upgraded.set_exception(WSError(f"connection lost before upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)
        self._wake()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._is_open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = 0
            if self.status != 101:
                if not self.upgraded.done():
                    self.upgraded.set_exception(WSError(f"upgrade refused: HTTP {self.status}"))
                if self.transport is not None:
                    self.transport.close()
                return
            self._is_open = True
            self.upgraded.set_result(101)
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > n:
                break
            payload = bytes(buf[pos + head : end])
            pos = end
            opcode = b0 & 0x0F
            if opcode in (1, 2, 0):
                if not b0 & 0x80:  # a fragment: keep it until the final one
                    self._frag = (self._frag or bytearray()) + payload
                    continue
                if opcode == 0 and self._frag is not None:
                    payload = bytes(self._frag + payload)
                    self._frag = None
                if self.on_text is not None:
                    self.on_text(payload)
                else:
                    self._inbox.append(payload)
                    self._wake()
            elif opcode == 9:
                self._send_frame(0xA, payload)
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                with contextlib.suppress(Exception):
                    self._send_frame(0x8, payload[:2])
                if self.transport is not None:
                    self.transport.close()
        if pos:
            del buf[:pos]

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # sending
    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        if n:
            key = (mask * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
                n, "big"
            )
        self.transport.write(header + mask + payload)

    def send_text(self, text: str | bytes) -> None:
        self._send_frame(0x1, text.encode() if isinstance(text, str) else text)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message, separators=(",", ":")))

    async def recv(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            while not self._inbox:
                if self.closed.done():
                    raise WSError(f"closed ({self.close_code})")
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            return self._inbox.popleft()

    async def recv_json(self, timeout: float = 10.0) -> dict[str, Any]:
        return json.loads(await self.recv(timeout))

    async def recv_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0):
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv_json(timeout)
                if predicate(frame):
                    return frame

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self._send_frame(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def upgrade_request(port: int, path: str = "/ws", headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def ws_connect(
    port: int,
    *,
    path: str = "/ws",
    headers: dict[str, str] | None = None,
    local_ip: str | None = None,
    on_text: Callable[[bytes], None] | None = None,
    timeout: float = 10.0,
) -> WS:
    loop = asyncio.get_running_loop()
    request = upgrade_request(port, path, headers)
    local = (local_ip, 0) if local_ip else None
    async with asyncio.timeout(timeout):
        _, proto = await loop.create_connection(
            lambda: WS(request, on_text), "127.0.0.1", port, local_addr=local
        )
        await proto.upgraded
    return proto


async def gateway_handshake(ws: WS, timeout: float = 10.0) -> list[str]:
    """The three frames a dev-mode (or header-authenticated) client gets on open."""
    types = []
    for _ in range(3):
        frame = await ws.recv_json(timeout)
        types.append(frame.get("type"))
    if types != ["welcome", "connected", "authenticated"]:
        raise WSError(f"unexpected handshake {types}")
    return types


async def close_all(sockets: list[WS], grace_s: float = 5.0) -> None:
    for ws in sockets:
        ws.close()
    pending = [ws.closed for ws in sockets if not ws.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=grace_s)
    for ws in sockets:
        if not ws.closed.done():
            ws.abort()
