"""Podium's `runtime.attached` hello arriving late on a runtime socket (a loaded Podium, a slow
link): a session whose runtime is running a turn must not show `ready` in between, or a
`run_turn` sent on that `ready` is accepted beside the running turn.

Real parts: the tests' stand-ins, a gateway process, and between them a relay in this process
that holds what follows a `101 Switching Protocols` response for `HELLO_DELAY_S` (the hello is
the first thing Podium sends on a runtime socket); HTTP passes through untouched.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from tests.conftest import Stack, client, gateway_process
from tests.integration.test_sessions import join_ready, new_session, slow
from tests.relay import copy, relay

HELLO_DELAY_S = 0.3


async def hold_after_upgrade(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold_s: float
) -> None:
    """Podium's answers: a connection's first response head at once, and when it is a
    `101 Switching Protocols`, what follows it `hold_s` later; the rest as it comes."""
    head = b""
    while (end := head.find(b"\r\n\r\n")) < 0:
        data = await reader.read(65536)
        if not data:
            writer.close()
            return
        head += data
    writer.write(head[: end + 4])
    await writer.drain()
    if head.startswith(b"HTTP/1.1 101"):
        await asyncio.sleep(hold_s)
    writer.write(head[end + 4 :])
    await copy(reader, writer)


async def test_a_turn_running_across_a_restart_is_busy_though_the_hello_is_late(
    stack: Stack, tmp_path: Path
) -> None:
    """A turn runs in Podium across a gateway restart; the restarted gateway activates the
    session on a join, and the client sends `run_turn` on the first `ready` it sees: the answer
    is `SESSION_BUSY` (the running turn is adopted, §5), and the session shows `running`.

    Before the fix: the session showed `ready` as soon as the runtime socket opened and adopted
    the turn only when the hello came 0.3 s later; the `run_turn` sent in between was accepted
    (`turn_started`) beside the running turn."""
    held = partial(hold_after_upgrade, hold_s=HELLO_DELAY_S)
    async with relay(stack.podium_port, downstream=held) as port:
        gw = gateway_process(stack, tmp_path, PODIUM_URL=f"http://127.0.0.1:{port}")
        await asyncio.to_thread(gw.start)  # the relay runs in this event loop meanwhile
        try:
            async with client(gw.ws_url) as c:
                session_id = await new_session(c, "slow")
                await join_ready(c, session_id)
                await c.request(
                    {"type": "run_turn", "sessionId": session_id, "text": slow(1500, 10)}
                )
                await c.recv_until("text_delta")
            await asyncio.to_thread(gw.stop)
            await asyncio.to_thread(gw.start)  # the turn runs on in Podium meanwhile
            async with client(gw.ws_url) as c:
                await c.send({"type": "join_session", "sessionId": session_id, "id": "join"})
                await c.recv_until(
                    lambda f: f.get("type") == "session_state" and f["state"] == "ready"
                )
                busy = await c.request(
                    {"type": "run_turn", "sessionId": session_id, "text": "again"}
                )
                assert busy.get("code") == "SESSION_BUSY", busy
                stopped = await c.request({"type": "stop_turn", "sessionId": session_id})
                assert stopped.get("type") != "error", stopped
        finally:
            await asyncio.to_thread(gw.stop)
