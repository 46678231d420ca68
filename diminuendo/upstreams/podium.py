"""Podium adapter (UPSTREAMS.md §1): the REST calls, and `runtime()`, which opens an instance's
native runtime WebSocket (`podium_runtime.RuntimeConnection`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import msgspec
from loguru import logger

from diminuendo.cache import BoundedCache
from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.http import UpstreamHttp
from diminuendo.upstreams.podium_runtime import PING_INTERVAL_S, PING_TIMEOUT_S, RuntimeConnection
from diminuendo.upstreams.sealing import SealingKey, instance_aad, seal

DEPLOYMENT_CACHE_S = 60.0
DEPLOYMENTS_CACHED = 1_000  # agent types with a deployment
# Unknown agent types are cached briefly and apart, so a flood of random ones neither reaches
# Podium once each nor pushes the known types out.
UNKNOWN_AGENT_TYPE_CACHE_S = 10.0
UNKNOWN_AGENT_TYPES_CACHED = 512
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
