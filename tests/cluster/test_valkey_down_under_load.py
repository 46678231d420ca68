"""Valkey down for 30 s under load (issue 16 "Done when"): a real gateway process (dev mode), the
local stack, a `valkey-server` of the test's own, stopped by PID for a real 30 s while several
sessions stream `slow` turns.

What a user of the fleet must see: health `degraded` with the reason within a few seconds, and
every `/health` answered promptly throughout (no hang); the gateway process stays up; the turns
in flight keep streaming to their clients — while the owner's lease lasts on the sessions it
owns, then (the lease lost after `SESSION_LEASE_TTL` without Valkey: docs/FLEET.md) after a
1001 "session moved" and a rejoin on the same instance, which serves the session in memory with
a new epoch and `gap: true` (never a silent hole) and adopts the running turn; no accepted
message is lost: every turn ends with its whole text, and a turn asked for during the outage
runs too. Valkey back: health `ok`, and a session activated then has its log in Valkey.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from diminuendo.local.valkey import LocalValkey
from tests.cluster.test_gateway_valkey_trouble import health_of, wait_health
from tests.cluster.test_session_log import stream_frames, wait_logged
from tests.conftest import Stack, client, gateway_process
from tests.integration.test_sessions import join_ready, new_session, slow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

OUTAGE_S = 30.0
SESSIONS = 3
DELTAS, INTERVAL_MS = 550, 100  # 55 s a turn: it starts before the outage and outlives it
HEALTH_BOUND_S = 3.0  # every /health of the outage answers within this


@dataclass
class Streamed:
    """What one client of one session saw, connection by connection."""

    session_id: str = ""
    connections: list[list[dict[str, Any]]] = field(default_factory=list)  # stream frames
    epochs: list[str] = field(default_factory=list)  # each connection's
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each delta
    rejoins: list[dict[str, Any]] = field(default_factory=list)  # the snapshots of rejoins
    final_text: str = ""


async def stream_a_turn(url: str, streamed: Streamed, streaming: asyncio.Event) -> None:
    """Create a session, run a long slow turn and read it to `turn_complete`, rejoining with
    `{afterSeq, epoch}` whenever the gateway closes the connection with 1001."""
    last_seq, epoch = 0, ""
    while True:
        async with client(url) as c:
            if not streamed.session_id:
                streamed.session_id = await new_session(c, "slow")
                epoch = (await join_ready(c, streamed.session_id))["epoch"]
                streamed.epochs.append(epoch)
                turn = {"type": "run_turn", "sessionId": streamed.session_id}
                await c.request({**turn, "text": slow(DELTAS, INTERVAL_MS)})
            else:
                snapshot = await rejoin(c, streamed.session_id, last_seq, epoch)
                streamed.rejoins.append(snapshot)
                epoch = snapshot["epoch"]
                streamed.epochs.append(epoch)
            try:
                while not streamed.final_text:
                    frame = await c.recv(timeout=10)
                    if frame.get("type") == "text_delta":
                        streamed.arrivals.append(time.monotonic())
                        if len(streamed.arrivals) == 5:
                            streaming.set()
                    elif frame.get("type") == "turn_complete":
                        streamed.final_text = frame["finalText"]
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1001, exc
            frames = stream_frames(c, streamed.session_id)
            streamed.connections.append(frames)
            last_seq = frames[-1]["seq"] if frames else last_seq
        if streamed.final_text:
            return


async def rejoin(c: Any, session_id: str, after_seq: int, epoch: str) -> dict[str, Any]:
    """Join again (bounded retries while the session is still stopping somewhere)."""
    join = {"type": "join_session", "sessionId": session_id, "afterSeq": after_seq, "epoch": epoch}
    for _ in range(20):
        reply = await c.request(join)
        if reply["type"] == "state_snapshot":
            return reply
        assert reply.get("retryAfterMs") is not None, reply  # only a retryable error
        await asyncio.sleep(reply["retryAfterMs"] / 1000)
    raise AssertionError(f"no rejoin of {session_id}: {reply}")


async def poll_health(url: str, until: float, answers: list[tuple[float, str]]) -> None:
    """/health every 0.5 s until `until`: each answer's (seconds it took, status)."""
    while time.monotonic() < until:
        started = time.monotonic()
        async with asyncio.timeout(HEALTH_BOUND_S):
            status = (await health_of(url))["status"]
        answers.append((time.monotonic() - started, status))
        await asyncio.sleep(0.5)


async def test_valkey_down_30_s_under_load_degrades_loses_nothing_and_recovers(
    stack: Stack, own_valkey: LocalValkey, tmp_path: Path
) -> None:
    gw = gateway_process(stack, tmp_path, REDIS_URL=own_valkey.url)  # lease TTL 10 s (default)
    gw.start()
    try:
        streaming = [asyncio.Event() for _ in range(SESSIONS)]
        streams = [Streamed() for _ in range(SESSIONS)]
        turns = [
            asyncio.create_task(stream_a_turn(gw.ws_url, s, e))
            for s, e in zip(streams, streaming, strict=True)
        ]
        async with asyncio.timeout(20):
            await asyncio.gather(*(e.wait() for e in streaming))

        own_valkey.stop()
        down_at = time.monotonic()
        # At once through the failing appends; at worst the next probe (5 s) and its 1 s PING.
        down = await wait_health(gw.url, "degraded", timeout_s=8)
        valkey = down["dependencies"]["valkey"]
        assert valkey["mode"] == "memory" and valkey["ok"] is False
        assert f"127.0.0.1:{own_valkey.port}" in valkey["reason"], valkey

        health: list[tuple[float, str]] = []
        polling = asyncio.create_task(poll_health(gw.url, down_at + OUTAGE_S - 1, health))
        # A turn asked for during the outage runs, in memory.
        async with client(gw.ws_url) as c:
            session_id = await new_session(c, "slow")
            await join_ready(c, session_id)
            await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(5, 20)})
            done = await c.recv_until("turn_complete", timeout=15)
            assert done[-1]["finalText"].split() == [f"d{n}" for n in range(1, 6)]
        await polling
        assert all(status == "degraded" for _, status in health), health
        assert max(took for took, _ in health) < HEALTH_BOUND_S
        assert gw.proc is not None and gw.proc.poll() is None  # no crash

        await asyncio.sleep(down_at + OUTAGE_S - time.monotonic())
        own_valkey.start()  # same port, no persistence: empty
        back_at = time.monotonic()
        back = await wait_health(gw.url, "ok", timeout_s=10)
        assert back["dependencies"]["valkey"]["mode"] == "valkey"

        # A session activated now is owned through Valkey: its log is there.
        async with client(gw.ws_url) as c:
            session_id = await new_session(c, "slow")
            await join_ready(c, session_id)
            await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(5, 20)})
            await c.recv_until("turn_complete", timeout=15)
            seen = stream_frames(c, session_id)
        logged = await wait_logged(own_valkey.url, session_id, seen[-1]["seq"])
        assert logged[: len(seen)] == seen

        async with asyncio.timeout(60):
            await asyncio.gather(*turns)
    finally:
        gw.stop()

    for s in streams:
        # No accepted message lost: each turn ends with its whole text.
        assert s.final_text.split() == [f"d{n}" for n in range(1, DELTAS + 1)], s.session_id
        # Each connection's frames are one run of consecutive seqs: nothing lost, duplicated or
        # reordered within an epoch; a rejoin in another epoch says so (`gap: true`).
        for frames in s.connections:
            seqs = [f["seq"] for f in frames]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (s.session_id, seqs)
        # The owner's lease ran out without Valkey: its clients were closed (1001) and rejoined.
        assert s.rejoins, s.session_id
        for epoch, snapshot in zip(s.epochs, s.rejoins, strict=False):
            assert snapshot["gap"] or snapshot["epoch"] == epoch, snapshot
        # The turn kept streaming through the outage: deltas in its first and in its last third.
        outage = [t - down_at for t in s.arrivals if down_at <= t < back_at]
        assert any(t < OUTAGE_S / 3 for t in outage), (s.session_id, len(outage))
        assert any(t > 2 * OUTAGE_S / 3 for t in outage), (s.session_id, len(outage))
