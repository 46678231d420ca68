"""10,000 random hostile frames on one connection: documented errors only, no crash, bounded
memory (the per-connection fuzz row of docs/FAILURES.md)."""

from __future__ import annotations

import asyncio
import json
import random
import string

import httpx

from diminuendo.protocol.errors import ErrorCode
from diminuendo.protocol.messages import MESSAGE_TYPES
from tests.conftest import client

FRAMES = 10_000
CODES = {code.value for code in ErrorCode}
TYPES = sorted(MESSAGE_TYPES)
FIELDS = [
    "sessionId",
    "text",
    "afterSeq",
    "epoch",
    "path",
    "limit",
    "name",
    "agentType",
    "requestId",
    "iteration",
    "depth",
    "action",
    "userId",
    "role",
    "token",
    "id",
]


def hostile(rng: random.Random) -> str | bytes:
    kind = rng.random()
    if kind < 0.1:
        return rng.randbytes(rng.randint(0, 64))
    if kind < 0.2:
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 80)))
    if kind < 0.25:
        return "[" * rng.randint(1, 500)  # deep nesting
    values = [
        None,
        True,
        -1,
        0,
        2**70,
        1.5,
        "",
        "x" * rng.randint(0, 300),
        [],
        {},
        "../../etc/passwd",
        "/abs",
        "a\u0000b",
        "ses_missing",
        {"$": [1, {"a": None}]},
    ]
    frame = {"type": rng.choice([*TYPES, "bogus", "", "PING"])}
    for name in rng.sample(FIELDS, rng.randint(0, 5)):
        frame[name] = rng.choice(values)
    if frame.get("type") == "create_session":
        frame["agentType"] = "no-such-agent"  # keep the fuzz from creating real sessions
    if frame.get("type") in ("delete_session", "manage_members"):
        frame["type"] = "ping"  # never delete or touch members in the shared dev tenant
    return json.dumps(frame)


async def test_ten_thousand_hostile_frames(start_gateway) -> None:
    gw = start_gateway(WS_RATE_LIMIT="1000000/10s")
    rng = random.Random(7)
    async with httpx.AsyncClient() as http, client(gw.ws_url) as c:
        before = (await http.get(f"{gw.url}/health")).json()["metrics"]["rssBytes"]
        replies: list[dict] = []

        async def read_until_final_pong() -> None:
            while True:
                replies.append(await c.recv(timeout=30))
                if replies[-1].get("id") == "final":
                    return

        reader = asyncio.create_task(read_until_final_pong())
        for i in range(FRAMES):
            await c.ws.send(hostile(rng))
            if i % 500 == 0:
                await asyncio.sleep(0)
        await c.send({"type": "ping", "id": "final"})
        await asyncio.wait_for(reader, 60)
        assert replies[-1]["type"] == "pong"
        after = (await http.get(f"{gw.url}/health")).json()
    errors = [r for r in replies if r.get("type") == "error"]
    assert len(errors) > FRAMES / 2
    assert {e["code"] for e in errors} <= CODES
    text = json.dumps(replies)
    assert "Traceback" not in text and "site-packages" not in text
    assert after["status"] in ("ok", "degraded")
    assert after["metrics"]["rssBytes"] - before < 64 * 1024 * 1024
    assert "Traceback" not in gw.output()
