"""What every stand-in shares: a quiet Sanic app, Bearer auth, JSON errors and fault switches.

Several stand-ins run as separate Sanic apps inside one asyncio loop, so each one is started and
stopped by hand with `create_server` instead of `app.run()`.
"""

import asyncio
import hmac
import itertools
import traceback
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any, Generic, Protocol, TypeVar

from loguru import logger
from sanic import HTTPResponse, Request, Sanic, json
from sanic.exceptions import BadRequest, SanicException
from sanic.server.async_server import AsyncioServer

FAULT_MODES = ("ok", "unavailable", "hang")
HANG_LIMIT_S = 120.0
# A stop waits this long for busy connections to finish, then as long again at most for the
# aborted ones to be gone: `stop()` returns within STOP_BOUND_S plus the listeners' own time.
_SHUTDOWN_GRACE_S = 1.0
_SHUTDOWN_POLLS = 50
STOP_BOUND_S = 2 * _SHUTDOWN_GRACE_S
_ERROR_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "TOO_LARGE",
    503: "UNAVAILABLE",
}
_app_ids = itertools.count(1)


def error_response(status: int, code: str, message: str, **extra: Any) -> HTTPResponse:
    """The one error body of the stand-ins, mirroring the gateway's own `{error:{code,message}}`."""
    return json({"error": {"code": code, "message": message, **extra}}, status=status)


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else is the caller's mistake (400)."""
    body = request.json
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


class FaultSwitch:
    """Makes a stand-in misbehave on purpose so failure handling is tested over real sockets."""

    def __init__(self) -> None:
        self.mode = "ok"
        self._release = asyncio.Event()

    def set(self, mode: str) -> None:
        # Any change frees the requests hanging under the previous mode: tests flip back to "ok"
        # and expect the service to be usable at once.
        self.mode = mode
        self._release.set()
        self._release = asyncio.Event()

    def release_all(self) -> None:
        """Free hung requests for good so a stopping server does not wait on them."""
        self.mode = "ok"
        self._release.set()

    async def hang(self) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), HANG_LIMIT_S)


class LocalService:
    """One stand-in server. Routes are added on `app` by the stand-in that owns it."""

    def __init__(self, name: str, api_key: str, public_paths: Iterable[str]) -> None:
        self.name = name
        self.fault = FaultSwitch()
        self._api_key = api_key
        self._public_paths = frozenset(public_paths)
        self._server: AsyncioServer | None = None
        self._stopping = False
        # configure_logging=False: the gateway may share this process and owns logging setup.
        app = Sanic(f"local_{name}_{next(_app_ids)}", configure_logging=False)
        app.config.TOUCHUP = False
        app.config.MOTD = False
        app.config.ACCESS_LOG = False
        app.config.AUTO_EXTEND = False
        app.config.NOISY_EXCEPTIONS = False
        # Sanic's default 60 s response timeout would cut the hang fault short.
        app.config.RESPONSE_TIMEOUT = HANG_LIMIT_S + 5
        self.app = app
        app.on_request(self._guard)
        app.error_handler.add(SanicException, self._sanic_error)
        app.error_handler.add(Exception, self._crash)
        app.add_route(self._get_fault, "/_local/fault", methods=["GET"], name="get_fault")
        app.add_route(self._set_fault, "/_local/fault", methods=["POST"], name="set_fault")

    @property
    def stopping(self) -> bool:
        """True from the start of `stop()`: long responses end early with a clear error."""
        return self._stopping

    def stopping_error(self) -> dict[str, str]:
        """The `{code, message}` that ends work cut short by a stop."""
        return {"code": "UNAVAILABLE", "message": f"{self.name} is stopping"}

    async def start(self, host: str, port: int) -> None:
        try:
            server = await self.app.create_server(host=host, port=port, return_asyncio_server=True)
        except OSError as exc:
            raise OSError(
                exc.errno, f"local {self.name} cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        await server.startup()
        await server.before_start()
        await server.after_start()
        self._server = server

    async def stop(self) -> None:
        """Stop listening, then end every connection; returns within about `STOP_BOUND_S`.

        Requests hung by the fault switch are released and answered 503 "<name> is stopping";
        idle keep-alive connections close at once; busy ones get `_SHUTDOWN_GRACE_S` to send
        their response, then are cut (websockets with close 1001). Only then is the listener
        awaited: since Python 3.12 `Server.wait_closed()` waits for every open connection
        (CPython gh-79033), so awaiting it first, as Sanic's own runner does, hangs for as long
        as one client keeps a connection alive. (uvloop's `wait_closed()`, and asyncio's up to
        3.11, return at once.) This mirrors what `app.run()` does on shutdown, which
        `create_server` leaves to us.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        self.fault.release_all()
        await server.before_stop()
        # The asyncio server itself: Sanic's `AsyncioServer.close()` would also spawn a task
        # awaiting `wait_closed()`, left pending on 3.12+ until the last connection is gone.
        server.server.close()
        await _end_connections(server.connections)
        try:
            async with asyncio.timeout(_SHUTDOWN_GRACE_S):
                await server.wait_closed()
        except TimeoutError:
            # Every connection was aborted above: only a transport that ignores abort() gets
            # here, and waiting longer would not help.
            logger.warning("local {}: connections still open after stopping", self.name)
        await server.after_stop()
        Sanic.unregister_app(self.app)

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._api_key.encode()
        )

    async def _guard(self, request: Request) -> HTTPResponse | None:
        if request.path not in self._public_paths and not self._authorized(request):
            return error_response(401, "UNAUTHORIZED", "missing or invalid bearer token")
        if request.path.startswith("/_local/") or self.fault.mode == "ok":
            return None
        if self.fault.mode == "hang":
            await self.fault.hang()
        if self._stopping:
            return error_response(503, **self.stopping_error())
        return error_response(503, "UNAVAILABLE", f"{self.name} is unavailable (fault switch)")

    async def _get_fault(self, request: Request) -> HTTPResponse:
        return json({"mode": self.fault.mode})

    async def _set_fault(self, request: Request) -> HTTPResponse:
        mode = json_object(request).get("mode")
        if mode not in FAULT_MODES:
            raise BadRequest(f"mode must be one of {', '.join(FAULT_MODES)}")
        self.fault.set(mode)
        logger.info("local {} fault mode set to {}", self.name, mode)
        return json({"mode": mode})

    def _sanic_error(self, request: Request, exc: SanicException) -> HTTPResponse:
        status = exc.status_code
        return error_response(status, _ERROR_CODES.get(status, "ERROR"), str(exc) or "error")

    def _crash(self, request: Request, exc: Exception) -> HTTPResponse:
        # A plain traceback: loguru's `diagnose` would print local values, request bodies with
        # secrets among them.
        trace = "".join(traceback.format_exception(exc))
        logger.error("local {} failed on {}:\n{}", self.name, request.path, trace)
        return error_response(500, "INTERNAL", "internal error")


class ClosableStore(Protocol):
    def close(self) -> None: ...


StoreT = TypeVar("StoreT", bound=ClosableStore)


class StoreBackedStandIn(Generic[StoreT]):
    """A stand-in whose store is open exactly while its service runs: opened before the
    service starts (closed again if the start fails), closed once the service has stopped."""

    def __init__(self, service: LocalService, open_store: Callable[[], StoreT]) -> None:
        self.service = service
        self._open_store = open_store
        self._store: StoreT | None = None

    @property
    def store(self) -> StoreT:
        if self._store is None:
            raise RuntimeError(f"{self.service.name} stand-in is not running")
        return self._store

    async def start(self, host: str, port: int) -> None:
        self._store = self._open_store()
        try:
            await self.service.start(host, port)
        except BaseException:
            self._close_store()
            raise

    async def stop(self) -> None:
        await self.service.stop()
        self._close_store()

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


async def _end_connections(connections: set[Any]) -> None:
    """Close idle connections now, busy ones as their response ends, the rest after the grace.

    Sanic offers no event for "all connections gone", so poll for a bounded time, closing HTTP
    connections as their last response goes out (websockets are already closing).
    """
    for conn in list(connections):
        conn.close_if_idle()
    for _ in range(_SHUTDOWN_POLLS):
        if not connections:
            return
        await asyncio.sleep(_SHUTDOWN_GRACE_S / _SHUTDOWN_POLLS)
        for conn in list(connections):
            if getattr(conn, "websocket", None) is None:
                conn.close_if_idle()
    for conn in list(connections):
        websocket = getattr(conn, "websocket", None)
        if websocket is not None:
            websocket.fail_connection(code=1001)
        else:
            conn.abort()
