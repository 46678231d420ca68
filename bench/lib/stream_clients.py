"""The stream benchmark's client side: sessions created over a few connections, one subscriber
per session (or many on one), counting frames and delta pieces and taking one latency per
stamped piece, with as little parsing as it can (a prefix test and one regex per frame)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from benchlib import WS, gateway_handshake, ws_connect

STAMP = re.compile(rb"@(\d{13}) ")
DELTA_PREFIX = b'{"type":"text_delta"'
COMPLETE_PREFIX = b'{"type":"turn_complete"'
ERROR_PREFIXES = (b'{"type":"turn_error"', b'{"type":"error"')
CREATORS = 4


class Recorder:
    """Shared counters; `measuring` is True inside the measurement window."""

    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.window_frames = 0
        self.window_pieces = 0
        self.frames = 0
        self.pieces = 0
        self.completed = 0
        self.errors: list[bytes] = []
        self.all_done = asyncio.get_running_loop().create_future()
        self.expected_completions = 0


class Subscriber:
    """One client of a session; its latencies go to `latencies` (by default the recorder's: a
    separate list reports a group apart, e.g. the followers of a fleet run)."""

    __slots__ = ("completed", "frames", "latencies", "pieces", "rec", "session_id", "ws")

    def __init__(
        self, rec: Recorder, session_id: str, latencies: list[float] | None = None
    ) -> None:
        self.rec = rec
        self.latencies = rec.latencies if latencies is None else latencies
        self.session_id = session_id
        self.ws: WS | None = None
        self.frames = 0
        self.pieces = 0
        self.completed = False

    def on_text(self, payload: bytes) -> None:
        if payload.startswith(DELTA_PREFIX):
            rec = self.rec
            stamps = STAMP.findall(payload)
            self.frames += 1
            self.pieces += len(stamps)
            rec.frames += 1
            rec.pieces += len(stamps)
            if rec.measuring:
                now = time.time() * 1000
                rec.window_frames += 1
                rec.window_pieces += len(stamps)
                self.latencies.extend([now - int(s) for s in stamps])
        elif payload.startswith(COMPLETE_PREFIX):
            self.completed = True
            rec = self.rec
            rec.completed += 1
            if rec.completed >= rec.expected_completions and not rec.all_done.done():
                rec.all_done.set_result(None)
        elif payload.startswith(ERROR_PREFIXES):
            self.rec.errors.append(payload[:300])


async def create_sessions(port: int, count: int) -> list[str]:
    """`count` slow-agent sessions over CREATORS connections (few, so broadcasts stay cheap)."""
    ids: list[str] = []
    per = [count // CREATORS + (1 if i < count % CREATORS else 0) for i in range(CREATORS)]

    async def creator(n: int) -> None:
        ws = await ws_connect(port, timeout=30)
        try:
            await gateway_handshake(ws)
            for index in range(n):
                rid = f"c{index}"
                ws.send_json({"type": "create_session", "agentType": "slow", "id": rid})
                frame = await ws.recv_until(lambda f, rid=rid: f.get("id") == rid, 30)
                if frame.get("type") != "session_created":
                    raise RuntimeError(f"create_session failed: {frame}")
                ids.append(frame["session"]["id"])
        finally:
            ws.close()

    await asyncio.gather(*(creator(n) for n in per if n))
    return ids


async def join(
    port: int, sub: Subscriber, source: str | None, semaphore: asyncio.Semaphore
) -> float:
    """Connect, join and wait until the session is `ready`; ms taken."""
    async with semaphore:
        started = time.perf_counter()
        ws = await ws_connect(port, local_ip=source, timeout=60)
        sub.ws = ws
        await gateway_handshake(ws, 60)
        ws.send_json({"type": "join_session", "sessionId": sub.session_id, "id": "j"})

        def ready(frame: dict[str, Any]) -> bool:
            if frame.get("type") == "error":
                raise RuntimeError(f"join failed: {frame}")
            if frame.get("type") == "state_snapshot":
                return frame["session"]["status"] == "ready"
            return frame.get("type") == "session_state" and frame.get("state") == "ready"

        await ws.recv_until(ready, 60)
        return (time.perf_counter() - started) * 1000


def turn_text(deltas: int, interval_ms: int) -> str:
    return f'{{"deltas":{deltas},"interval_ms":{interval_ms},"stamp":true}}'


def start_turns(starters: list[Subscriber], text: str, stagger_s: float) -> None:
    """One turn per `starters` entry, from 0.2 s on, staggered over `stagger_s`."""

    def start(sub: Subscriber) -> None:
        assert sub.ws is not None
        sub.ws.send_json({"type": "run_turn", "sessionId": sub.session_id, "text": text})

    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2
    for index, sub in enumerate(starters):
        loop.call_at(t0 + index * stagger_s / len(starters), start, sub)
