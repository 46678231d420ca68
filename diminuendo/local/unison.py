"""Unison stand-in: versioned key/value metadata with compare-and-set, persisted in SQLite."""

import json as jsonlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sanic import HTTPResponse, Request, empty, json
from sanic.exceptions import BadRequest

from diminuendo.local.service import (
    LocalService,
    StoreBackedStandIn,
    error_response,
    json_object,
)
from diminuendo.local.sqlite import open_db
from diminuendo.local.textutil import now_ms

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""

Entry = dict[str, Any]


class CasConflict(Exception):
    """A write named a version that is no longer current; carries what is (None when absent)."""

    def __init__(self, current: Entry | None) -> None:
        super().__init__("version mismatch")
        self.current = current


class UnisonStore:
    def __init__(self, path: Path) -> None:
        self._db = open_db(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def ready(self) -> bool:
        return self._db.execute("SELECT 1").fetchone() is not None

    def get(self, namespace: str, key: str) -> Entry | None:
        row = self._db.execute(
            "SELECT * FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        ).fetchone()
        return _entry(row) if row else None

    def list(self, namespace: str, prefix: str) -> list[Entry]:
        # substr() rather than LIKE: keys may contain % and _.
        rows = self._db.execute(
            "SELECT * FROM kv WHERE namespace = ? AND substr(key, 1, ?) = ? ORDER BY key",
            (namespace, len(prefix), prefix),
        )
        return [_entry(row) for row in rows]

    def put(self, namespace: str, key: str, value: Any, actor: str, cas: int | None) -> Entry:
        """Write a new version; `cas` (0 = "must not exist") makes the write conditional."""
        current = self.get(namespace, key)
        version = current["version"] if current else 0
        if cas is not None and cas != version:
            raise CasConflict(current)
        self._db.execute(
            "INSERT INTO kv (namespace, key, value, version, updated_by, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE SET"
            " value = excluded.value, version = excluded.version,"
            " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (namespace, key, jsonlib.dumps(value), version + 1, actor, now_ms()),
        )
        entry = self.get(namespace, key)
        assert entry is not None
        return entry

    def delete(self, namespace: str, key: str) -> bool:
        cursor = self._db.execute(
            "DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        )
        return cursor.rowcount > 0


def _entry(row: Any) -> Entry:
    return {
        "namespace": row["namespace"],
        "key": row["key"],
        "value": jsonlib.loads(row["value"]),
        "version": row["version"],
        "updatedBy": row["updated_by"],
        "updatedAt": row["updated_at"],
        "expiresAt": None,
    }


class UnisonStandIn(StoreBackedStandIn[UnisonStore]):
    """Serves UPSTREAMS.md §3; namespaces and keys arrive URL-encoded in the path."""

    def __init__(self, db_path: Path, api_key: str) -> None:
        super().__init__(
            LocalService("unison", api_key, public_paths=("/api/v1/health", "/api/v1/ready")),
            lambda: UnisonStore(db_path),
        )
        add = self.service.app.add_route
        add(self._health, "/api/v1/health", methods=["GET"], name="health")
        add(self._ready, "/api/v1/ready", methods=["GET"], name="ready")
        add(self._list, "/api/v1/kv/<namespace>", methods=["GET"], name="kv_list")
        add(self._get, "/api/v1/kv/<namespace>/<key>", methods=["GET"], name="kv_get")
        add(self._put, "/api/v1/kv/<namespace>/<key>", methods=["PUT"], name="kv_put")
        add(self._delete, "/api/v1/kv/<namespace>/<key>", methods=["DELETE"], name="kv_delete")

    async def _health(self, request: Request) -> HTTPResponse:
        return json({"ok": True})

    async def _ready(self, request: Request) -> HTTPResponse:
        ok = self._store is not None and self._store.ready()
        return json({"ok": ok}, status=200 if ok else 503)

    async def _list(self, request: Request, namespace: str) -> HTTPResponse:
        prefix = request.args.get("prefix", "")
        return json({"items": self.store.list(unquote(namespace), prefix)})

    async def _get(self, request: Request, namespace: str, key: str) -> HTTPResponse:
        entry = self.store.get(unquote(namespace), unquote(key))
        if entry is None:
            return error_response(404, "NOT_FOUND", "no such key")
        return json(entry)

    async def _put(self, request: Request, namespace: str, key: str) -> HTTPResponse:
        body = json_object(request)
        if "value" not in body:
            raise BadRequest("value is required")
        actor = body.get("actor", "api")
        cas = body.get("cas")
        if not isinstance(actor, str) or not actor:
            raise BadRequest("actor must be a non-empty string")
        if cas is not None and (not isinstance(cas, int) or isinstance(cas, bool) or cas < 0):
            raise BadRequest("cas must be a non-negative integer version")
        try:
            entry = self.store.put(unquote(namespace), unquote(key), body["value"], actor, cas)
        except CasConflict as conflict:
            return error_response(409, "CAS_CONFLICT", "version mismatch", current=conflict.current)
        return json(entry)

    async def _delete(self, request: Request, namespace: str, key: str) -> HTTPResponse:
        if not self.store.delete(unquote(namespace), unquote(key)):
            return error_response(404, "NOT_FOUND", "no such key")
        return empty()
