"""CPU per inbound runtime frame: the websockets asyncio client (the old `RuntimeConnection`
read loop) against the Sans-I/O reader (`upstreams/runtime_socket.py`), on uvloop as in the
gateway.

A sender subprocess (its CPU is not counted) holds `--sockets` runtime sockets and writes one
`stream_update` frame to each per tick, so every `data_received` carries about one frame, as with
thousands of sessions at a few events per second each. The figure is the reading process's CPU
time (user + system, including the event loop and syscalls) divided by the frames read.

    .venv/bin/python bench/tools/runtime_reader_cpu.py --sockets 50 --frames 40000
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import uvloop
from websockets.http11 import Request
from websockets.server import ServerProtocol

FRAME = msgspec.json.encode(
    {
        "type": "update",
        "event_type": "stream_update",
        "content": {"text": "word ", "turn_id": "trn_0123456789abcdef", "event_id": 1234},
    }
)
END = b'{"type":"update","event_type":"bench.end","content":{}}'


# ----- the sender (subprocess) ------------------------------------------------------------------


class Round:
    """The sockets of one client variant: a round starts once `expected` of them said "go"."""

    def __init__(self) -> None:
        self.senders: list[Sender] = []
        self.expected = 0
        self.ready = asyncio.Event()

    def joined(self, sender: Sender) -> None:
        self.senders.append(sender)
        if len(self.senders) == self.expected:
            self.ready.set()


class Sender(asyncio.Protocol):
    """One runtime socket of the sender, on websockets' Sans-I/O server protocol."""

    def __init__(self, round_: Round) -> None:
        self.round = round_

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.protocol = ServerProtocol(max_size=None)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self.protocol.send_response(self.protocol.accept(event))
            elif getattr(event, "data", b"") == b"go":
                self.round.joined(self)
        self.flush()

    def flush(self) -> None:
        chunks = self.protocol.data_to_send()
        data = b"".join(chunks)
        if data:
            self.transport.write(data)
        if b"" in chunks:
            self.transport.close()

    def send(self, message: bytes) -> None:
        self.protocol.send_text(message)
        self.flush()


async def serve(per_socket: int, rate: float) -> None:
    round_ = Round()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sender(round_), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    while True:  # one round per client variant: wait for every socket's "go"
        count = int(await loop.run_in_executor(None, sys.stdin.readline) or 0)
        if not count:
            return
        round_.expected = count
        if len(round_.senders) < count:
            await round_.ready.wait()
        round_.ready.clear()
        ticks_per_s = rate / count
        started = time.monotonic()
        for tick in range(per_socket):
            for sender in round_.senders:
                sender.send(FRAME)
            await asyncio.sleep(max(0.0, started + (tick + 1) / ticks_per_s - time.monotonic()))
        for sender in round_.senders:
            sender.send(END)
        round_.senders.clear()


# ----- the readers ------------------------------------------------------------------------------


async def read_old(url: str, sockets: int, go: Any) -> int:
    """The read loop `RuntimeConnection` had: `async for` over websockets' asyncio client."""
    from websockets.asyncio.client import connect

    decoder = msgspec.json.Decoder()
    frames = 0

    async def reader(ws: Any) -> None:
        nonlocal frames
        async for raw in ws:
            frame = decoder.decode(raw)
            if frame.get("event_type") == "bench.end":
                return
            frames += 1

    connections = [
        await connect(url, compression=None, max_size=16 * 1024 * 1024) for _ in range(sockets)
    ]
    tasks = [asyncio.create_task(reader(ws)) for ws in connections]
    go()
    for ws in connections:
        await ws.send("go")
    await asyncio.gather(*tasks)
    go.stop()
    for ws in connections:
        await ws.close()
    return frames


async def read_new(url: str, sockets: int, go: Any) -> int:
    """`RuntimeConnection` as it is now, over `ClientSocket`."""
    from diminuendo.upstreams.podium_runtime import RuntimeConnection

    frames = 0
    done = asyncio.Event()
    ended = 0

    def on_frame(frame: dict[str, Any]) -> None:
        nonlocal frames, ended
        if frame.get("event_type") == "bench.end":
            ended += 1
            if ended == sockets:
                done.set()
        else:
            frames += 1

    async def on_lost(reason: str) -> None:
        raise RuntimeError(reason)

    runtimes = []
    for _ in range(sockets):
        runtime = RuntimeConnection(
            url,
            "bench",
            podium=cast(Any, SimpleNamespace(greets=False)),  # the sender sends no hello
            instance_id="inst_bench",
            on_frame=on_frame,
            on_lost=on_lost,
            on_attached=lambda running, reconnected: None,
            reconnect_window_s=1.0,
        )
        await runtime.open()
        runtimes.append(runtime)
    go()
    for runtime in runtimes:
        runtime._socket.send_text(b"go")  # not JSON: a bench-only start signal
    await done.wait()
    go.stop()
    for runtime in runtimes:
        await runtime.close()
    return frames


class Clock:
    """`go()` starts a round (tells the sender, starts the CPU clock); `stop()` stops the clock."""

    def __init__(self, sender: Any, sockets: int) -> None:
        self.sender = sender
        self.sockets = sockets
        self.cpu = 0.0

    def __call__(self) -> None:
        self.sender.stdin.write(f"{self.sockets}\n".encode())
        self.sender.stdin.flush()
        self.cpu = -time.process_time()

    def stop(self) -> None:
        self.cpu += time.process_time()


async def measure(name: str, read: Any, url: str, sockets: int, sender: Any) -> float:
    clock = Clock(sender, sockets)
    frames = await read(url, sockets, clock)
    cpu = clock.cpu
    per_frame_us = cpu / frames * 1e6
    print(f"{name:>4}: {frames} frames, {cpu:.3f} s CPU, {per_frame_us:.2f} µs/frame")
    return per_frame_us


async def main(args: argparse.Namespace, sender: subprocess.Popen[bytes]) -> None:
    try:
        assert sender.stdout is not None
        port = int(sender.stdout.readline())
        url = f"ws://127.0.0.1:{port}/agent/inst_bench"
        readers = {"old": read_old, "new": read_new}
        results: dict[str, list[float]] = {name: [] for name in args.variants}
        for _ in range(args.rounds):
            for name in args.variants:
                results[name].append(await measure(name, readers[name], url, args.sockets, sender))
        best = ", ".join(f"{name} {min(runs):.2f} µs/frame" for name, runs in results.items())
        print(f"best of {args.rounds}: {best}")
        sender.stdin.write(b"0\n")
        sender.stdin.flush()
        sender.wait(10)
    finally:
        if sender.poll() is None:
            sender.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--frames", type=int, default=40_000, help="per variant and round")
    parser.add_argument("--rate", type=float, default=20_000, help="frames per second, total")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=["old", "new"], default=["old", "new"])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        uvloop.run(serve(args.serve, args.rate))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        per_socket = str(args.frames // args.sockets)
        sender = subprocess.Popen(
            [sys.executable, __file__, "--serve", per_socket, "--rate", str(args.rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        uvloop.run(main(args, sender))
