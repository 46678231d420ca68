"""Sessions with `REDIS_URL` (issue 16 step 2): the owner's stream is the session's log in
Valkey — real gateway processes (dev mode), the local stack, a real `valkey-server`.

Every frame a client receives is in the log under the same seq and epoch; the epoch lives in
Valkey, so a restarted gateway continues it and a client resumes with no gap; an owner that lost
its lease stops the session at once and appends nothing more.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from diminuendo.fleet.connection import open_client
from diminuendo.fleet.keys import Keyspace
from diminuendo.fleet.replay_log import ReplayLog
from diminuendo.local.valkey import LocalValkey
from tests.conftest import Client, Stack, client, gateway_process
from tests.integration.test_sessions import join_ready, new_session, slow

KEYS = Keyspace("dim")


def stream_frames(c: Client, session_id: str) -> list[dict[str, Any]]:
    """The session's stream frames a client received (the requester's copy of `turn_started`
    also carries its request's `id`, which is not part of the stream)."""
    return [
        {k: v for k, v in f.items() if k != "id"}
        for f in c.received
        if f.get("sessionId") == session_id and "seq" in f
    ]


async def log_frames(url: str, session_id: str) -> tuple[str | None, list[dict[str, Any]]]:
    valkey = open_client(url)
    try:
        replay = await ReplayLog(valkey, url, KEYS).read_after(session_id, 0, limit=10_000)
    finally:
        await valkey.aclose()
    frames = [json.loads(e.payload) for e in replay.events]
    assert [f["seq"] for f in frames] == [e.seq for e in replay.events]  # entry id = frame seq
    return replay.epoch, frames


async def wait_logged(url: str, session_id: str, last_seq: int) -> list[dict[str, Any]]:
    """The log's frames once it holds `last_seq` (the appends trail the clients, bounded)."""
    for _ in range(100):
        _, frames = await log_frames(url, session_id)
        if frames and frames[-1]["seq"] >= last_seq:
            return frames
        await asyncio.sleep(0.05)
    raise AssertionError(f"log of {session_id} never reached seq {last_seq}")


async def test_the_log_is_the_stream_and_survives_a_gateway_restart(
    stack: Stack, valkey_server: LocalValkey, tmp_path: Path
) -> None:
    url = valkey_server.url
    first = gateway_process(stack, tmp_path, REDIS_URL=url)
    first.start()
    try:
        async with client(first.ws_url) as c:
            session_id = await new_session(c, "slow")
            snapshot = await join_ready(c, session_id)
            epoch = snapshot["epoch"]
            await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(20, 5)})
            await c.recv_until("turn_complete")
            await asyncio.sleep(0.2)  # the session settles (`ready`)
            seen = stream_frames(c, session_id)
        logged = await wait_logged(url, session_id, seen[-1]["seq"])
        assert (await log_frames(url, session_id))[0] == epoch
        assert logged[: len(seen)] == seen  # same seqs, same payloads, from seq 1
    finally:
        first.stop()  # SIGTERM: the lease is given back

    second = gateway_process(stack, tmp_path, REDIS_URL=url)
    second.start()
    try:
        async with client(second.ws_url) as c:
            resume = 5
            join = {"type": "join_session", "sessionId": session_id, "epoch": epoch}
            reply = await c.request({**join, "afterSeq": resume})
            assert (reply["type"], reply["epoch"], reply["gap"]) == ("state_snapshot", epoch, False)
            await c.recv_until(lambda f: f.get("type") == "session_state" and f["state"] == "ready")
            replayed = stream_frames(c, session_id)
        logged = await wait_logged(url, session_id, replayed[-1]["seq"])
        before = [f for f in logged if f["seq"] > resume][: len(seen) - resume]
        assert replayed[: len(seen) - resume] == before == seen[resume:]  # no gap, no duplicate
        later = replayed[len(seen) - resume :]
        assert [f["seq"] for f in later] == list(range(seen[-1]["seq"] + 1, later[-1]["seq"] + 1))
        assert logged[: len(replayed) + resume] == seen[:resume] + replayed
    finally:
        second.stop()


async def test_an_owner_that_lost_its_lease_stops_the_session_and_appends_nothing(
    stack: Stack, valkey_server: LocalValkey, tmp_path: Path
) -> None:
    """Another instance takes the lease mid-turn (here: written into Valkey): the owner's next
    append is refused (fencing), it stops the session at once and closes its subscribers (1001);
    the log stays the prefix the client saw, and a client ahead of the log is told `gap`.

    Before the fix: the gateway kept no log and no lease, so nothing of this existed."""
    url = valkey_server.url
    gw = gateway_process(stack, tmp_path, REDIS_URL=url, SESSION_LEASE_TTL="2s")
    gw.start()
    valkey = open_client(url)
    try:
        async with client(gw.ws_url) as c:
            session_id = await new_session(c, "slow")
            epoch = (await join_ready(c, session_id))["epoch"]
            await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(300, 10)})
            await c.recv_until(lambda f: f.get("seq", 0) >= 15)
            lease_key = KEYS.session(session_id).lease
            await valkey.set(lease_key, "999999:intruder", px=60_000)
            closed = None
            try:
                await c.recv_until(lambda f: False, timeout=5)
            except Exception as exc:  # the connection closes
                closed = exc
            assert getattr(closed, "rcvd", None) is not None and closed.rcvd.code == 1001, closed
            seen = stream_frames(c, session_id)
        _, logged = await log_frames(url, session_id)
        await asyncio.sleep(1.0)
        assert (await log_frames(url, session_id))[1] == logged  # nothing appended since
        assert logged == seen[: len(logged)]  # a prefix of what the client saw, no hole

        await valkey.delete(lease_key)  # the intruder is gone: this instance may own it again
        async with client(gw.ws_url) as c:
            reply = await c.request(
                {"type": "join_session", "sessionId": session_id, "epoch": epoch}
                | {"afterSeq": seen[-1]["seq"]}
            )
            assert reply["epoch"] == epoch
            assert reply["gap"] is (seen[-1]["seq"] > logged[-1]["seq"])
    finally:
        await valkey.aclose()
        gw.stop()
