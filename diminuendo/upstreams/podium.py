"""Podium adapter (UPSTREAMS.md §1): REST calls and the native runtime WebSocket.

`RuntimeConnection` owns one runtime socket per active session. It hides drops: when the socket
falls mid-turn it reconnects with backoff for up to `reconnect_window_s` (Podium buffers what the
agent emitted meanwhile, so nothing is lost), and only when the instance is gone or the window is
exhausted does it report `on_lost` so the session can end the turn with `turn_error`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import msgspec
from loguru import logger

from diminuendo.cache import BoundedCache
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.http import UpstreamHttp
from diminuendo.upstreams.resilience import backoff_delay
from diminuendo.upstreams.runtime_socket import ClientSocket, SocketUnavailable, open_socket
from diminuendo.upstreams.sealing import SealingKey, instance_aad, seal

DEPLOYMENT_CACHE_S = 60.0
DEPLOYMENTS_CACHED = 1_000  # agent types with a deployment
# Unknown agent types are cached briefly and apart, so a flood of random ones neither reaches
# Podium once each nor pushes the known types out.
UNKNOWN_AGENT_TYPE_CACHE_S = 10.0
UNKNOWN_AGENT_TYPES_CACHED = 512
OPEN_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A runtime socket that leaves a ping unanswered this long is dead (half-open TCP, hung Podium).
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
# First frame on every runtime socket: which turn the runtime is running (see docs/DECISIONS.md).
ATTACHED = "runtime.attached"
# How long opening a runtime socket waits for that hello: the session must not show `ready`
# before it knows whether the runtime is busy (a `run_turn` would be accepted beside a running
# turn). A Podium that never sends it costs this once: `PodiumClient.greets` stops the wait
# until a hello is seen again.
HELLO_WAIT_S = 1.0
_frame_decoder = msgspec.json.Decoder()
_frame_encoder = msgspec.json.Encoder()
# Podium's answer to sealed secrets it cannot open (the local stand-in's; see DECISIONS.md).
SECRETS_UNREADABLE = "SECRETS_UNREADABLE"


def _error_of(content: bytes) -> dict[str, Any]:
    """The `error` object of a Podium error body (UPSTREAMS.md), `{}` when there is none."""
    try:
        error = msgspec.json.decode(content).get("error")
    except (msgspec.DecodeError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


class PodiumClient:
    def __init__(
        self,
        http: UpstreamHttp,
        api_key: str,
        *,
        secrets_key: SealingKey,
        instance_secrets: Mapping[str, str],
    ) -> None:
        """`instance_secrets` go to every instance, sealed with `secrets_key` (PODIUM_SECRETS_KEY)
        for that instance's tenant and session."""
        self.http = http
        # Whether this Podium's runtime sockets open with the `runtime.attached` hello (learnt).
        self.greets = True
        self._api_key = api_key
        self._secrets_key = secrets_key
        self._instance_secrets = dict(instance_secrets)
        self._deployments: BoundedCache[str, str] = BoundedCache(
            DEPLOYMENTS_CACHED, DEPLOYMENT_CACHE_S
        )
        self._unknown_agent_types: BoundedCache[str, bool] = BoundedCache(
            UNKNOWN_AGENT_TYPES_CACHED, UNKNOWN_AGENT_TYPE_CACHE_S
        )

    def __repr__(self) -> str:
        return f"PodiumClient({self.http.base_url!r})"

    async def resolve_deployment(self, agent_type: str) -> str | None:
        """The newest deployment id for an agent type (cached 60 s), None when there is none
        (cached 10 s)."""
        deployment_id = self._deployments.get(agent_type)
        if deployment_id is not None or agent_type in self._unknown_agent_types:
            return deployment_id
        body = await self.http.get_json("/api/v1/deployments", params={"agent_type": agent_type})
        deployments = body.get("deployments") or []
        if not deployments:
            self._unknown_agent_types.put(agent_type, True)
            return None
        deployment_id = deployments[0]["deployment_id"]
        self._deployments.put(agent_type, deployment_id)
        return deployment_id

    def cache_sizes(self) -> dict[str, int]:
        """Entries in the agent-type caches, for the `diminuendo_cache_entries` gauge."""
        return {
            "deployments": len(self._deployments),
            "unknown_agent_types": len(self._unknown_agent_types),
        }

    async def agent_types(self) -> list[str]:
        """Every agent type with a deployment, sorted (what the edge adapters list)."""
        body = await self.http.get_json("/api/v1/deployments")
        return sorted({d["agent_type"] for d in body.get("deployments") or []})

    async def create_instance(self, deployment_id: str, *, metadata: dict[str, str]) -> str:
        """A new instance for `metadata`'s tenant and session, its secrets sealed for exactly
        that pair. Podium refusing them (a different PODIUM_SECRETS_KEY) is an activation error
        naming the cause, never an instance without its secrets."""
        aad = instance_aad(metadata["tenant_id"], metadata["session_id"])
        body = {
            "deployment_id": deployment_id,
            "config": {},
            "secrets": {"sealed": seal(self._instance_secrets, self._secrets_key, aad=aad)},
            "metadata": metadata,
        }
        response = await self.http.request(
            "POST", "/api/v1/instances", json=body, ok=(200, 201), passthrough=(422,)
        )
        if response.status_code in (200, 201):
            return response.json()["instance_id"]
        error = _error_of(response.content)
        if error.get("code") == SECRETS_UNREADABLE:
            reason = str(error.get("message"))[:200]
            logger.error("podium cannot open the instance secrets: {}", reason)
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                "Podium cannot open the session's secrets (PODIUM_SECRETS_KEY differs from "
                "Podium's)",
            )
        logger.warning("podium POST /api/v1/instances answered {}", response.status_code)
        raise GatewayError(
            ErrorCode.UPSTREAM_ERROR, f"Podium rejected the request ({response.status_code})"
        )

    async def instance_exists(self, instance_id: str) -> bool:
        response = await self.http.request(
            "GET", f"/api/v1/instances/{quote(instance_id, safe='')}", passthrough=(404,)
        )
        return response.status_code != 404

    async def delete_instance(self, instance_id: str) -> None:
        await self.http.request(
            "DELETE",
            f"/api/v1/instances/{quote(instance_id, safe='')}",
            ok=(200, 204),
            passthrough=(404,),
        )

    async def messages(self, instance_id: str, *, limit: int, before: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        return await self.http.get_json(
            f"/api/v1/instances/{quote(instance_id, safe='')}/messages", params=params
        )

    async def files(self, instance_id: str, *, path: str, depth: int) -> dict[str, Any]:
        return await self.http.get_json(
            f"/api/v1/instances/{quote(instance_id, safe='')}/files",
            params={"path": path, "depth": depth},
        )

    async def file(
        self, instance_id: str, path: str, *, iteration: int | None = None
    ) -> dict[str, Any] | None:
        params = {"iteration": iteration} if iteration is not None else None
        response = await self.http.request(
            "GET",
            f"/api/v1/instances/{quote(instance_id, safe='')}/files/{quote(path)}",
            params=params,
            passthrough=(404,),
        )
        return None if response.status_code == 404 else response.json()

    async def file_history(self, instance_id: str, path: str) -> dict[str, Any] | None:
        response = await self.http.request(
            "GET",
            f"/api/v1/instances/{quote(instance_id, safe='')}/files/{quote(path)}/history",
            passthrough=(404,),
        )
        return None if response.status_code == 404 else response.json()

    async def health(self) -> bool:
        body = await self.http.get_json("/health", retry=False)
        return body.get("status") == "ok"

    def runtime(
        self,
        instance_id: str,
        *,
        on_frame: Callable[[dict[str, Any]], None],
        on_lost: Callable[[str], Awaitable[None]],
        on_attached: Callable[[str | None, bool], None],
        reconnect_window_s: float = 30.0,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> RuntimeConnection:
        ws_base = "ws" + self.http.base_url.removeprefix("http")
        return RuntimeConnection(
            f"{ws_base}/agent/{quote(instance_id, safe='')}",
            self._api_key,
            podium=self,
            instance_id=instance_id,
            on_frame=on_frame,
            on_lost=on_lost,
            on_attached=on_attached,
            reconnect_window_s=reconnect_window_s,
            ping_interval_s=ping_interval_s,
            ping_timeout_s=ping_timeout_s,
        )


class RuntimeConnection:
    """The gateway's end of one instance's runtime socket, with transparent reconnects.

    Frames are read by `ClientSocket` (runtime_socket.py) and handled synchronously as they
    arrive; a task exists only while a dropped socket is being re-established.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        podium: PodiumClient,
        instance_id: str,
        on_frame: Callable[[dict[str, Any]], None],
        on_lost: Callable[[str], Awaitable[None]],
        on_attached: Callable[[str | None, bool], None],
        reconnect_window_s: float,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._podium = podium
        self.instance_id = instance_id
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._on_attached = on_attached
        self._reconnected = False
        self._reconnect_window_s = reconnect_window_s
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._socket: ClientSocket | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._closing = False
        self._lost = False
        self._connected = asyncio.Event()
        self._greeted = asyncio.Event()

    def __repr__(self) -> str:
        return f"RuntimeConnection({self.instance_id!r})"

    async def open(self) -> None:
        """Connect once (raises `GatewayError` if Podium refuses), then keep the socket up.
        Returns once the runtime's hello has been handled (`on_attached`), or `HELLO_WAIT_S`
        later from a Podium that does not send one."""
        self._socket = await self._connect()
        self._connected.set()
        if self._podium.greets:
            try:
                await asyncio.wait_for(self._greeted.wait(), HELLO_WAIT_S)
            except TimeoutError:
                self._podium.greets = False
                logger.warning(
                    "Podium sent no {} hello within {} s: sessions show ready without knowing "
                    "whether their runtime is busy",
                    ATTACHED,
                    HELLO_WAIT_S,
                )

    async def send(self, frame: msgspec.Struct | dict[str, Any]) -> None:
        """Send one control frame (the gateway sends the command structs of
        `sessions/driver.py`; any JSON object encodes the same), waiting briefly through a
        reconnect if one is under way."""
        payload = _frame_encoder.encode(frame)
        if self._socket is not None and self._socket.send_text(payload):
            return
        try:
            async with asyncio.timeout(self._reconnect_window_s):
                while not (self._closing or self._lost):
                    await self._connected.wait()
                    if self._socket is not None and self._socket.send_text(payload):
                        return
                    self._connected.clear()
        except TimeoutError:
            pass
        raise GatewayError(ErrorCode.UPSTREAM_UNAVAILABLE, "Podium is unavailable")

    async def close(self) -> None:
        """Close the socket without stopping the instance (its turns go on in Podium)."""
        self._closing = True
        self._connected.set()  # wake senders waiting for a reconnect: they fail now
        recovering = self._recovering
        if recovering is not None and recovering is not asyncio.current_task():
            recovering.cancel()
        socket = self._socket
        if socket is not None:
            socket.close()
            await socket.wait_closed()

    # ----- reading ----------------------------------------------------------------------------

    def _frame_received(self, raw: bytes) -> None:
        """Hot path: one runtime message, straight from the socket's `data_received`."""
        frame = parse_runtime_frame(raw)
        if frame is None:
            return
        if frame.get("event_type") == ATTACHED:
            self._podium.greets = True
            self._on_attached(running_turn(frame), self._reconnected)
            self._greeted.set()
        else:
            self._on_frame(frame)

    # ----- connecting and reconnecting --------------------------------------------------------

    async def _connect(self) -> ClientSocket:
        try:
            return await open_socket(
                self._url,
                self._headers,
                on_message=self._frame_received,
                on_closed=self._socket_closed,
                open_timeout=OPEN_TIMEOUT_S,
                max_size=MAX_MESSAGE_BYTES,
                ping_interval=self._ping_interval_s,
                ping_timeout=self._ping_timeout_s,
            )
        except SocketUnavailable as exc:
            logger.debug("runtime socket for {} not opened: {}", self.instance_id, exc)
            raise GatewayError(ErrorCode.UPSTREAM_UNAVAILABLE, "Podium is unavailable") from None

    def _socket_closed(self, socket: ClientSocket) -> None:
        if self._closing or socket is not self._socket:
            return
        self._connected.clear()
        logger.info(
            "runtime socket for {} closed ({}), reconnecting", self.instance_id, socket.close_code
        )
        self._recovering = asyncio.create_task(
            self._recover(), name=f"runtime-reconnect:{self.instance_id}"
        )

    async def _recover(self) -> None:
        reason = await self._reconnect()
        self._recovering = None
        if reason is not None and not self._closing:
            self._lost = True
            self._connected.set()  # wake senders waiting for a reconnect: they fail now
            await self._on_lost(reason)

    async def _reconnect(self) -> str | None:
        """Reconnect with backoff; None on success, else why the runtime is lost."""
        deadline = time.monotonic() + self._reconnect_window_s
        attempt = 0
        while time.monotonic() < deadline and not self._closing:
            attempt += 1
            try:
                if not await self._podium.instance_exists(self.instance_id):
                    return "The agent instance is gone"
                self._socket = await self._connect()
                self._reconnected = True
                self._connected.set()
                logger.info("runtime socket for {} reconnected", self.instance_id)
                return None
            except GatewayError:
                await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=2.0))
        return "The agent runtime could not be reached"


def parse_runtime_frame(raw: bytes) -> dict[str, Any] | None:
    """A runtime message as a dict, or None (logged) when it is not a JSON object."""
    try:
        frame = _frame_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        logger.warning("dropping a runtime frame that is not JSON")
        return None
    return frame if isinstance(frame, dict) else None


def running_turn(attached: dict[str, Any]) -> str | None:
    """The turn a `runtime.attached` hello says the runtime is running, if any."""
    content = attached.get("content")
    running = content.get("running_turn_id") if isinstance(content, dict) else None
    return running if isinstance(running, str) else None
