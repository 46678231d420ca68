"""Ensemble adapter (UPSTREAMS.md §2): health and the model catalogue (cached 60 s)."""

from __future__ import annotations

import time
from typing import Any

from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.upstreams.http import UpstreamHttp

CATALOGUE_CACHE_S = 60.0


class EnsembleClient:
    def __init__(self, http: UpstreamHttp) -> None:
        self.http = http
        self._catalogue: tuple[float, list[dict[str, Any]]] | None = None

    async def health(self) -> bool:
        body = await self.http.get_json("/api/v1/health", retry=False)
        return body.get("status") in ("healthy", "ok")

    async def models(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._catalogue and now - self._catalogue[0] < CATALOGUE_CACHE_S:
            return self._catalogue[1]
        request = {"jsonrpc": "2.0", "id": 1, "method": "inference/models.list", "params": {}}
        body = (await self.http.request("POST", "/rpc", json=request)).json()
        if "error" in body or not isinstance(body.get("result"), dict):
            raise GatewayError(ErrorCode.UPSTREAM_ERROR, "Ensemble could not list models")
        models = body["result"].get("models", [])
        self._catalogue = (now, models)
        return models
