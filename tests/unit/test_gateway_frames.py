"""`gateway/frames.reply`: a `SessionService` payload in its frame encodes to exactly the bytes
the gateway sent when it spread the payload into a dict (`{"type": …, **payload, "id": …}`)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from diminuendo.gateway import frames
from diminuendo.protocol import events as ev
from diminuendo.protocol.codec import encode_frame

META = {"id": "ses_1", "tenantId": "acme", "name": None, "tokenUsage": {"input": 0, "output": 0}}
SNAPSHOT = {
    "type": "state_snapshot",
    "sessionId": "ses_1",
    "session": META,
    "epoch": "e1",
    "lastSeq": 4,
    "gap": False,
    "pending": [{"type": "question_requested", "requestId": "r1", "questions": []}],
}
PAYLOADS: list[tuple[type[ev.ServerFrame], str, dict[str, Any]]] = [
    (ev.StateSnapshot, "state_snapshot", SNAPSHOT),
    (
        ev.StateSnapshot,
        "state_snapshot",
        {**SNAPSHOT, "currentTurn": {"turnId": "t1", "text": "", "startedAt": 1}},
    ),
    (
        ev.History,
        "history",
        {"sessionId": "ses_1", "messages": [{"id": "m", "turnId": None}], "hasMore": True},
    ),
    (
        ev.Events,
        "events",
        {
            "sessionId": "ses_1",
            "epoch": "e1",
            "events": [msgspec.Raw(b'{"type":"text_delta","seq":1}')],
            "lastSeq": 1,
            "gap": False,
            "hasMore": False,
        },
    ),
    (
        ev.FileList,
        "file_list",
        {"sessionId": "ses_1", "path": ".", "entries": [{"path": "a", "size": None}]},
    ),
    (
        ev.FileContent,
        "file_content",
        {"sessionId": "s", "path": "a", "content": "", "encoding": "utf-8", "size": 0},
    ),
    (
        ev.FileContent,
        "file_content",
        {
            "sessionId": "s",
            "path": "a",
            "content": "",
            "encoding": "base64",
            "size": 0,
            "iteration": 3,
        },
    ),
    (ev.FileHistory, "file_history", {"sessionId": "s", "path": "a", "iterations": [{"x": 1}]}),
]


@pytest.mark.parametrize("request_id", ["req-1", None])
@pytest.mark.parametrize(("kind", "tag", "payload"), PAYLOADS)
def test_reply_encodes_as_the_spread_dict(
    kind: type[ev.ServerFrame], tag: str, payload: dict[str, Any], request_id: str | None
) -> None:
    spread = {"type": tag, **payload}
    if request_id is not None:
        spread["id"] = request_id
    assert encode_frame(frames.reply(kind, payload, request_id)) == encode_frame(spread)
