"""`diminuendo.client` and `diminuendo client` against the real gateway, through real sockets.

Every method of `DiminuendoClient` is used at least once; the reconnect recipe is checked by
dropping the client's own socket at random moments (transport abort: the server sees an
abnormal close) and asserting the subscription still yields every `seq` once, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from diminuendo.client import (
    ConnectionFailed,
    ConnectionLost,
    DiminuendoClient,
    Gap,
    ReconnectPolicy,
    ServerError,
    Subscription,
)
from diminuendo.client.events import (
    ApprovalResolved,
    Event,
    QuestionRequested,
    SessionState,
    TextDelta,
    TurnComplete,
    TurnStarted,
)
from diminuendo.settings import LOCAL_STACK_SECRETS_KEY
from tests.conftest import Gateway, free_port

# Reconnect at once (10-20 ms), so many drops fit in a short turn.
FAST = ReconnectPolicy(initial_delay_s=0.02, max_delay_s=0.2)


def slow(deltas: int, interval_ms: int) -> str:
    return json.dumps({"deltas": deltas, "interval_ms": interval_ms})


def drop(client: DiminuendoClient) -> None:
    """Kill the socket from the client side without a close frame."""
    assert client.websocket is not None
    client.websocket.transport.abort()


async def until_turn_ends(subscription: Subscription, turn_id: str) -> list[Event | Gap]:
    items: list[Event | Gap] = []
    async for item in subscription:
        items.append(item)
        if isinstance(item, TurnComplete) and item.turn_id == turn_id:
            return items
    raise AssertionError("subscription ended before the turn")


async def reconnected(client: DiminuendoClient, count: int) -> None:
    """Wait until the client has re-established its connection `count` times in all."""
    while client.reconnects < count:  # noqa: ASYNC110 - a counter to poll, not an event
        await asyncio.sleep(0.002)


def assert_consecutive(seqs: list[int]) -> None:
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


# ----- requests ---------------------------------------------------------------------------


async def test_handshake_identity_and_ping(gateway: Gateway) -> None:
    async with (
        asyncio.timeout(10),
        DiminuendoClient.connect(gateway.ws_url) as client,
    ):
        assert client.identity is not None and client.identity.user_id == "dev-user-001"
        assert client.identity.role == "owner" and client.server_version
        pong = await client.ping(ts=42)
        assert pong.ts == 42 and pong.server_ts > 0


async def test_session_lifecycle(gateway: Gateway) -> None:
    async with asyncio.timeout(20), DiminuendoClient.connect(gateway.ws_url) as client:
        session = await client.create_session("echo", name="first", metadata={"k": 1})
        assert session.agent_type == "echo" and session.status == "inactive"
        assert session.metadata == {"k": 1}
        renamed = await client.rename_session(session.id, "second")
        assert renamed.id == session.id and renamed.name == "second"
        assert session.id in [s.id for s in await client.list_sessions()]

        await client.archive_session(session.id)
        assert session.id not in [s.id for s in await client.list_sessions()]
        archived = await client.list_sessions(include_archived=True)
        assert [s.archived for s in archived if s.id == session.id] == [True]
        await client.unarchive_session(session.id)
        assert session.id in [s.id for s in await client.list_sessions()]

        with pytest.raises(ServerError) as invalid:
            await client.rename_session(session.id, "")
        assert invalid.value.code == "INVALID_MESSAGE"
        with pytest.raises(ServerError) as unknown:
            await client.create_session("no-such-agent")
        assert unknown.value.code == "INVALID_MESSAGE" and "no-such-agent" in unknown.value.message

        await client.delete_session(session.id)
        with pytest.raises(ServerError) as gone:
            await client.join(session.id)
        assert gone.value.code == "SESSION_NOT_FOUND" and gone.value.session_id == session.id
        assert await client.ping()  # the client is still usable after errors


async def test_echo_turn_history_events_and_leave(gateway: Gateway) -> None:
    text = "Hello there, client!  Streaming   works."
    async with asyncio.timeout(20), DiminuendoClient.connect(gateway.ws_url) as client:
        session = await client.create_session("echo")
        events = [e async for e in client.stream_turn(session.id, text, client_turn_id="mine")]
        started, complete = events[0], events[-1]
        assert isinstance(started, TurnStarted) and started.client_turn_id == "mine"
        assert isinstance(complete, TurnComplete) and complete.stop_reason == "end_turn"
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text
        assert complete.final_text == text
        seqs = [e.seq for e in events if not isinstance(e, Gap)]
        assert_consecutive(seqs)

        history = await client.get_history(session.id, limit=10)
        assert [(m.role, m.text) for m in history.messages] == [("user", text), ("assistant", text)]
        assert history.messages[0].turn_id == started.turn_id and not history.has_more

        page = await client.get_events(session.id, seqs[0] - 1, epoch="another", limit=5)
        assert page.gap and page.events == []
        page = await client.get_events(session.id, seqs[0] - 1, epoch=page.epoch, limit=500)
        assert not page.gap and page.last_seq >= seqs[-1]
        assert [e.seq for e in page.events][: len(seqs)] == seqs
        assert [e.type for e in page.events][: len(seqs)] == [e.type for e in events]

        # stream_turn left the session (its only subscription); joining and leaving again works.
        subscription = await client.join(session.id)
        assert subscription.snapshot is not None and subscription.snapshot.last_seq >= seqs[-1]
        await client.leave(session.id)
        assert [e async for e in subscription] == []  # leaving ends the iteration


async def test_demo_turn_answer_waiting_and_files(gateway: Gateway) -> None:
    async with asyncio.timeout(30), DiminuendoClient.connect(gateway.ws_url) as client:
        session = await client.create_session("demo")
        events: list[Event | Gap] = []
        async for event in client.stream_turn(session.id, "hello"):
            events.append(event)
            if isinstance(event, QuestionRequested):
                (question,) = event.questions
                assert question.options == ["keep", "discard"]
                # Whoever joins now finds the question pending in the snapshot.
                async with DiminuendoClient.connect(gateway.ws_url) as other:
                    snapshot = (await other.join(session.id)).snapshot
                assert snapshot is not None and snapshot.current_turn is not None
                assert snapshot.current_turn.turn_id == event.turn_id
                assert [p.request_id for p in snapshot.pending] == [event.request_id]
                await client.answer_question(
                    session.id, event.request_id, answers={question.id: question.options[0]}
                )
        types = [e.type for e in events]
        for family in (
            "sandbox.init",
            "thinking.progress",
            "plan.created",
            "plan.step_completed",
            "tool_call_start",
            "tool_call_delta",
            "tool_call",
            "tool_result",
            "terminal.stream",
            "terminal.complete",
            "file_changed",
            "question_requested",
            "approval_resolved",
            "usage_update",
        ):
            assert family in types, family
        asked = types.index("question_requested")
        states = [(i, e.state) for i, e in enumerate(events) if isinstance(e, SessionState)]
        assert any(state == "waiting" and i > asked for i, state in states)
        resolved = next(e for e in events if isinstance(e, ApprovalResolved))
        assert resolved.answers == {"q1": "keep"}
        complete = events[-1]
        assert isinstance(complete, TurnComplete) and "you answered keep" in complete.final_text

        entries = await client.list_files(session.id, depth=2)
        assert ("demo/notes.md", "file") in [(e.path, e.type) for e in entries]
        latest = await client.read_file(session.id, "demo/notes.md")
        assert latest.encoding == "utf-8" and ": hello" in latest.content
        (iteration,) = await client.file_history(session.id, "demo/notes.md")
        assert iteration.iteration == 1 and iteration.size == latest.size
        first = await client.file_at_iteration(session.id, "demo/notes.md", 1)
        assert first.iteration == 1 and first.content == latest.content
        with pytest.raises(ServerError) as missing:
            await client.read_file(session.id, "demo/missing.md")
        assert missing.value.code == "FILE_NOT_FOUND"


async def test_steer_stop_and_busy(gateway: Gateway) -> None:
    async with asyncio.timeout(20), DiminuendoClient.connect(gateway.ws_url) as client:
        session = await client.create_session("slow")
        async with client.join(session.id) as subscription:
            started = await client.run_turn(session.id, slow(500, 10))
            with pytest.raises(ServerError) as busy:
                await client.run_turn(session.id, "again")
            assert busy.value.code == "SESSION_BUSY"
            await client.steer(session.id, "left")
            steered = False
            async for event in subscription:
                if isinstance(event, TextDelta) and "[steer: left]" in event.text:
                    steered = True
                    await client.stop_turn(session.id)
                if isinstance(event, TurnComplete) and event.turn_id == started.turn_id:
                    break
            assert steered and event.stop_reason == "cancelled"
            await client.stop_turn(session.id)  # idempotent without a running turn


async def test_manage_members(gateway: Gateway) -> None:
    user = f"auth0|client-{uuid.uuid4().hex[:8]}"
    async with asyncio.timeout(10), DiminuendoClient.connect(gateway.ws_url) as client:
        members = await client.manage_members("add", user_id=user, role="viewer")
        assert {"userId": user, "role": "viewer"} in [
            {"userId": m.user_id, "role": m.role} for m in members
        ]
        await client.manage_members("update", user_id=user, role="developer")
        assert (user, "developer") in [(m.user_id, m.role) for m in await client.manage_members()]
        members = await client.manage_members("remove", user_id=user)
        assert user not in [m.user_id for m in members]


async def test_raw_request_for_any_message(gateway: Gateway) -> None:
    async with asyncio.timeout(10), DiminuendoClient.connect(gateway.ws_url) as client:
        reply = await client.request({"type": "list_sessions", "includeArchived": True})
        assert reply.type == "session_list"
        with pytest.raises(ServerError) as error:
            await client.request({"type": "no_such_message"})
        assert error.value.code == "INVALID_MESSAGE"


# ----- connecting -------------------------------------------------------------------------


async def test_connection_refused_names_the_url() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(ConnectionFailed, match="connection refused") as failed:
        async with DiminuendoClient.connect(url):
            pass
    assert url in str(failed.value)


async def test_unsupported_protocol_version_is_refused(gateway: Gateway) -> None:
    with pytest.raises(ServerError) as refused:
        async with DiminuendoClient.connect(gateway.ws_url, protocol_version=2):
            pass
    assert refused.value.code == "PROTOCOL_VERSION_MISMATCH"


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """A local Auth0 stand-in: serves the JWKS of a fresh key the test signs tokens with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = json.dumps(
        {"keys": [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}]}
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", key
    server.shutdown()
    server.server_close()


async def test_authenticate_when_required_and_again_after_a_drop(start_gateway, jwks_server):
    domain, key = jwks_server
    gw = start_gateway(
        DEV_MODE="false",
        AUTH0_DOMAIN=domain,
        AUTH0_AUDIENCE="https://diminuendo.test",
        PODIUM_SECRETS_KEY=LOCAL_STACK_SECRETS_KEY,
    )
    now = int(time.time())
    claims = {
        "iss": f"{domain}/",
        "aud": "https://diminuendo.test",
        "sub": "auth0|client-test",
        "iat": now,
        "exp": now + 600,
        "https://diminuendo/tenant_id": "client-tenant",
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    async with asyncio.timeout(20):
        with pytest.raises(ServerError) as missing:
            async with DiminuendoClient.connect(gw.ws_url):
                pass
        assert missing.value.code == "NOT_AUTHENTICATED"
        with pytest.raises(ServerError) as bad:
            async with DiminuendoClient.connect(gw.ws_url, token=token[:-4] + "AAAA"):
                pass
        assert bad.value.code == "AUTH_FAILED"

        async with DiminuendoClient.connect(gw.ws_url, token=token, reconnect=FAST) as client:
            assert client.identity is not None
            assert (client.identity.user_id, client.identity.tenant_id) == (
                "auth0|client-test",
                "client-tenant",
            )
            assert client.identity.role == "viewer"
            with pytest.raises(ServerError) as forbidden:
                await client.create_session("echo")
            assert forbidden.value.code == "FORBIDDEN"
            drop(client)
            await reconnected(client, 1)
            assert await client.list_sessions() == []  # on the re-authenticated socket


async def test_gives_up_after_bounded_attempts(start_gateway) -> None:
    gw = start_gateway()
    brief = ReconnectPolicy(max_attempts=3, initial_delay_s=0.02, max_delay_s=0.05)
    async with (
        asyncio.timeout(20),
        DiminuendoClient.connect(gw.ws_url, reconnect=brief) as client,
    ):
        session = await client.create_session("echo")
        subscription = await client.join(session.id)
        await asyncio.to_thread(gw.stop)
        with pytest.raises(ConnectionLost, match="could not reconnect"):
            async for _ in subscription:
                pass
        with pytest.raises(ConnectionLost, match="could not reconnect"):
            await client.ping()
        assert client.reconnects == 0


# ----- reconnect --------------------------------------------------------------------------


async def test_subscription_survives_50_random_drops(gateway: Gateway) -> None:
    """10 slow turns, 5 drops each at random moments (mid-stream, mid-rejoin, between
    events): every seq is yielded exactly once, in order, and each turn's text is whole."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    turns, drops_per_turn = 10, 5
    async with (
        asyncio.timeout(60),
        DiminuendoClient.connect(gateway.ws_url, reconnect=FAST) as client,
    ):
        session = await client.create_session("slow")

        async def dropper() -> None:
            for _ in range(drops_per_turn):
                await asyncio.sleep(rng.uniform(0.005, 0.1))
                count = client.reconnects + 1
                drop(client)
                await reconnected(client, count)

        async with client.join(session.id) as subscription:
            seqs: list[int] = []
            for turn in range(turns):
                started = await client.run_turn(session.id, slow(60, 15))
                dropping = asyncio.create_task(dropper())
                items = await until_turn_ends(subscription, started.turn_id)
                await dropping
                assert not [i for i in items if isinstance(i, Gap)], f"seed {seed} turn {turn}"
                seqs += [i.seq for i in items if not isinstance(i, Gap)]
                assert_consecutive(seqs)
                text = "".join(
                    i.text
                    for i in items
                    if isinstance(i, TextDelta) and i.turn_id == started.turn_id
                )
                complete = items[-1]
                assert isinstance(complete, TurnComplete)
                assert text == complete.final_text, f"seed {seed} turn {turn}"
                assert text == "".join(f"d{n} " for n in range(1, 61))
        assert client.reconnects == turns * drops_per_turn


async def test_gap_when_the_replay_window_moved_on(start_gateway) -> None:
    gw = start_gateway(REPLAY_MAX_EVENTS="20")
    # Stay away 0.5 to 1 s: at one delta per 10 ms the 20-event window overflows meanwhile.
    away = ReconnectPolicy(initial_delay_s=1.0, max_delay_s=1.0)
    async with (
        asyncio.timeout(30),
        DiminuendoClient.connect(gw.ws_url, reconnect=away) as client,
    ):
        session = await client.create_session("slow")
        async with client.join(session.id) as subscription:
            started = await client.run_turn(session.id, slow(200, 10))
            items: list[Event | Gap] = []
            async for item in subscription:
                items.append(item)
                if len(items) == 5:
                    drop(client)
                if isinstance(item, TurnComplete) and item.turn_id == started.turn_id:
                    break
        gaps = [i for i in items if isinstance(i, Gap)]
        assert len(gaps) == 1 and client.reconnects == 1
        (gap,) = gaps
        assert gap.epoch == gap.previous_epoch and gap.previous_seq is not None
        assert gap.last_seq - gap.previous_seq > 20 and gap.snapshot.gap
        after = items[items.index(gap) + 1 :]
        assert after[0].seq > gap.previous_seq + 1  # the hole the gap announced
        assert_consecutive([i.seq for i in after])
        assert_consecutive([i.seq for i in items[: items.index(gap)]])
        # The caller rebuilds what it missed from the durable history.
        history = await client.get_history(session.id)
        assert history.messages[-1].text == items[-1].final_text

        # stream_turn yields the gap too, and still ends with the turn, even one that finished
        # while the client was away (its end is among the events the server could replay).
        streamed: list[Event | Gap] = []
        async for item in client.stream_turn(session.id, slow(60, 5)):
            streamed.append(item)
            if len(streamed) == 3:
                drop(client)
        assert [type(i) for i in streamed].count(Gap) == 1 and client.reconnects == 2
        assert isinstance(streamed[-1], TurnComplete)
        assert streamed[-1].final_text == "".join(f"d{n} " for n in range(1, 61))


async def restart_mid_turn(
    gw: Gateway, client: DiminuendoClient, subscription: Subscription
) -> tuple[TurnStarted, Gap]:
    """Run a long turn, restart the gateway (SIGTERM: clients get 1001) on the same port after
    a few events, and read until the client has re-joined: up to and including the `Gap`.

    The turn lasts 30 s, longer than any restart: with a 10 s turn a gateway slow to start on a
    loaded machine found the turn already over."""
    started = await client.run_turn(subscription.session_id, slow(3000, 10))
    seen = 0
    async for item in subscription:
        seen += 1
        if seen == 5:
            await asyncio.to_thread(gw.stop)
            await asyncio.to_thread(gw.start)
        if isinstance(item, Gap):
            return started, item
    raise AssertionError("subscription ended")


PATIENT = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.5, max_attempts=100)


async def test_gateway_restart_mid_turn_is_a_gap_into_a_new_epoch(start_gateway) -> None:
    """The restarted gateway has a new epoch, so the re-join is a gap; the turn kept running
    in the runtime and streams on, numbered from 1 in the new epoch."""
    gw = start_gateway()
    async with (
        asyncio.timeout(30),
        DiminuendoClient.connect(gw.ws_url, reconnect=PATIENT) as client,
    ):
        session = await client.create_session("slow")
        async with client.join(session.id) as subscription:
            started, gap = await restart_mid_turn(gw, client, subscription)
            assert gap.epoch != gap.previous_epoch and gap.snapshot.gap
            assert client.reconnects == 1
            after: list[Event | Gap] = []
            async for item in subscription:
                after.append(item)
                if len([i for i in after if isinstance(i, TextDelta)]) == 20:
                    break
        assert_consecutive([i.seq for i in after])
        assert after[0].seq == gap.last_seq + 1
        numbers = [
            int(piece[1:])
            for i in after
            if isinstance(i, TextDelta) and i.turn_id == started.turn_id
            for piece in i.text.split()
        ]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


async def test_turn_in_flight_across_a_restart_can_be_stopped(start_gateway) -> None:
    gw = start_gateway()
    async with (
        asyncio.timeout(30),
        DiminuendoClient.connect(gw.ws_url, reconnect=PATIENT) as client,
    ):
        session = await client.create_session("slow")
        async with client.join(session.id) as subscription:
            started, _ = await restart_mid_turn(gw, client, subscription)
            async for item in subscription:
                if isinstance(item, SessionState) and item.state == "ready":
                    break
            with pytest.raises(ServerError) as busy:  # §5: run_turn while a turn runs
                await client.run_turn(session.id, "again")
            assert busy.value.code == "SESSION_BUSY"
            await client.stop_turn(session.id)  # §5: the turn ends with stopReason cancelled
            async for item in subscription:
                if isinstance(item, TurnComplete) and item.turn_id == started.turn_id:
                    assert item.stop_reason == "cancelled"
                    break


async def test_a_silent_server_is_stale_after_heartbeat_plus_5s(start_gateway) -> None:
    """§6: a client that hears nothing for the heartbeat interval + 5 s (here 1 + 5) treats the
    socket as stale. A frozen (SIGSTOP) gateway sends nothing, not even a TCP reset."""
    gw = start_gateway(WS_HEARTBEAT_INTERVAL="1")
    async with (
        asyncio.timeout(30),
        DiminuendoClient.connect(gw.ws_url, reconnect=FAST) as client,
    ):
        session = await client.create_session("echo")
        subscription = await client.join(session.id)
        stale_socket = client.websocket
        assert stale_socket is not None
        loop = asyncio.get_running_loop()
        os.kill(gw.proc.pid, signal.SIGSTOP)
        frozen_at = loop.time()
        try:
            await asyncio.wait_for(stale_socket.wait_closed(), 15)
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        # The last heartbeat came at most 1 s before the freeze: 5 to 6 s of silence after it.
        assert 4.5 < loop.time() - frozen_at < 9
        await reconnected(client, 1)
        events = [e async for e in client.stream_turn(session.id, "still here")]
        assert events[-1].final_text == "still here"
        assert subscription.snapshot is not None and not subscription.snapshot.gap


async def test_two_clients_see_the_same_stream(gateway: Gateway) -> None:
    async with (
        asyncio.timeout(20),
        DiminuendoClient.connect(gateway.ws_url) as a,
        DiminuendoClient.connect(gateway.ws_url) as b,
    ):
        session = await a.create_session("slow")
        async with a.join(session.id) as sub_a, b.join(session.id) as sub_b:
            started = await a.run_turn(session.id, slow(40, 5))
            seen_a, seen_b = await asyncio.gather(
                until_turn_ends(sub_a, started.turn_id), until_turn_ends(sub_b, started.turn_id)
            )

    def from_turn(items: list[Event | Gap]) -> list[tuple[int, str]]:
        pairs = [(i.seq, i.type) for i in items if not isinstance(i, Gap)]
        return [p for p in pairs if p[0] >= started.seq]

    assert from_turn(seen_a) == from_turn(seen_b)
    assert from_turn(seen_a)[0] == (started.seq, "turn_started")


# ----- the command line -------------------------------------------------------------------


def cli(gateway: Gateway | None, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIMINUENDO_URL": url or (gateway.ws_url if gateway else "")}
    return subprocess.run(
        [sys.executable, "-m", "diminuendo", "client", *args],
        env=env,
        stdin=subprocess.DEVNULL,  # not a terminal: questions are answered automatically
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_chat_list_and_history(gateway: Gateway) -> None:
    chat = cli(gateway, "chat", "demo", "hello")
    assert chat.returncode == 0, chat.stderr
    out = chat.stdout
    session_id = out.split("[session] ", 1)[1].split()[0]
    for expected in (
        "[thinking] Reading the request.",
        "[plan] 1. Look around the workspace",
        '[tool] bash {"command": "ls -R /workspace"}',
        "[terminal] exit 0",
        "[file] demo/notes.md changed (iteration 1)",
        "[question] Keep the notes file? [keep / discard]",
        "[answer] keep",
        "Done: I looked around, updated demo/notes.md (iteration 1) and you answered keep.",
        "[usage] ",
        "[done] end_turn",
    ):
        assert expected in out, (expected, out)
    assert out.index("[question]") < out.index("Done: I looked") < out.index("[done]")

    listing = cli(gateway, "list")
    assert listing.returncode == 0 and session_id in listing.stdout
    history = cli(gateway, "history", session_id)
    assert history.returncode == 0, history.stderr
    assert "user: hello" in history.stdout and "assistant: Done: I looked" in history.stdout
    assert "[tool] append_file" in history.stdout

    events = cli(gateway, "events", session_id, "--after", "0")
    assert events.returncode == 0, events.stderr
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert_consecutive([e["seq"] for e in lines])
    assert {"question_requested", "turn_complete"} <= {e["type"] for e in lines}


def test_cli_create_and_run(gateway: Gateway) -> None:
    created = cli(gateway, "create", "echo", "--name", "from-cli")
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    run = cli(gateway, "run", session_id, "one two three")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("one two three") and "[done] end_turn" in run.stdout


def test_cli_errors_are_one_line_and_exit_1(gateway: Gateway) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    refused = cli(None, "list", url=url)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error: cannot connect to {url}: connection refused"
    missing = cli(gateway, "history", "ses_missing")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: SESSION_NOT_FOUND: Session not found"
