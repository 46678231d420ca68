"""`create_app` on its own: the app it builds, served by Sanic's own runner (`prepare` +
`serve_single`) without the cli's arguments, still runs the gateway's connection protocol — a
client offering no subprotocol is admitted (plain Sanic refuses it: the route lists one), the
welcome frames arrive through the fast writer, and invalid UTF-8 closes with 1007.

Before the fix: the cli passed `protocol=GatewayWebSocketProtocol` to `app.prepare`; served this
way, the upgrade without a subprotocol was refused: HTTP 400 "missing subprotocol".
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import Gateway, Stack, _wait_http, client, gateway_process, stop_process

SANIC_RUNNER = """
from sanic import Sanic
from diminuendo.app import create_app
from diminuendo.settings import load_settings

settings = load_settings()
app = create_app(settings)
app.prepare(host=settings.host, port=settings.port, single_process=True, motd=False)
Sanic.serve_single(app)
"""


@pytest.fixture
def sanic_served(stack: Stack, tmp_path: Path) -> Iterator[Gateway]:
    gateway = gateway_process(stack, tmp_path)
    gateway.log = tmp_path / "sanic-runner.log"
    gateway.proc = subprocess.Popen(
        [sys.executable, "-c", SANIC_RUNNER],
        env=gateway.env,
        stdout=gateway.log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"{gateway.url}/health", gateway.proc, gateway.log)
        yield gateway
    finally:
        stop_process(gateway.proc)


async def test_the_app_serves_the_gateway_protocol_without_the_cli(sanic_served: Gateway) -> None:
    async with client(sanic_served.ws_url) as c:  # no subprotocol offered
        pong = await c.request({"type": "ping", "ts": 3})
        assert pong["type"] == "pong" and pong["ts"] == 3
        await c.ws.send(b'{"type":"ping","id":"\xff"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await c.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
