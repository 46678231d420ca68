"""Client chaos and gateway crashes: nothing escapes, nothing leaks, nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import stat

import httpx
from websockets.asyncio.client import connect

from tests.conftest import Client, Stack, client, gateway_process
from tests.integration.test_sessions import assistant_texts, join_ready, new_session

CLIENTS = 200
SESSIONS = 10


async def health(http: httpx.AsyncClient, url: str) -> dict:
    return (await http.get(f"{url}/health")).json()


async def chaos_client(url: str, session_id: str, rng: random.Random) -> int:
    """Join, read a little, drop abruptly, rejoin from the last seq; check every replay."""
    last_seq: int | None = None
    epoch: str | None = None
    for _ in range(3):
        async with connect(url, open_timeout=20) as ws:
            c = Client(ws)
            for _ in range(3):
                await c.recv(20)
            join = {"type": "join_session", "sessionId": session_id}
            if last_seq is not None:
                join |= {"afterSeq": last_seq, "epoch": epoch}
            snapshot = await c.request(join, timeout=20)
            assert snapshot["type"] == "state_snapshot", snapshot
            if last_seq is not None:
                assert snapshot["gap"] is False and snapshot["epoch"] == epoch
            else:
                last_seq, epoch = snapshot["lastSeq"], snapshot["epoch"]
            for _ in range(rng.randint(1, 25)):
                try:
                    frame = await c.recv(timeout=0.5)
                except TimeoutError:
                    break
                if "seq" in frame:
                    assert frame["seq"] == last_seq + 1, (frame["seq"], last_seq)
                    last_seq = frame["seq"]
            ws.transport.abort()  # no close frame: the server sees a dead client
    return last_seq or 0


async def test_200_clients_dropping_at_random_leak_nothing(stack: Stack, tmp_path) -> None:
    gw = gateway_process(stack, tmp_path, WS_RATE_LIMIT="100000/10s")
    gw.start()
    try:
        async with httpx.AsyncClient() as http:
            async with client(gw.ws_url) as setup:
                sessions = [await new_session(setup, "slow") for _ in range(SESSIONS)]
                for session_id in sessions:
                    await join_ready(setup, session_id)
            await asyncio.sleep(0.5)
            baseline = await health(http, gw.url)

            async with client(gw.ws_url) as driver:
                for session_id in sessions:
                    text = json.dumps({"deltas": 400, "interval_ms": 10})
                    await driver.request(
                        {"type": "run_turn", "sessionId": session_id, "text": text}
                    )
                rng = random.Random(20261126)
                results = await asyncio.gather(
                    *(
                        chaos_client(gw.ws_url, sessions[i % SESSIONS], random.Random(rng.random()))
                        for i in range(CLIENTS)
                    )
                )
            assert len(results) == CLIENTS

            for _ in range(100):  # turns finish, dead sockets are noticed, record writes end
                after = await health(http, gw.url)
                metrics = after["metrics"]
                if (
                    metrics["connections"] == 0
                    and metrics["runningTurns"] == 0
                    and metrics["tasks"] <= baseline["metrics"]["tasks"] + 3
                ):
                    break
                await asyncio.sleep(0.2)
            assert after["metrics"]["connections"] == 0
            assert after["metrics"]["tasks"] <= baseline["metrics"]["tasks"] + 3, (baseline, after)
            growth = after["metrics"]["rssBytes"] - baseline["metrics"]["rssBytes"]
            assert growth < 64 * 1024 * 1024, f"RSS grew {growth / 2**20:.0f} MiB"
            assert "Traceback" not in gw.output()
            assert after["status"] == "ok"
    finally:
        gw.stop()


async def test_gateway_sigkilled_mid_turn_recovers(stack: Stack, tmp_path) -> None:
    gw = gateway_process(stack, tmp_path)
    gw.start()
    deltas = 100
    async with client(gw.ws_url) as c:
        session_id = await new_session(c, "slow")
        first = await join_ready(c, session_id)
        text = json.dumps({"deltas": deltas, "interval_ms": 20})
        await c.request({"type": "run_turn", "sessionId": session_id, "text": text})
        await c.recv_until("text_delta")
        gw.stop(signal.SIGKILL)

    restarted = gateway_process(stack, tmp_path)
    restarted.start()
    try:
        async with client(restarted.ws_url) as c:
            listing = await c.request({"type": "list_sessions"})
            status = {s["id"]: s["status"] for s in listing["sessions"]}
            assert status[session_id] == "inactive", "recovered to inactive"
            snapshot = await join_ready(c, session_id)
            assert snapshot["epoch"] != first["epoch"]
            expected = "".join(f"d{i} " for i in range(1, deltas + 1))
            texts = await assistant_texts(c, session_id)
            assert texts == [expected], "the durable transcript is complete"
            await c.request({"type": "run_turn", "sessionId": session_id, "text": "still works"})
            assert (await c.recv_until("turn_complete", timeout=20))[-1]["finalText"]
    finally:
        restarted.stop()


async def test_unwritable_data_dir_degrades_logging_to_stderr(stack: Stack, tmp_path) -> None:
    data_dir = tmp_path / "readonly"
    data_dir.mkdir()
    data_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(data_dir, os.W_OK):  # root ignores permissions: use a path that is a file
        data_dir.chmod(0o755)
        data_dir = tmp_path / "not-a-directory"
        data_dir.write_text("")
    gw = gateway_process(stack, tmp_path, DATA_DIR=str(data_dir))
    gw.start()
    try:
        async with client(gw.ws_url) as c:
            session_id = await new_session(c)
            await join_ready(c, session_id)
            await c.request({"type": "run_turn", "sessionId": session_id, "text": "served"})
            assert (await c.recv_until("turn_complete"))[-1]["finalText"] == "served"
        warnings = [line for line in gw.output().splitlines() if "logging to stderr only" in line]
        assert len(warnings) == 1
    finally:
        gw.stop()
