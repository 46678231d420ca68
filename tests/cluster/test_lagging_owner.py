"""A client that read frames from the owner and resumes on a follower is ahead of the follower's
copy by the owner's append latency; the follower must wait for those frames, not call it a gap,
while the owner is merely slow (a loaded host, a far Valkey, a GC pause).

Real processes: two gateways and one Valkey; A (the owner) reaches Valkey through a TCP relay in
this test that delays what A sends by `LAG_S` (once A owns the session: its connections are
set up without it, each within Valkey's 1 s bound), so every append of A lands that much after A's
client read the frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from diminuendo.local.valkey import LocalValkey
from tests.cluster.test_session_log import stream_frames, wait_logged
from tests.conftest import Gateway, Stack, client, gateway_process
from tests.integration.test_sessions import join_ready, new_session, slow
from tests.relay import relay

# Past the follower's old 250 ms wait, inside its 2 s one even for a connection A opens while
# lagging (~4 round trips: HELLO, CLIENT SETINFO twice, the command).
LAG_S = 0.4


class Lag:
    """The delay of a link, changed while it runs (connections are set up without it)."""

    seconds = 0.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lag: Lag) -> None:
    """Copy `reader` to `writer`, each chunk `lag.seconds` after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + lag.seconds, data))
            if not data:
                break
        await delivering
    finally:
        delivering.cancel()
        writer.close()


@pytest.fixture
def gateway_pair(stack: Stack, tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    a, b = (gateway_process(stack, tmp_path / name) for name in "ab")
    try:
        yield a, b
    finally:
        for gw in (a, b):
            if gw.proc is not None and gw.proc.poll() is None:
                gw.stop()


async def test_a_client_ahead_of_a_follower_by_the_owners_append_lag_gets_no_gap(
    gateway_pair: tuple[Gateway, Gateway], valkey_server: LocalValkey
) -> None:
    """Before the fix: the follower waited 250 ms for the frames the client had seen, then
    answered `gap: true` (epoch unchanged, its copy at seq 1, the client at 10) although the
    owner was alive and lost nothing — the 50-drops test's other flake on a loaded machine
    (`gap` True on a rejoin on B). Now B waits up to 2 s for them (here ~1.5 s)."""
    a, b = gateway_pair
    lag = Lag()
    async with relay(valkey_server.port, upstream=partial(_pipe, lag=lag)) as port:
        a.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        b.env["REDIS_URL"] = valkey_server.url
        for gw in (a, b):
            gw.data_dir.mkdir()
            await asyncio.to_thread(gw.start)  # the relay runs in this event loop meanwhile
        async with client(a.ws_url) as on_a:
            session_id = await new_session(on_a, "slow")
            epoch = (await join_ready(on_a, session_id))["epoch"]
            lag.seconds = LAG_S
            await on_a.request({"type": "run_turn", "sessionId": session_id, "text": slow(60, 20)})
            await on_a.recv_until(lambda f: f.get("seq", 0) >= 10)
            before = stream_frames(on_a, session_id)
        async with client(b.ws_url) as on_b:
            join = {"type": "join_session", "sessionId": session_id, "epoch": epoch}
            reply = await on_b.request({**join, "afterSeq": before[-1]["seq"]})
            assert (reply["epoch"], reply["gap"]) == (epoch, False), reply
            await on_b.recv_until("turn_complete", timeout=20)
            after = stream_frames(on_b, session_id)
        frames = before + after
        assert [f["seq"] for f in frames] == list(range(1, frames[-1]["seq"] + 1))
        assert frames[-1]["finalText"].split() == [f"d{n}" for n in range(1, 61)]
        logged = await wait_logged(valkey_server.url, session_id, frames[-1]["seq"])
        assert logged[: len(frames)] == frames
