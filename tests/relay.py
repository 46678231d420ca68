"""A TCP relay in the test's own event loop, between a process under test and a real server on
127.0.0.1: real sockets on both sides, only the timing changed by what the test gives each
direction (a lag, a held WebSocket upgrade). Start the processes that use it off the loop
(`asyncio.to_thread`), or the relay stalls with them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

Pipe = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy `reader` to `writer` as it comes, then close `writer`."""
    with suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@asynccontextmanager
async def relay(port: int, *, upstream: Pipe = copy, downstream: Pipe = copy) -> AsyncIterator[int]:
    """A relay on a free port to 127.0.0.1:`port`: `upstream` carries what its clients send,
    `downstream` what the server answers; a connection ends when either direction does."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        both = [
            asyncio.create_task(upstream(down_r, up_w)),
            asyncio.create_task(downstream(up_r, down_w)),
        ]
        tasks.update(both)
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        for task in both:
            task.cancel()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        with suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
