"""Dev mode answers only requests addressed to a loopback name (the DNS-rebinding guard).

Dev mode has no authentication, and binding 127.0.0.1 does not keep a browser out: a page on
`evil.example` can rebind its DNS name to 127.0.0.1 and then call the gateway as a same-origin
page, with `Host: evil.example`. A browser always sends the name it resolved, so a gateway that
answers only `localhost`, `127.0.0.1`, `[::1]` (any loopback address, any port) cannot be reached
that way (OPERATIONS.md §3). `DEV_MODE_ALLOW_REMOTE=true`, the operator's explicit opt-in to a
reachable dev gateway, turns the guard off; production authenticates every request instead.

`loopback_host` is the rule; `install` adds it as the first request middleware, so it also
covers the WebSocket upgrade and CORS preflights. The health probe's fast path
(`GatewayWebSocketProtocol._answer_health_probe`) answers only the exact Host values in
`app.ctx.probe_hosts` and leaves anything else to Sanic, i.e. to this middleware.
"""

from __future__ import annotations

import re

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from diminuendo.protocol.errors import ErrorCode
from diminuendo.settings import Settings, is_loopback

REFUSAL = (
    "This dev-mode gateway answers only requests for localhost, 127.0.0.1 or [::1] "
    "(DNS-rebinding guard); set DEV_MODE_ALLOW_REMOTE=true to serve other host names"
)
# Runs before every other request middleware (CSRF, the upgrade guard, …).
PRIORITY = 1000
# name-or-[IPv6] then an optional ASCII port; what the name is, `is_loopback` decides.
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[^:\[\]]+))(?::[0-9]+)?")


def loopback_host(header: str) -> bool:
    """Whether a `Host` header value names a loopback host: `localhost`, a loopback IPv4
    address, or a bracketed loopback IPv6 address, each with an optional numeric port."""
    match = _HOST.fullmatch(header.strip().lower())
    if match is None:
        return False
    if match["ipv6"] is not None:
        return ":" in match["ipv6"] and is_loopback(match["ipv6"])
    return is_loopback(match["name"])


def guarded(settings: Settings) -> bool:
    return settings.dev_mode and not settings.dev_mode_allow_remote


def probe_hosts(port: int) -> frozenset[bytes]:
    """The Host values (lower-cased, as the fast path sees them) it may answer itself."""
    names = (b"localhost", b"127.0.0.1", b"[::1]")
    return frozenset(names) | {name + b":%d" % port for name in names}


async def refuse_foreign_host(request: Request) -> HTTPResponse | None:
    if loopback_host(request.headers.get("host", "")):
        return None
    body = {"error": {"code": ErrorCode.FORBIDDEN.value, "message": REFUSAL}}
    return json(body, status=403)


def install(app: Sanic, settings: Settings) -> None:
    """Guard `app` when the settings call for it; `app.ctx.probe_hosts` is None otherwise."""
    app.ctx.probe_hosts = None
    if guarded(settings):
        app.ctx.probe_hosts = probe_hosts(settings.port)
        app.on_request(refuse_foreign_host, priority=PRIORITY)
