"""A slow consumer is closed with 4008 and never slows the session for anyone else."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Client, client
from tests.integration.test_sessions import join_ready, new_session


def tiny_receive_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_slow_consumer_is_closed_while_a_fast_one_keeps_up(start_gateway) -> None:
    gw = start_gateway(WS_SEND_QUEUE_MAX="10")
    deltas, pad = 400, 20_000
    async with client(gw.ws_url, max_size=None) as fast:
        session_id = await new_session(fast, "slow")
        await join_ready(fast, session_id)
        sock = tiny_receive_buffer_socket(gw.port)
        async with connect(gw.ws_url, sock=sock, max_queue=1, open_timeout=10) as raw:
            slow = Client(raw)
            for _ in range(3):
                await slow.recv()
            await slow.request({"type": "join_session", "sessionId": session_id})
            text = json.dumps({"deltas": deltas, "interval_ms": 1, "pad": pad})
            await fast.request({"type": "run_turn", "sessionId": session_id, "text": text})
            frames = await fast.recv_until("turn_complete", timeout=60)  # slow reads nothing

            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await slow.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008

    assembled = "".join(f["text"] for f in fast.received if f.get("type") == "text_delta")
    assert assembled == frames[-1]["finalText"]
    assert len(assembled) == sum(len(f"d{i}") + pad + 1 for i in range(1, deltas + 1))
    seqs = [f["seq"] for f in fast.received if "seq" in f]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{gw.url}/metrics")).text
    assert "diminuendo_slow_consumer_closes_total 1.0" in metrics
