"""Unison adapter (UPSTREAMS.md §3): the metadata authority's KV shapes live here and only here."""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import quote

from diminuendo.upstreams.http import UpstreamHttp


class Entry(NamedTuple):
    key: str
    value: Any
    version: int


class CasConflict(Exception):
    """The entry changed since it was read; `current` is the entry as it is now (or None)."""

    def __init__(self, current: Entry | None) -> None:
        self.current = current
        super().__init__("compare-and-set conflict")


def sessions_namespace(tenant_id: str) -> str:
    return f"tenant:{tenant_id}/sessions"


def members_namespace(tenant_id: str) -> str:
    return f"tenant:{tenant_id}/members"


def _entry(raw: dict[str, Any]) -> Entry:
    return Entry(raw["key"], raw["value"], raw["version"])


class UnisonClient:
    def __init__(self, http: UpstreamHttp) -> None:
        self.http = http

    @staticmethod
    def _path(namespace: str, key: str | None = None) -> str:
        path = f"/api/v1/kv/{quote(namespace, safe='')}"
        return path if key is None else f"{path}/{quote(key, safe='')}"

    async def get(self, namespace: str, key: str) -> Entry | None:
        response = await self.http.request("GET", self._path(namespace, key), passthrough=(404,))
        return None if response.status_code == 404 else _entry(response.json())

    async def list(self, namespace: str, prefix: str = "") -> list[Entry]:
        params = {"prefix": prefix} if prefix else None
        body = await self.http.get_json(self._path(namespace), params=params)
        return [_entry(item) for item in body.get("items", [])]

    async def put(
        self, namespace: str, key: str, value: Any, *, actor: str, cas: int | None = None
    ) -> Entry:
        """Write `value`; with `cas`, only if the stored version is still `cas` (0 = absent)."""
        body: dict[str, Any] = {"value": value, "actor": actor}
        if cas is not None:
            body["cas"] = cas
        response = await self.http.request(
            "PUT", self._path(namespace, key), json=body, passthrough=(409,)
        )
        if response.status_code == 409:
            current = response.json().get("error", {}).get("current")
            raise CasConflict(_entry(current) if current else None)
        return _entry(response.json())

    async def delete(self, namespace: str, key: str, *, actor: str) -> bool:
        response = await self.http.request(
            "DELETE",
            self._path(namespace, key),
            params={"actor": actor},
            ok=(204,),
            passthrough=(404,),
        )
        return response.status_code == 204

    async def health(self) -> bool:
        body = await self.http.get_json("/api/v1/health", retry=False)
        return bool(body.get("ok"))
