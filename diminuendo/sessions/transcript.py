"""A session's history and files, read from its Podium instance: a pass-through that renames the
fields for clients and keeps each reply under `REPLY_MAX_BYTES` (`replies.py`). Who may read them
is checked by the caller (`access.py`); `instance_id` None means the session has no instance
yet, so nothing to read."""

from __future__ import annotations

from typing import Any

from diminuendo.protocol.errors import ErrorCode, GatewayError
from diminuendo.protocol.events import History
from diminuendo.sessions.replies import fit_history, room_for
from diminuendo.upstreams.podium import PodiumClient

__all__ = ["Transcript"]


class Transcript:
    def __init__(self, podium: PodiumClient, reply_max_bytes: int) -> None:
        self.podium = podium
        self.reply_max_bytes = reply_max_bytes

    def __repr__(self) -> str:
        return f"Transcript(reply_max_bytes={self.reply_max_bytes})"

    async def history(
        self, session_id: str, instance_id: str | None, *, limit: int, before: str | None
    ) -> dict[str, Any]:
        if not instance_id:
            return {"sessionId": session_id, "messages": [], "hasMore": False}
        body = await self.podium.messages(instance_id, limit=limit, before=before)
        envelope = History(session_id=session_id, messages=[], has_more=True)
        messages, trimmed = fit_history(
            [_history_message(m) for m in body.get("messages", [])],
            room_for(envelope, self.reply_max_bytes),
        )
        return {
            "sessionId": session_id,
            "messages": messages,
            "hasMore": trimmed or bool(body.get("has_more")),
        }

    async def list_files(
        self, session_id: str, instance_id: str | None, path: str, depth: int
    ) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        if instance_id:
            body = await self.podium.files(instance_id, path=path, depth=depth)
            entries = [
                {
                    "path": e.get("path"),
                    "type": e.get("type"),
                    "size": e.get("size"),
                    "modifiedAt": e.get("modified_at"),
                }
                for e in body.get("entries", [])
            ]
        return {"sessionId": session_id, "path": path, "entries": entries}

    async def read_file(
        self, session_id: str, instance_id: str | None, path: str, iteration: int | None
    ) -> dict[str, Any]:
        body = await self.podium.file(_instance(session_id, instance_id), path, iteration=iteration)
        if body is None:
            raise GatewayError(ErrorCode.FILE_NOT_FOUND, session_id=session_id)
        size = body.get("size")
        if not isinstance(size, int):
            size = len(body.get("content") or "")
        if size > self.reply_max_bytes:
            raise GatewayError(
                ErrorCode.FILE_TOO_LARGE,
                f"The file is {size} bytes; a reply holds at most {self.reply_max_bytes}",
                session_id=session_id,
                extra={"details": {"size": size}},
            )
        content: dict[str, Any] = {
            "sessionId": session_id,
            "path": body.get("path", path),
            "content": body.get("content", ""),
            "encoding": body.get("encoding", "utf-8"),
            "size": body.get("size", 0),
        }
        if iteration is not None:
            content["iteration"] = body.get("iteration", iteration)
        return content

    async def file_history(
        self, session_id: str, instance_id: str | None, path: str
    ) -> dict[str, Any]:
        body = await self.podium.file_history(_instance(session_id, instance_id), path)
        if body is None:
            raise GatewayError(ErrorCode.FILE_NOT_FOUND, session_id=session_id)
        return {"sessionId": session_id, "path": path, "iterations": body.get("iterations", [])}


def _instance(session_id: str, instance_id: str | None) -> str:
    """A file is read from the instance; a session without one has no files."""
    if not instance_id:
        raise GatewayError(ErrorCode.FILE_NOT_FOUND, session_id=session_id)
    return instance_id


def _history_message(raw: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": raw.get("id"),
        "role": raw.get("role"),
        "text": raw.get("text", ""),
        "turnId": raw.get("turn_id"),
        "ts": raw.get("ts"),
    }
    if raw.get("tool_calls"):
        message["toolCalls"] = [
            {
                "toolCallId": call.get("tool_call_id"),
                "toolName": call.get("tool_name"),
                "args": call.get("args"),
                "output": call.get("output"),
            }
            for call in raw["tool_calls"]
        ]
    return message
