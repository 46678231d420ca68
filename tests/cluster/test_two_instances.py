"""Two gateway instances as one (issue 16 step 3): real gateway processes (dev mode) sharing one
Valkey and one local stack. A session owned by A is followed on B: joined on either, it delivers
the identical sequence (seq, epoch, payload); a turn sent through B runs on A's runtime socket and
streams to both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from diminuendo.local.valkey import LocalValkey
from tests.cluster.test_session_log import stream_frames, wait_logged
from tests.conftest import Gateway, Stack, client, gateway_process
from tests.integration.test_sessions import join_ready, new_session, slow


@pytest.fixture
def pair(stack: Stack, valkey_server: LocalValkey, tmp_path: Path) -> Iterator[list[Gateway]]:
    gateways = [
        gateway_process(stack, tmp_path / name, REDIS_URL=valkey_server.url) for name in "ab"
    ]
    try:
        for gw in gateways:
            gw.data_dir.mkdir()
            gw.start()
        yield gateways
    finally:
        for gw in gateways:
            if gw.proc is not None:
                gw.stop()


async def test_a_session_owned_by_a_streams_identically_on_b_and_takes_turns_through_b(
    pair: list[Gateway], valkey_server: LocalValkey
) -> None:
    a, b = pair
    async with client(a.ws_url) as on_a, client(b.ws_url) as on_b:
        session_id = await new_session(on_a, "slow")
        epoch = (await join_ready(on_a, session_id))["epoch"]  # A activates: A owns it
        snapshot = await on_b.request(
            {"type": "join_session", "sessionId": session_id, "afterSeq": 0, "epoch": epoch}
        )
        assert (snapshot["type"], snapshot["epoch"], snapshot["gap"]) == (
            "state_snapshot",
            epoch,
            False,
        )
        assert snapshot["session"]["status"] == "ready"  # the owner's state, mirrored

        reply = await on_b.request(
            {"type": "run_turn", "sessionId": session_id, "text": slow(30, 10)}
        )
        assert reply["type"] == "turn_started", reply  # the stream's copy, marked as the reply
        done_b = await on_b.recv_until("turn_complete")
        done_a = await on_a.recv_until("turn_complete")
        assert done_a[-1]["turnId"] == done_b[-1]["turnId"] == reply["turnId"]

        seen_a, seen_b = stream_frames(on_a, session_id), stream_frames(on_b, session_id)
        last = min(seen_a[-1]["seq"], seen_b[-1]["seq"])
        assert [f for f in seen_a if f["seq"] <= last] == [f for f in seen_b if f["seq"] <= last]
        assert [f["seq"] for f in seen_b] == list(range(1, seen_b[-1]["seq"] + 1))
        logged = await wait_logged(valkey_server.url, session_id, last)
        assert logged[:last] == [f for f in seen_b if f["seq"] <= last]
