"""Serve one Sanic request with an ASGI application (the `mcp` SDK's streamable HTTP transport,
the `a2a-sdk` JSON-RPC app).

The SDKs implement their wire formats as ASGI; the gateway is a Sanic server. This is the whole
adapter between the two, for one request: the ASGI scope is built from the Sanic request (plus
whatever the caller adds to it), `receive` hands over the body Sanic already read, and `send`
becomes either one ordinary response (a JSON reply, a 202) or a streamed one (SSE), whichever the
application starts. A client that goes away cancels the Sanic handler, and with it the ASGI call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sanic import Request
from sanic.compat import Header
from sanic.response import HTTPResponse
from sanic.response.types import ResponseStream

# Scope keys under which the Sanic route hands the ASGI app the caller it already authorized.
SCOPE_GATEWAY = "diminuendo.gateway"
SCOPE_IDENTITY = "diminuendo.identity"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


def asgi_scope(request: Request, extra: dict[str, Any]) -> Scope:
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.items()
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.version,
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query_string.encode(),
        "root_path": "",
        "headers": headers,
        "client": (request.client_ip, request.port or 0),
        "server": (request.server_name, request.server_port),
        "state": {},
        **extra,
    }


async def serve_asgi(request: Request, app: AsgiApp, extra: dict[str, Any]) -> HTTPResponse | None:
    """Run `app` for `request`. Returns the response when the application answered with one
    body, None when it streamed (the response was sent through `request.respond`)."""
    body_taken = False
    status = 500
    headers: list[tuple[str, str]] = []
    complete: bytes | None = None
    stream: HTTPResponse | ResponseStream | None = None

    async def receive() -> Message:
        nonlocal body_taken
        if not body_taken:
            body_taken = True
            return {"type": "http.request", "body": request.body or b"", "more_body": False}
        # Nothing more will arrive; a client that leaves cancels this handler instead.
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, headers, complete, stream
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
                if name.lower() != b"content-length"
            ]
            return
        if message["type"] != "http.response.body":
            return
        chunk, more = message.get("body", b""), message.get("more_body", False)
        if stream is None and not more:
            complete = (complete or b"") + chunk
            return
        if stream is None:
            content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
            kept = [(k, v) for k, v in headers if k.lower() != "content-type"]
            stream = await request.respond(
                status=status, headers=Header(kept), content_type=content_type
            )
            if complete:
                await stream.send(complete)
        if chunk:
            await stream.send(chunk)
        if not more:
            await stream.eof()

    await app(asgi_scope(request, extra), receive, send)
    if stream is not None:
        return None
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    kept = [(k, v) for k, v in headers if k.lower() != "content-type"]
    return HTTPResponse(
        complete or b"", status=status, headers=Header(kept), content_type=content_type
    )
