"""Random frames over one real socket: every input gets a documented reply (PROTOCOL.md §2, §5,
§12), nothing crashes, nothing leaks.

A dev-mode gateway with its own local stack (the fuzz deletes sessions and edits members, which
must not disturb the shared dev tenant) and a raised message rate limit. Two drivers:

- hypothesis draws one frame per example — random text, random bytes, or a JSON object whose
  `type` is one of the real message types (sometimes not) with plausible or junk field values,
  including the ids of real sessions — and sends it on a socket kept open across examples; the
  reply is the frame that echoes the request `id` (or, when the frame has no usable id, the next
  error or reply of the right type without an id) and must match the §5/§12 table;
- a seeded loop pipelines ~2,000 frames with ids without waiting: each id gets exactly one
  reply.

At the end a `ping` still gets `pong`, `/health` answers, and the gateway logged no error.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Gateway, Stack, gateway_process, new_stack

STEP_S = 10.0
REPO = str(Path(__file__).resolve().parents[2])

ERROR_CODES = {  # PROTOCOL.md §12
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "MESSAGE_TOO_LARGE",
    "RATE_LIMITED",
    "NOT_AUTHENTICATED",
    "AUTH_FAILED",
    "AUTH_RATE_LIMITED",
    "PROTOCOL_VERSION_MISMATCH",
    "FORBIDDEN",
    "SESSION_NOT_FOUND",
    "SESSION_BUSY",
    "INVALID_STATE",
    "CAPACITY_EXCEEDED",
    "FILE_NOT_FOUND",
    "UPSTREAM_UNAVAILABLE",
    "UPSTREAM_ERROR",
    "DRAINING",
    "INTERNAL_ERROR",
}

REPLIES = {  # PROTOCOL.md §5: message type → its direct reply
    "authenticate": "authenticated",
    "ping": "pong",
    "list_sessions": "session_list",
    "create_session": "session_created",
    "rename_session": "session_updated",
    "archive_session": "session_archived",
    "unarchive_session": "session_unarchived",
    "delete_session": "session_deleted",
    "join_session": "state_snapshot",
    "leave_session": "session_left",
    "run_turn": "turn_started",
    "stop_turn": "ack",
    "steer": "ack",
    "answer_question": "ack",
    "get_history": "history",
    "get_events": "events",
    "list_files": "file_list",
    "read_file": "file_content",
    "file_history": "file_history",
    "file_at_iteration": "file_content",
    "manage_members": "member_list",
}

FIELDS = {  # PROTOCOL.md §5: the fields of each message type
    "authenticate": ["token", "protocolVersion"],
    "ping": ["ts"],
    "list_sessions": ["includeArchived"],
    "create_session": ["agentType", "name", "projectId", "metadata"],
    "rename_session": ["sessionId", "name"],
    "archive_session": ["sessionId"],
    "unarchive_session": ["sessionId"],
    "delete_session": ["sessionId"],
    "join_session": ["sessionId", "afterSeq", "epoch"],
    "leave_session": ["sessionId"],
    "run_turn": ["sessionId", "text", "clientTurnId"],
    "stop_turn": ["sessionId"],
    "steer": ["sessionId", "content"],
    "answer_question": ["sessionId", "requestId", "answers", "approved", "dismissed"],
    "get_history": ["sessionId", "limit", "before"],
    "get_events": ["sessionId", "afterSeq", "epoch", "limit"],
    "list_files": ["sessionId", "path", "depth"],
    "read_file": ["sessionId", "path"],
    "file_history": ["sessionId", "path"],
    "file_at_iteration": ["sessionId", "path", "iteration"],
    "manage_members": ["action", "userId", "role"],
}
TYPES = sorted(FIELDS)

# Internals that must never reach a client: checked only when the input did not contain them.
LEAKS = ["Traceback", 'File "', "site-packages", '.py"', ".py:", REPO, sys.prefix, "/usr/lib"]
BAD_LOG = re.compile(r'"level":\s*"(error|critical)"|Traceback')


# ----- the gateway and one socket ---------------------------------------------------------------


@dataclass
class Fuzzer:
    """A synchronous socket to the gateway plus what the checks need to know."""

    gw: Gateway
    ws: ClientConnection
    sessions: list[str]
    counter: int = 0

    def next_id(self) -> str:
        self.counter += 1
        return f"fz{self.counter}"

    def recv(self, timeout: float = STEP_S) -> dict[str, Any]:
        raw = self.ws.recv(timeout=timeout)
        assert isinstance(raw, str), "the server sends text frames only"
        frame = json.loads(raw)
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), raw[:200]
        assert "Traceback" not in raw and 'File "' not in raw, raw[:500]
        return frame

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        request_id = self.next_id()
        self.ws.send(json.dumps({**message, "id": request_id}))
        deadline = time.monotonic() + STEP_S
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if frame.get("id") == request_id:
                return frame


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = new_stack(tmp_path_factory.mktemp("fuzz-stack"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def fuzz_gateway(fuzz_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = gateway_process(
        fuzz_stack,
        tmp_path_factory.mktemp("fuzz-gateway"),
        WS_RATE_LIMIT="100000/10s",
        WS_SEND_QUEUE_MAX="100000",
    )
    try:
        gw.start()
        yield gw
    finally:
        if gw.proc is not None:
            gw.stop()


@pytest.fixture(scope="module")
def fuzzer(fuzz_gateway: Gateway) -> Iterator[Fuzzer]:
    with connect(fuzz_gateway.ws_url, open_timeout=STEP_S, max_size=None, max_queue=None) as ws:
        f = Fuzzer(fuzz_gateway, ws, [])
        assert [f.recv()["type"] for _ in range(3)] == ["welcome", "connected", "authenticated"]
        for agent in ("echo", "echo", "demo", "echo"):
            reply = f.request({"type": "create_session", "agentType": agent, "name": "fuzz"})
            assert reply["type"] == "session_created", reply
            f.sessions.append(reply["session"]["id"])
        snapshot = f.request({"type": "join_session", "sessionId": f.sessions[0]})
        assert snapshot["type"] == "state_snapshot", snapshot
        yield f


# ----- checks -----------------------------------------------------------------------------------


def usable_id(frame: Any) -> str | None:
    """The id the server must echo: a string of at most 64 characters in a JSON object."""
    if isinstance(frame, dict):
        value = frame.get("id")
        if isinstance(value, str) and len(value) <= 64:
            return value
    return None


def parsed(data: str | bytes) -> Any:
    if isinstance(data, bytes):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def sent_type(frame: Any) -> str | None:
    return frame.get("type") if isinstance(frame, dict) else None


def is_reply(frame: dict[str, Any], message_type: str | None, expected_id: str | None) -> bool:
    if expected_id is not None and frame.get("id") == expected_id:
        return True
    if "id" in frame:
        return False  # the reply to some other request
    if frame["type"] == "error":
        return True
    return expected_id is None and frame["type"] == REPLIES.get(message_type or "")


def check_reply(data: str | bytes, reply: dict[str, Any], built: bool) -> None:
    """`built`: the frame was a JSON object we serialised ourselves (so it is valid JSON)."""
    frame = parsed(data)
    text = data if isinstance(data, str) else data.decode("latin-1")
    dumped = json.dumps(reply)
    for leak in LEAKS:
        if leak not in text:
            assert leak not in dumped, (leak, dumped[:500])
    message_type = sent_type(frame)
    expected_id = usable_id(frame)
    if built and expected_id is not None:
        assert reply.get("id") == expected_id, ("the id is not echoed", text[:300], reply)
    if reply["type"] == "error":
        assert reply["code"] in ERROR_CODES, reply
        assert reply["code"] != "INTERNAL_ERROR", ("a handler crashed", text[:500], reply)
        assert isinstance(reply["message"], str) and 0 < len(reply["message"]) <= 500, reply
        return
    assert message_type in REPLIES, ("a non-message got a normal reply", text[:300], reply)
    assert reply["type"] == REPLIES[message_type], (text[:300], reply)
    token = frame.get("token") if message_type == "authenticate" else None
    if isinstance(token, str) and len(token) >= 8:
        assert token not in dumped, "the token is echoed"


def exchange(f: Fuzzer, data: str | bytes, built: bool) -> dict[str, Any]:
    frame = parsed(data)
    expected_id = usable_id(frame)
    message_type = sent_type(frame)
    f.ws.send(data)
    deadline = time.monotonic() + STEP_S
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, ("no reply", data[:300] if isinstance(data, str) else data[:64])
        reply = f.recv(remaining)
        if is_reply(reply, message_type, expected_id):
            check_reply(data, reply, built)
            return reply


# ----- hypothesis: one frame per example --------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | st.text(max_size=30)
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
paths = st.sampled_from(["", "README.md", "src/app.py", "../etc/passwd", "/etc/passwd", "a\x00b"])


def plausible(name: str, sessions: list[str]) -> st.SearchStrategy[Any]:
    small = st.integers(-2, 600)
    return {
        "sessionId": st.sampled_from(
            [*sessions, *sessions, *sessions, "ses_missing", "", "x" * 200]
        ),
        "agentType": st.sampled_from(["echo", "demo", "no-such-agent", "", "x" * 70]),
        "name": st.text(max_size=220),
        "projectId": st.none() | st.text(max_size=140),
        "metadata": st.none() | st.dictionaries(st.text(max_size=8), junk, max_size=3),
        "text": st.text(max_size=60),
        "clientTurnId": st.text(max_size=70),
        "content": st.text(max_size=60),
        "requestId": st.sampled_from(["req_1", "", "q"]) | st.text(max_size=20),
        "answers": st.none() | st.dictionaries(st.text(max_size=8), junk, max_size=3),
        "approved": st.none() | st.booleans(),
        "dismissed": st.none() | st.booleans(),
        "limit": small,
        "before": st.none() | st.text(max_size=20),
        "afterSeq": small,
        "epoch": st.none() | st.text(max_size=20),
        "path": paths | st.text(max_size=30),
        "depth": st.integers(-1, 7),
        "iteration": st.integers(-1, 5),
        "action": st.sampled_from(["list", "add", "update", "remove", "bogus"]),
        "userId": st.sampled_from(["fuzz-user", "dev-user-001", ""]) | st.text(max_size=20),
        "role": st.sampled_from(["guest", "viewer", "developer", "admin", "owner", "god"]),
        "token": st.text(min_size=1, max_size=80),
        "protocolVersion": st.integers(-1, 3),
        "includeArchived": st.booleans(),
        "ts": st.integers(0, 2**53) | finite,
    }[name]


@st.composite
def message_frames(draw: st.DrawFn, sessions: list[str], f: Fuzzer) -> str:
    """Mostly well-formed messages of the real types, each field sometimes missing or junk."""
    roll = draw(st.integers(0, 19))
    if roll < 17:
        message_type: Any = draw(st.sampled_from(TYPES))
    elif roll < 19:
        message_type = draw(st.sampled_from(["bogus", "", "PING", "Ping", "ping "]))
    else:
        message_type = draw(scalars)
    frame: dict[str, Any] = {"type": message_type}
    if draw(st.integers(0, 19)) == 0:
        del frame["type"]
    for name in FIELDS.get(message_type, []) if isinstance(message_type, str) else []:
        if draw(st.integers(0, 9)) < 9:
            is_junk = draw(st.integers(0, 9)) == 0
            frame[name] = draw(junk if is_junk else plausible(name, sessions))
    if draw(st.integers(0, 4)) == 0:  # unknown fields are ignored
        extra = st.text(min_size=1, max_size=8).filter(lambda k: k not in ("type", "id"))
        frame.update(draw(st.dictionaries(extra, junk, max_size=2)))
    id_kind = draw(st.integers(0, 9))
    if id_kind < 8:
        frame["id"] = f.next_id()
    elif id_kind == 8:
        frame["id"] = draw(junk | st.text(min_size=65, max_size=80))
    return json.dumps(frame)


@given(data=st.data())
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_random_frames_get_documented_replies(fuzzer: Fuzzer, data: st.DataObject) -> None:
    kind = data.draw(st.integers(0, 9), label="kind")
    if kind < 7:
        frame: str | bytes = data.draw(message_frames(fuzzer.sessions, fuzzer), label="message")
        built = True
    elif kind == 7:
        frame, built = data.draw(st.text(max_size=200), label="text"), False
    elif kind == 8:
        frame, built = data.draw(st.binary(max_size=200), label="bytes"), False
    else:
        value = data.draw(junk.filter(lambda v: not isinstance(v, dict)), label="json")
        frame, built = json.dumps(value), True
    reply = exchange(fuzzer, frame, built)
    event(f"{reply['type']} {reply.get('code', '')}".strip())  # --hypothesis-show-statistics


# ----- seeded: 2,000 frames pipelined -----------------------------------------------------------


def random_frame(rng: random.Random, sessions: list[str], request_id: str) -> str:
    values: list[Any] = [
        None,
        True,
        -1,
        0,
        7,
        1.5,
        "",
        "x" * rng.randint(1, 300),
        [],
        {},
        {"k": [1, None]},
        "../../etc/passwd",
        "README.md",
        "a\x00b",
        "ses_missing",
        *sessions,
    ]
    message_type = rng.choice([*TYPES, "bogus"])
    frame: dict[str, Any] = {"type": message_type}
    for name in FIELDS.get(message_type, []):
        if rng.random() < 0.8:
            frame[name] = rng.choice(values)
    if "sessionId" in frame and rng.random() < 0.5:
        frame["sessionId"] = rng.choice(sessions)
    if message_type == "create_session" and rng.random() < 0.5:
        frame["agentType"] = "echo"
    if rng.random() < 0.1:
        frame["".join(rng.choices(string.ascii_letters, k=5))] = rng.choice(values)
    frame["id"] = request_id
    return json.dumps(frame)


def test_two_thousand_pipelined_frames_each_get_one_reply(fuzzer: Fuzzer) -> None:
    rng = random.Random(20240611)
    sent: dict[str, str] = {}
    for _ in range(2000):
        request_id = fuzzer.next_id()
        sent[request_id] = random_frame(rng, fuzzer.sessions, request_id)
    started = time.monotonic()
    for data in sent.values():
        fuzzer.ws.send(data)
    replies: dict[str, list[dict[str, Any]]] = {}
    deadline = started + 30
    while len(replies) < len(sent):
        assert time.monotonic() < deadline, f"{len(sent) - len(replies)} frames got no reply"
        reply = fuzzer.recv(max(0.01, deadline - time.monotonic()))
        if reply.get("id") in sent:
            replies.setdefault(reply["id"], []).append(reply)
    # Anything still in flight arrives before the reply to a fresh ping.
    fence = fuzzer.next_id()
    fuzzer.ws.send(json.dumps({"type": "ping", "id": fence}))
    while (reply := fuzzer.recv()).get("id") != fence:
        if reply.get("id") in sent:
            replies[reply["id"]].append(reply)
    duplicates = {k: v for k, v in replies.items() if len(v) != 1}
    assert duplicates == {}, list(duplicates.items())[:3]
    for request_id, data in sent.items():
        check_reply(data, replies[request_id][0], built=True)


# ----- bugs the fuzz found (documented until fixed) ---------------------------------------------

ILLEGAL_TRANSITION = "illegal session transition"


def test_delete_after_stop_turn_on_an_inactive_session_is_legal(fuzzer: Fuzzer) -> None:
    created = fuzzer.request({"type": "create_session", "agentType": "echo"})
    session_id = created["session"]["id"]
    assert fuzzer.request({"type": "stop_turn", "sessionId": session_id})["type"] == "ack"
    deleted = fuzzer.request({"type": "delete_session", "sessionId": session_id})
    assert deleted["type"] == "session_deleted", deleted
    time.sleep(0.2)
    logged = [
        line
        for line in fuzzer.gw.output().splitlines()
        if session_id in line and ILLEGAL_TRANSITION in line
    ]
    assert logged == [], logged


def test_stop_turn_on_an_inactive_session_does_not_activate_it(fuzzer: Fuzzer) -> None:
    def active_sessions() -> int:
        health = httpx.get(f"{fuzzer.gw.url}/health", timeout=STEP_S).json()
        return health["metrics"]["activeSessions"]

    created = fuzzer.request({"type": "create_session", "agentType": "echo"})
    before = active_sessions()
    for _ in range(3):
        assert (
            fuzzer.request({"type": "stop_turn", "sessionId": created["session"]["id"]})["type"]
            == "ack"
        )
    assert active_sessions() == before


# ----- afterwards: still up, still answering, nothing logged as an error -------------------------


def test_gateway_survived(fuzzer: Fuzzer) -> None:
    pong = fuzzer.request({"type": "ping", "ts": 42})
    assert pong["type"] == "pong" and pong["ts"] == 42
    gw = fuzzer.gw
    assert gw.proc is not None and gw.proc.poll() is None
    health = httpx.get(f"{gw.url}/health", timeout=STEP_S)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    bad = [line for line in gw.output().splitlines() if BAD_LOG.search(line)]
    assert bad == [], bad[:5]
