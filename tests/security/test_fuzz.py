"""Fuzzing every surface of one real production gateway (PROTOCOL.md §2, §5, §8, §10, §12, §13):
every client message type over `/ws`, every REST route, every RPC method.

One production-mode gateway (JWT auth against its own JWKS server, a tenant of its own, raised
rate limits, a 2 s session idle timeout so activations come and go during the run) and hypothesis
drawing random and boundary values for each field: strings with lone surrogates and control
characters, huge integers, nesting around the 64-level limit, wrong types, missing fields,
unknown fields. Every reply must be a documented one:

- WebSocket: an `error` with a §12 code (never `INTERNAL_ERROR`) or the message's §5 reply,
  echoing the request `id`; a seeded run of 1,000 pipelined frames gets exactly one reply each;
- REST: a documented status with a JSON `{"error": {code, message}}` body on errors (never 500
  or 502);
- RPC: one JSON-RPC response per call that needs one, in order, with documented error codes
  (never -32603), and one -32600 for a batch over `RPC_BATCH_MAX`.

Afterwards the gateway logged no `ERROR` line, and once the clients are gone its asyncio task
count and RSS are back near the baseline taken before the run. Derandomized (no example
database), so a run is the same every time; the whole module takes well under 90 s.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Gateway, Stack, gateway_process
from tests.integration.jwks_server import ROLE_CLAIM, TENANT_CLAIM, JwksServer, production_env

STEP_S = 10.0
REPO = str(Path(__file__).resolve().parents[2])
BATCH_MAX = 20
USER = "auth0|fuzzer"

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
    "QUOTA_EXCEEDED",
    "FILE_NOT_FOUND",
    "FILE_TOO_LARGE",
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

RPC_METHODS = {  # PROTOCOL.md §10: method → its params
    "initialize": [],
    "capability/list": [],
    "health/check": [],
    "conversation/create": ["agentType", "name", "projectId", "metadata"],
    "conversation/list": ["includeArchived"],
    "conversation/send": ["sessionId", "text", "clientTurnId"],
    "conversation/history": ["sessionId", "limit", "before"],
    "stream/cancel": ["sessionId"],
    "inference/models.list": [],
}
RPC_ERRORS = {-32700, -32600, -32601, -32602, -32010, -32011, -32012, -32013, -32014, -32029}

REST_STATUSES = {200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 429, 503}
REST_CODES = ERROR_CODES - {"INTERNAL_ERROR"} | {"NOT_FOUND", "METHOD_NOT_ALLOWED"}
# (method, path template, query parameters, body fields or None for no body)
REST_ROUTES: list[tuple[str, str, list[str], list[str] | None]] = [
    ("GET", "/api/threads", ["includeArchived"], None),
    ("POST", "/api/threads", [], ["agentType", "name", "projectId", "metadata"]),
    ("GET", "/api/threads/{id}", [], None),
    ("PATCH", "/api/threads/{id}", [], ["name", "archived"]),
    ("DELETE", "/api/threads/{id}", [], None),
    ("GET", "/api/threads/{id}/messages", ["limit", "before"], None),
    ("POST", "/api/threads/{id}/messages", [], ["text", "clientTurnId"]),
    ("POST", "/api/threads/{id}/stop", [], None),
    ("POST", "/api/threads/{id}/steer", [], ["content"]),
    ("POST", "/api/threads/{id}/answer", [], ["requestId", "answers", "approved", "dismissed"]),
    ("GET", "/api/threads/{id}/events", ["afterSeq", "epoch"], None),
    ("GET", "/api/models", [], None),
    ("GET", "/api/me", [], None),
]

# Internals that must never reach a client: checked only when the input did not contain them.
LEAKS = ["Traceback", 'File "', "site-packages", '.py"', ".py:", REPO, sys.prefix, "/usr/lib"]
BAD_LOG = re.compile(r'"level":\s*"(error|critical)"|Traceback')
EXAMPLES = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ----- one production gateway, a tenant of its own ----------------------------------------------


@dataclass
class Target:
    gw: Gateway
    jwks: JwksServer
    token: str
    http: httpx.Client
    sessions: list[str] = field(default_factory=list)
    baseline: dict[str, int] = field(default_factory=dict)
    counter: int = 0

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Target({self.gw.url})")  # what hypothesis prints: not the environment

    def next_id(self) -> str:
        self.counter += 1
        return f"fz{self.counter}"

    def metrics(self) -> dict[str, int]:
        return httpx.get(f"{self.gw.url}/health", timeout=STEP_S).json()["metrics"]


@pytest.fixture(scope="module")
def target(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    jwks = JwksServer()
    gw = gateway_process(
        stack,
        tmp_path_factory.mktemp("fuzz-gateway"),
        **production_env(
            jwks,
            WS_RATE_LIMIT="100000/10s",
            WS_SEND_QUEUE_MAX="100000",
            SESSION_IDLE_TIMEOUT="2",
            RPC_BATCH_MAX=str(BATCH_MAX),
        ),
    )
    tenant = f"fuzz-{uuid.uuid4().hex[:12]}"
    token = jwks.mint(jwks.claims(sub=USER, **{TENANT_CLAIM: tenant, ROLE_CLAIM: "owner"}))
    try:
        gw.start()
        with httpx.Client(
            base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=STEP_S
        ) as http:
            t = Target(gw, jwks, token, http)
            for agent in ("echo", "echo", "demo", "echo"):
                created = http.post("/api/threads", json={"agentType": agent, "name": "fuzz"})
                assert created.status_code == 201, created.text
                t.sessions.append(created.json()["id"])
            time.sleep(0.5)
            t.baseline = t.metrics()
            yield t
    finally:
        if gw.proc is not None:
            gw.stop()
        jwks.stop()


@dataclass
class Socket:
    ws: ClientConnection

    def recv(self, timeout: float = STEP_S) -> dict[str, Any]:
        raw = self.ws.recv(timeout=timeout)
        assert isinstance(raw, str), "the server sends text frames only"
        frame = json.loads(raw)
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), raw[:200]
        assert "Traceback" not in raw and 'File "' not in raw, raw[:500]
        return frame

    def request(self, message: dict[str, Any], request_id: str) -> dict[str, Any]:
        self.ws.send(json.dumps({**message, "id": request_id}))
        deadline = time.monotonic() + STEP_S
        while (frame := self.recv(max(0.01, deadline - time.monotonic()))).get("id") != request_id:
            pass
        return frame


@pytest.fixture(scope="module")
def socket(target: Target) -> Iterator[Socket]:
    with connect(
        target.gw.ws_url,
        open_timeout=STEP_S,
        max_size=None,
        max_queue=None,
        additional_headers={"Authorization": f"Bearer {target.token}"},
    ) as ws:
        s = Socket(ws)
        assert [s.recv()["type"] for _ in range(3)] == ["welcome", "connected", "authenticated"]
        snapshot = s.request({"type": "join_session", "sessionId": target.sessions[0]}, "j0")
        assert snapshot["type"] == "state_snapshot", snapshot
        yield s


# ----- values -----------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
huge = st.sampled_from([2**53, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30)])
surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
controls = st.text(st.characters(categories=["Cc"]), min_size=1, max_size=5)
plain_text = st.text(max_size=30)
odd_text = (  # one_of picks its branches evenly: plain text most of the time
    plain_text
    | plain_text
    | plain_text
    | plain_text
    | surrogates
    | controls
    | st.sampled_from(["", " ", "²", "٣", "../..", "a/../b", "\x00", "ses_%2F..", "😀" * 70])
)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | huge | finite | odd_text


def _nest(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


deep = st.integers(60, 70).map(_nest)  # around the 64-level limit (the frame adds levels)
shallow_junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
junk = shallow_junk | shallow_junk | shallow_junk | deep
paths = st.sampled_from(["", "README.md", "src/app.py", "../etc/passwd", "/etc/passwd", "a\x00b"])


def plausible(name: str, sessions: list[str]) -> st.SearchStrategy[Any]:
    small = st.integers(-2, 600)
    ids = st.sampled_from([*sessions, *sessions, *sessions, "ses_missing", "", "x" * 129])
    return {
        "sessionId": ids | ids | ids | odd_text,
        "agentType": st.sampled_from(["echo", "demo", "no-such-agent", "", "x" * 70]),
        "name": st.text(max_size=220) | st.sampled_from(["", "n" * 200, "n" * 201]),
        "projectId": st.none() | st.text(max_size=140),
        "metadata": st.none() | st.dictionaries(st.text(max_size=8), junk, max_size=3),
        "text": st.text(max_size=60) | odd_text,
        "clientTurnId": st.text(max_size=70),
        "content": st.text(max_size=60),
        "requestId": st.sampled_from(["req_1", "", "q"]) | st.text(max_size=20),
        "answers": st.none() | st.dictionaries(st.text(max_size=8), junk, max_size=3),
        "approved": st.none() | st.booleans(),
        "dismissed": st.none() | st.booleans(),
        "archived": st.none() | st.booleans(),
        "limit": small | huge,
        "before": st.none() | odd_text | st.sampled_from(["b" * 128, "b" * 129, "b" * 5000]),
        "afterSeq": small | huge,
        "epoch": st.none() | st.text(max_size=70),
        "path": paths | st.text(max_size=30) | st.just("a/" * 600),
        "depth": st.integers(-1, 7),
        "iteration": st.integers(-1, 5) | huge,
        "action": st.sampled_from(["list", "add", "update", "remove", "bogus"]),
        "userId": st.sampled_from(["fuzz-user", ""]) | st.text(max_size=20),
        "role": st.sampled_from(
            ["guest", "viewer", "developer", "admin", "owner", "god", "x" * 40]
        ),
        "token": st.text(min_size=1, max_size=80),
        "protocolVersion": st.integers(-1, 3) | huge,
        "includeArchived": st.booleans(),
        "ts": st.integers(0, 2**53) | finite | huge,
    }[name]


@st.composite
def fields_of(draw: st.DrawFn, names: list[str], sessions: list[str]) -> dict[str, Any]:
    """Each field usually present, usually plausible, sometimes junk; sometimes an extra one."""
    fields: dict[str, Any] = {}
    for name in names:
        if draw(st.integers(0, 9)) < 9:
            is_junk = draw(st.integers(0, 9)) == 0
            fields[name] = draw(junk if is_junk else plausible(name, sessions))
    if draw(st.integers(0, 4)) == 0:  # unknown fields are ignored
        extra = st.text(min_size=1, max_size=8).filter(lambda k: k not in ("type", "id"))
        fields.update(draw(st.dictionaries(extra, junk, max_size=2)))
    return fields


def leaks(sent: str, reply: str) -> list[str]:
    return [leak for leak in LEAKS if leak not in sent and leak in reply]


# ----- WebSocket: one frame per example ---------------------------------------------------------


@st.composite
def message_frames(draw: st.DrawFn, sessions: list[str], request_id: str) -> str:
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
    names = FIELDS.get(message_type, []) if isinstance(message_type, str) else []
    frame.update(draw(fields_of(names, sessions)))
    id_kind = draw(st.integers(0, 9))
    if id_kind < 8:
        frame["id"] = request_id
    elif id_kind == 8:
        frame["id"] = draw(junk | st.text(min_size=65, max_size=80))
    return json.dumps(frame)


def usable_id(frame: Any) -> str | None:
    value = frame.get("id") if isinstance(frame, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def parsed(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def is_reply(frame: dict[str, Any], message_type: Any, expected_id: str | None) -> bool:
    if expected_id is not None and frame.get("id") == expected_id:
        return True
    if "id" in frame:
        return False  # the reply to some other request
    if frame["type"] == "error":
        return True
    return expected_id is None and frame["type"] == REPLIES.get(message_type, "")


def check_ws_reply(data: str, reply: dict[str, Any], built: bool) -> None:
    """`built`: the frame was a JSON value we serialised ourselves."""
    frame = parsed(data)
    dumped = json.dumps(reply)
    assert leaks(data, dumped) == [], dumped[:500]
    message_type = frame.get("type") if isinstance(frame, dict) else None
    expected_id = usable_id(frame)
    # JSON the decoder refuses (a lone surrogate escape, say) has no id anyone could trust.
    if built and expected_id is not None and reply.get("code") != "INVALID_JSON":
        assert reply.get("id") == expected_id, ("the id is not echoed", data[:300], reply)
    if reply["type"] == "error":
        assert reply["code"] in ERROR_CODES, reply
        assert reply["code"] != "INTERNAL_ERROR", ("a handler crashed", data[:500], reply)
        assert isinstance(reply["message"], str) and 0 < len(reply["message"]) <= 500, reply
        return
    assert message_type in REPLIES, ("a non-message got a normal reply", data[:300], reply)
    assert reply["type"] == REPLIES[message_type], (data[:300], reply)
    token = frame.get("token") if message_type == "authenticate" else None
    if isinstance(token, str) and len(token) >= 8:
        assert token not in dumped, "the token is echoed"


def exchange(s: Socket, data: str, built: bool) -> dict[str, Any]:
    frame = parsed(data)
    expected_id = usable_id(frame)
    message_type = frame.get("type") if isinstance(frame, dict) else None
    s.ws.send(data)
    deadline = time.monotonic() + STEP_S
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, ("no reply", data[:300])
        reply = s.recv(remaining)
        if is_reply(reply, message_type, expected_id):
            check_ws_reply(data, reply, built)
            return reply


@given(data=st.data())
@EXAMPLES
def test_websocket_frames_get_documented_replies(
    target: Target, socket: Socket, data: st.DataObject
) -> None:
    kind = data.draw(st.integers(0, 9), label="kind")
    if kind < 8:
        frame = data.draw(message_frames(target.sessions, target.next_id()), label="message")
        built = True
    elif kind == 8:
        frame, built = data.draw(st.text(max_size=200), label="text"), False
    else:
        value = data.draw(junk.filter(lambda v: not isinstance(v, dict)), label="json")
        frame, built = json.dumps(value), True
    reply = exchange(socket, frame, built)
    event(f"ws {reply['type']} {reply.get('code', '')}".strip())


def random_frame(rng: random.Random, sessions: list[str], request_id: str) -> str:
    values: list[Any] = [
        None,
        True,
        -1,
        0,
        7,
        2**64,
        1.5,
        "",
        "x" * rng.randint(1, 300),
        "\u2028\x01²",  # odd but valid (a lone surrogate is INVALID_JSON: no id to echo)
        [],
        {},
        {"k": [1, None]},
        _nest(rng.randint(60, 70)),
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


def test_a_thousand_pipelined_frames_each_get_one_reply(target: Target, socket: Socket) -> None:
    """A random sequence of messages sent without waiting: exactly one reply per id."""
    rng = random.Random(20240611)
    sent: dict[str, str] = {}
    for _ in range(1000):
        request_id = target.next_id()
        sent[request_id] = random_frame(rng, target.sessions, request_id)
    for data in sent.values():
        socket.ws.send(data)
    replies: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 30
    while len(replies) < len(sent) and time.monotonic() < deadline:
        try:
            reply = socket.recv(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if reply.get("id") in sent:
            replies.setdefault(reply["id"], []).append(reply)
    missing = [data[:200] for request_id, data in sent.items() if request_id not in replies]
    assert missing == [], (len(missing), missing[:5])
    fence = target.next_id()  # anything still in flight arrives before the reply to this
    socket.ws.send(json.dumps({"type": "ping", "id": fence}))
    while (reply := socket.recv()).get("id") != fence:
        if reply.get("id") in sent:
            replies[reply["id"]].append(reply)
    duplicates = {k: v for k, v in replies.items() if len(v) != 1}
    assert duplicates == {}, list(duplicates.items())[:3]
    for request_id, data in sent.items():
        check_ws_reply(data, replies[request_id][0], built=True)


# ----- REST: one request per example ------------------------------------------------------------


def _quoted(text: str) -> str:
    """Percent-encoded UTF-8, lone surrogates included (as the invalid bytes they would be)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def rest_requests(draw: st.DrawFn, sessions: list[str]) -> tuple[str, str, dict, bytes | None]:
    method, template, query_names, body_names = draw(st.sampled_from(REST_ROUTES))
    session_id = draw(plausible("sessionId", sessions))
    path = template.replace("{id}", _quoted(session_id) if session_id else "x")
    query: dict[str, str] = {}
    headers: dict[str, Any] = {}
    for name in query_names:
        if draw(st.booleans()):
            value = draw(plausible(name, sessions) | st.sampled_from(["+5", " 5", "1_0", "٣"]))
            query[name] = value if isinstance(value, str) else json.dumps(value)
    if template.endswith("/events") and draw(st.booleans()):
        value = draw(st.sampled_from(["0", "3", "²", "9" * 5000, "-1", "1_0", "x"]))
        headers["Last-Event-ID"] = value.encode()
    body: bytes | None = None
    roll = draw(st.integers(0, 9))
    if body_names is not None and roll < 7:
        body = json.dumps(draw(fields_of(body_names, sessions))).encode()
    elif roll == 7:
        body = json.dumps(draw(junk)).encode()
    elif roll == 8:
        body = draw(st.binary(max_size=100))
    if query:
        path += "?" + "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in query.items())
    return method, path, headers, body


@given(data=st.data())
@EXAMPLES
def test_rest_requests_get_documented_statuses(target: Target, data: st.DataObject) -> None:
    method, path, headers, body = data.draw(rest_requests(target.sessions), label="request")
    headers = {**headers, "Content-Type": "application/json"} if body is not None else headers
    with target.http.stream(method, path, headers=headers, content=body) as response:
        status = response.status_code
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        text = "" if streaming else response.read().decode()
    event(f"rest {method} {status}")
    assert status in REST_STATUSES, (method, path[:200], status, text[:300])
    assert leaks(path + (body or b"").decode("latin-1"), text) == [], text[:300]
    if status >= 400:
        error = json.loads(text)["error"]
        assert error["code"] in REST_CODES, (method, path[:200], text[:300])
        assert isinstance(error["message"], str) and len(error["message"]) <= 500


# ----- RPC: one call or batch per example -------------------------------------------------------


@st.composite
def rpc_calls(draw: st.DrawFn, sessions: list[str]) -> Any:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(junk)  # not a call at all
    method = draw(st.sampled_from(sorted(RPC_METHODS)) | st.sampled_from(["nope", "", "x/"]))
    call: dict[str, Any] = {"jsonrpc": "2.0" if roll > 1 else draw(scalars), "method": method}
    if roll == 2:
        call["method"] = draw(scalars)
    params_roll = draw(st.integers(0, 9))
    if params_roll < 8:
        call["params"] = draw(fields_of(RPC_METHODS.get(method, []), sessions))
    elif params_roll == 8:
        call["params"] = draw(junk)
    id_roll = draw(st.integers(0, 9))
    if id_roll < 6:
        call["id"] = draw(st.text(max_size=10) | st.integers() | finite | st.none())
    elif id_roll < 8:
        call["id"] = draw(st.lists(scalars, max_size=2) | st.dictionaries(st.text(), scalars))
    return call


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def decodes(body: bytes) -> bool:
    """Strict JSON: Python's parser also takes lone surrogate escapes, the gateway does not."""
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return True


def valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def expected_response(call: Any) -> tuple[bool, Any]:
    """(does the call get a response, the id it carries)."""
    if not isinstance(call, dict) or not valid_id(call.get("id")):
        return True, None
    if call.get("jsonrpc") != "2.0" or not isinstance(call.get("method"), str):
        return True, call.get("id")
    return "id" in call, call.get("id")


def check_rpc_response(response: Any, expected_id: Any) -> None:
    assert isinstance(response, dict) and response.get("jsonrpc") == "2.0", response
    assert response["id"] == expected_id, (response, expected_id)
    assert ("result" in response) != ("error" in response), response
    if "error" in response:
        assert response["error"]["code"] in RPC_ERRORS, response


@given(data=st.data())
@EXAMPLES
def test_rpc_calls_get_one_response_each(target: Target, data: st.DataObject) -> None:
    kind = data.draw(st.integers(0, 9), label="kind")
    calls = data.draw(st.lists(rpc_calls(target.sessions), max_size=BATCH_MAX + 3), label="batch")
    if kind < 5:
        payload: Any = calls[0] if calls else data.draw(rpc_calls(target.sessions))
    elif kind < 9:
        payload = calls
    else:
        payload = data.draw(st.binary(max_size=50), label="bytes")
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = target.http.post("/rpc", content=body)
    assert leaks(body.decode("latin-1"), response.text) == [], response.text[:300]
    event(f"rpc {response.status_code}")
    if response.status_code == 204:
        assert isinstance(payload, list | dict) and payload, "204 only for notifications"
        assert depth(payload) <= 64, payload
        items = payload if isinstance(payload, list) else [payload]
        assert not any(expected_response(call)[0] for call in items), payload
        return
    assert response.status_code == 200, response.text[:300]
    reply = response.json()
    if isinstance(payload, bytes) or depth(payload) > 64 or not decodes(body):
        assert isinstance(reply, dict) and reply["error"]["code"] in (-32700, -32600), reply
        return
    if not isinstance(payload, list):
        wanted, call_id = expected_response(payload)
        assert wanted, reply
        check_rpc_response(reply, call_id)
        return
    if not payload or len(payload) > BATCH_MAX:
        assert reply["error"]["code"] == -32600 and reply["id"] is None, reply
        return
    expected = [call_id for wanted, call_id in map(expected_response, payload) if wanted]
    assert isinstance(reply, list) and len(reply) == len(expected), (payload, reply)
    for one, call_id in zip(reply, expected, strict=True):
        check_rpc_response(one, call_id)


# ----- regressions the first fuzz found ---------------------------------------------------------

ILLEGAL_TRANSITION = "illegal session transition"


def test_delete_after_stop_turn_on_an_inactive_session_is_legal(
    target: Target, socket: Socket
) -> None:
    created = socket.request({"type": "create_session", "agentType": "echo"}, target.next_id())
    session_id = created["session"]["id"]
    stopped = socket.request({"type": "stop_turn", "sessionId": session_id}, target.next_id())
    assert stopped["type"] == "ack"
    deleted = socket.request({"type": "delete_session", "sessionId": session_id}, target.next_id())
    assert deleted["type"] == "session_deleted", deleted
    time.sleep(0.2)
    logged = [
        line
        for line in target.gw.output().splitlines()
        if session_id in line and ILLEGAL_TRANSITION in line
    ]
    assert logged == [], logged


def test_stop_turn_on_an_inactive_session_does_not_activate_it(
    target: Target, socket: Socket
) -> None:
    created = socket.request({"type": "create_session", "agentType": "echo"}, target.next_id())
    before = target.metrics()["activeSessions"]
    for _ in range(3):
        stop = {"type": "stop_turn", "sessionId": created["session"]["id"]}
        assert socket.request(stop, target.next_id())["type"] == "ack"
    assert target.metrics()["activeSessions"] <= before


# ----- afterwards: still up, nothing logged as an error, back to the baseline -------------------


def test_gateway_survived_and_returned_to_its_baseline(target: Target, socket: Socket) -> None:
    pong = socket.request({"type": "ping", "ts": 42}, target.next_id())
    assert pong["type"] == "pong" and pong["ts"] == 42
    socket.ws.close()
    gw = target.gw
    assert gw.proc is not None and gw.proc.poll() is None
    health = httpx.get(f"{gw.url}/health", timeout=STEP_S)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    bad = [line for line in gw.output().splitlines() if BAD_LOG.search(line)]
    assert bad == [], bad[:5]
    # Sessions the fuzz activated go idle after 2 s; SSE streams and sockets are gone.
    base = target.baseline
    deadline = time.monotonic() + 30
    while True:
        metrics = target.metrics()
        settled = (
            metrics["connections"] == 0
            and metrics["activeSessions"] == 0
            and metrics["tasks"] <= base["tasks"] + 3
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert settled, (base, metrics)
    assert metrics["rssBytes"] - base["rssBytes"] < 64 * 1024 * 1024, (base, metrics)
