"""The framework's floor: a bare Sanic app configured like the gateway (one process, no access
log, no MOTD, Sanic's defaults otherwise, TOUCHUP included) with one text route and one WebSocket
echo route.

    python bench/bare_sanic.py --port 9001     # GET /health → "ok", /ws echoes text frames

The benchmarks run the same idle and health loads against it in the same run, so every gateway
figure can be read as a ratio to what Sanic itself costs on this machine.
"""

from __future__ import annotations

import argparse

from sanic import Request, Sanic
from sanic.response import HTTPResponse, text
from sanic.server.websockets.impl import WebsocketImplProtocol


def create_app() -> Sanic:
    app = Sanic("bare_sanic", configure_logging=False)
    app.config.update(
        {
            "ACCESS_LOG": False,
            "MOTD": False,
            "WEBSOCKET_PING_INTERVAL": 30,
            "WEBSOCKET_PING_TIMEOUT": 60,
        }
    )

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return text("ok")

    @app.websocket("/ws")
    async def echo(request: Request, ws: WebsocketImplProtocol) -> None:
        async for message in ws:
            await ws.send(message)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    app = create_app()
    app.prepare(host=args.host, port=args.port, single_process=True, motd=False, access_log=False)
    Sanic.serve_single(app)


if __name__ == "__main__":
    main()
