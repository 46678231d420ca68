"""Podium's durable state: instances, their transcripts and their versioned workspace files.

Secrets are kept only sealed (upstreams/sealing.py): the stand-in opens them when an instance's
runtime starts, so a restarted stack still has them and the plaintext never touches the disk.
"""

import hashlib
import json as jsonlib
import posixpath
import secrets
from pathlib import Path
from typing import Any

from diminuendo.local.sqlite import open_db, transaction
from diminuendo.local.textutil import now_ms

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    agent_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    config TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instance_secrets (
    instance_id TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    turn_id TEXT,
    ts INTEGER NOT NULL,
    tool_calls TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_instance ON messages (instance_id, seq);
CREATE TABLE IF NOT EXISTS files (
    instance_id TEXT NOT NULL,
    path TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    content BLOB NOT NULL,
    size INTEGER NOT NULL,
    hash TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (instance_id, path, iteration)
);
"""

Record = dict[str, Any]


class UnknownCursor(Exception):
    """`before` named a message this instance does not have."""


def normalize_path(path: str) -> str:
    """Workspace-relative form of a path: no leading slash, no `.`/`..` escaping the root."""
    cleaned = posixpath.normpath("/" + path.strip()).lstrip("/")
    return "" if cleaned == "." else cleaned


class PodiumStore:
    def __init__(self, path: Path) -> None:
        self._db = open_db(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    # instances

    def create_instance(
        self,
        deployment_id: str,
        agent_type: str,
        config: dict[str, Any],
        metadata: dict[str, Any],
        sealed_secrets: str | None = None,
    ) -> Record:
        record = {
            "instance_id": f"inst_{secrets.token_hex(10)}",
            "deployment_id": deployment_id,
            "agent_type": agent_type,
            "status": "running",
            "created_at": now_ms(),
            "config": config,
            "metadata": metadata,
        }
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record["instance_id"],
                    deployment_id,
                    agent_type,
                    record["status"],
                    record["created_at"],
                    jsonlib.dumps(config),
                    jsonlib.dumps(metadata),
                ),
            )
            if sealed_secrets is not None:
                self._db.execute(
                    "INSERT INTO instance_secrets VALUES (?, ?)",
                    (record["instance_id"], sealed_secrets),
                )
        return record

    def sealed_secrets(self, instance_id: str) -> str | None:
        row = self._db.execute(
            "SELECT sealed FROM instance_secrets WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        return None if row is None else row["sealed"]

    def get_instance(self, instance_id: str) -> Record | None:
        row = self._db.execute(
            "SELECT * FROM instances WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        if row is None:
            return None
        return {
            **dict(row),
            "config": jsonlib.loads(row["config"]),
            "metadata": jsonlib.loads(row["metadata"]),
        }

    def delete_instance(self, instance_id: str) -> bool:
        with transaction(self._db):
            found = self._db.execute(
                "DELETE FROM instances WHERE instance_id = ?", (instance_id,)
            ).rowcount
            for table in ("instance_secrets", "messages", "files"):
                self._db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))
        return found > 0

    # transcript

    def add_message(
        self,
        instance_id: str,
        role: str,
        text: str,
        turn_id: str | None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> Record:
        message: Record = {
            "id": f"msg_{secrets.token_hex(10)}",
            "role": role,
            "text": text,
            "turn_id": turn_id,
            "ts": now_ms(),
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        self._db.execute(
            "INSERT INTO messages (instance_id, id, role, text, turn_id, ts, tool_calls)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                instance_id,
                message["id"],
                role,
                text,
                turn_id,
                message["ts"],
                jsonlib.dumps(tool_calls) if tool_calls else None,
            ),
        )
        return message

    def has_messages(self, instance_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE instance_id = ? LIMIT 1", (instance_id,)
        ).fetchone()
        return row is not None

    def list_messages(
        self, instance_id: str, limit: int, before: str | None = None
    ) -> tuple[list[Record], bool]:
        """The latest `limit` messages older than `before`, oldest first, and whether more exist."""
        upper = 2**63 - 1
        if before is not None:
            row = self._db.execute(
                "SELECT seq FROM messages WHERE instance_id = ? AND id = ?", (instance_id, before)
            ).fetchone()
            if row is None:
                raise UnknownCursor(before)
            upper = row["seq"]
        rows = self._db.execute(
            "SELECT * FROM messages WHERE instance_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (instance_id, upper, limit + 1),
        ).fetchall()
        has_more = len(rows) > limit
        messages = []
        for row in reversed(rows[:limit]):
            message = {k: row[k] for k in ("id", "role", "text", "turn_id", "ts")}
            if row["tool_calls"]:
                message["tool_calls"] = jsonlib.loads(row["tool_calls"])
            messages.append(message)
        return messages, has_more

    # workspace

    def write_file(self, instance_id: str, path: str, content: bytes) -> Record:
        """Store a new iteration of `path` (iterations count per path from 1)."""
        path = normalize_path(path)
        if not path:
            raise ValueError("a file needs a path")
        with transaction(self._db):
            row = self._db.execute(
                "SELECT MAX(iteration) AS last FROM files WHERE instance_id = ? AND path = ?",
                (instance_id, path),
            ).fetchone()
            record = {
                "path": path,
                "iteration": (row["last"] or 0) + 1,
                "timestamp": now_ms(),
                "size": len(content),
                "hash": "sha256:" + hashlib.sha256(content).hexdigest(),
            }
            self._db.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    instance_id,
                    path,
                    record["iteration"],
                    content,
                    record["size"],
                    record["hash"],
                    record["timestamp"],
                ),
            )
        return record

    def read_file(self, instance_id: str, path: str, iteration: int | None = None) -> Record | None:
        """One iteration of a file (the latest by default) with its bytes under `content`."""
        query = "SELECT * FROM files WHERE instance_id = ? AND path = ?"
        args: tuple[Any, ...] = (instance_id, normalize_path(path))
        if iteration is None:
            query += " ORDER BY iteration DESC LIMIT 1"
        else:
            query += " AND iteration = ?"
            args += (iteration,)
        row = self._db.execute(query, args).fetchone()
        return dict(row) if row else None

    def file_history(self, instance_id: str, path: str) -> list[Record]:
        rows = self._db.execute(
            "SELECT iteration, timestamp, size, hash FROM files"
            " WHERE instance_id = ? AND path = ? ORDER BY iteration",
            (instance_id, normalize_path(path)),
        )
        return [dict(row) for row in rows]

    def list_files(self, instance_id: str, path: str, depth: int) -> list[Record] | None:
        """Entries up to `depth` levels below directory `path`; None when nothing is there.

        Directories are not stored: they exist while a file lives under them.
        """
        base = normalize_path(path)
        rows = self._db.execute(
            "SELECT path, size, timestamp FROM files AS f WHERE instance_id = ? AND iteration ="
            " (SELECT MAX(iteration) FROM files WHERE instance_id = f.instance_id"
            " AND path = f.path) ORDER BY path",
            (instance_id,),
        ).fetchall()
        entries: dict[str, Record] = {}
        prefix = base + "/" if base else ""
        for row in rows:
            if row["path"] == base:
                return [_file_entry(row)]
            if not row["path"].startswith(prefix):
                continue
            parts = row["path"][len(prefix) :].split("/")
            for level in range(1, min(len(parts), depth + 1)):
                dir_path = prefix + "/".join(parts[:level])
                entry = entries.setdefault(
                    dir_path, {"path": dir_path, "type": "dir", "size": 0, "modified_at": 0}
                )
                entry["modified_at"] = max(entry["modified_at"], row["timestamp"])
            if len(parts) <= depth:
                entries[row["path"]] = _file_entry(row)
        if base and not entries:
            return None
        return [entries[key] for key in sorted(entries)]


def _file_entry(row: Any) -> Record:
    return {
        "path": row["path"],
        "type": "file",
        "size": row["size"],
        "modified_at": row["timestamp"],
    }
