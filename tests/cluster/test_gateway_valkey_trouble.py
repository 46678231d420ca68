"""A gateway whose Valkey goes away and comes back empty (issue 16 step 5): real gateway process
(dev mode), the local stack, a `valkey-server` of the test's own.

While Valkey is down, health says `degraded` with the reason; when it comes back without the
session's log (restarted without persistence), the owner cannot continue the log — it stops the
session and its client, rejoining with `{afterSeq, epoch}`, gets a new epoch and `gap: true`
(never a silent hole), then normal service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from diminuendo.local.valkey import LocalValkey
from tests.conftest import Stack, client, gateway_process
from tests.integration.test_sessions import join_ready, new_session, slow


async def health_of(url: str) -> dict:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{url}/health", timeout=5)).json()


async def wait_health(url: str, status: str, timeout_s: float = 10.0) -> dict:
    for _ in range(int(timeout_s / 0.2)):
        body = await health_of(url)
        if body["status"] == status:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"health never {status}: {body}")


async def test_valkey_restarted_empty_means_a_new_epoch_and_gap_then_normal_service(
    stack: Stack, own_valkey: LocalValkey, tmp_path: Path
) -> None:
    gw = gateway_process(stack, tmp_path, REDIS_URL=own_valkey.url, SESSION_LEASE_TTL="2s")
    gw.start()
    try:
        async with client(gw.ws_url) as c:
            session_id = await new_session(c, "slow")
            first = await join_ready(c, session_id)
            epoch, last_seq = first["epoch"], first["lastSeq"]

            own_valkey.stop()
            down = await wait_health(gw.url, "degraded")
            assert down["dependencies"]["valkey"]["mode"] == "memory"
            assert (
                own_valkey.url.split("//")[1].split("/")[0]
                in down["dependencies"]["valkey"]["reason"]
            )
            # Meanwhile sessions run in memory, with fresh epochs: no hang, no error.
            async with client(gw.ws_url) as other:
                in_memory = await join_ready(other, await new_session(other))
                assert in_memory["gap"] is False  # and it became ready (join_ready)
            own_valkey.start()  # same port, no persistence: empty
            await wait_health(gw.url, "ok")
            # The owner's lease was not renewed for its TTL, or is gone from the empty Valkey:
            # the session stops here and its client (closed 1001) rejoins.
            try:
                await c.recv_until(lambda f: False, timeout=10)
            except Exception as exc:
                assert getattr(exc, "rcvd", None) is not None and exc.rcvd.code == 1001, exc
        async with client(gw.ws_url) as c:
            again = await c.request(
                {"type": "join_session", "sessionId": session_id, "afterSeq": last_seq}
                | {"epoch": epoch}
            )
            assert again["type"] == "state_snapshot" and again["gap"] is True
            assert again["epoch"] != epoch
            await c.request({"type": "run_turn", "sessionId": session_id, "text": slow(5, 5)})
            done = await c.recv_until("turn_complete", timeout=15)
            assert done[-1]["finalText"].split() == [f"d{n}" for n in range(1, 6)]
    finally:
        gw.stop()
