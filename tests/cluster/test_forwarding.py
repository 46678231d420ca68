"""Command forwarding between two instances through a real valkey-server: the owner's reply comes
back as if local, failures become `UPSTREAM_UNAVAILABLE` within a bound, and neither a request
nor a reply is lost, or run twice, across a reconnect of a subscriber."""

from __future__ import annotations

import asyncio
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from diminuendo.fleet.forwarding import Command, Forwarder, ForwardFailed, NotOwner
from diminuendo.local.valkey import LocalValkey
from diminuendo.protocol.errors import ErrorCode, GatewayError
from tests.cluster.conftest import Fleet, make_fleet
from tests.cluster.test_valkey_trouble import until

SESSION = "ses_f0f0f0f0f0f0f0f0"

Handler = Callable[[Command], Awaitable[dict[str, Any]]]


class Owner:
    """The owner's handler: records each command, answers by its `body["do"]`."""

    def __init__(self) -> None:
        self.ran: list[Command] = []
        self.release = asyncio.Event()

    async def __call__(self, command: Command) -> dict[str, Any]:
        self.ran.append(command)
        match command.body.get("do"):
            case "busy":
                raise GatewayError(ErrorCode.SESSION_BUSY, session_id=command.session_id)
            case "moved":
                raise NotOwner("lease lost")
            case "crash":
                raise RuntimeError("secret internals /srv/app.py line 3")
            case "wait":
                await self.release.wait()
        return {"accepted": True, "turnId": f"turn_{len(self.ran)}", "echo": command.body}


@pytest.fixture
async def pair(fleet: Fleet) -> AsyncIterator[tuple[Forwarder, Forwarder, Owner]]:
    """Instance A owns SESSION; instance B forwards to it."""
    owner = Owner()
    a = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-a", owner, timeout_s=5.0)
    b = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-b", _never_called, timeout_s=5.0)
    await a.start()
    await b.start()
    yield a, b, owner
    owner.release.set()
    await a.close()
    await b.close()


async def _never_called(command: Command) -> dict[str, Any]:
    raise AssertionError(f"B owns nothing, yet ran {command}")


def command(do: str = "", name: str = "run_turn") -> Command:
    return Command(
        session_id=SESSION,
        name=name,
        tenant_id="tenant-1",
        user_id="user-1",
        owner_token="7:inst-a",
        body={"text": "hello", "do": do},
    )


async def test_a_forwarded_command_is_answered_as_if_local(pair) -> None:
    _, b, owner = pair
    reply = await b.forward("7:inst-a", command())
    assert reply == {"accepted": True, "turnId": "turn_1", "echo": {"text": "hello", "do": ""}}
    assert owner.ran == [command()]  # the owner saw the sender's identity and lease

    with pytest.raises(GatewayError) as busy:
        await b.forward("7:inst-a", command("busy"))
    assert (busy.value.code, busy.value.session_id) == (ErrorCode.SESSION_BUSY, SESSION)
    assert busy.value.message == "A turn is already running in this session"

    with pytest.raises(NotOwner):
        await b.forward("7:inst-a", command("moved", name="steer"))

    with pytest.raises(GatewayError) as crash:
        await b.forward("7:inst-a", command("crash", name="stop_turn"))
    assert crash.value.code == ErrorCode.INTERNAL_ERROR
    assert crash.value.message == "Internal error" and "secret" not in str(crash.value)


async def test_only_runtime_commands_are_forwarded(pair) -> None:
    _, b, owner = pair
    with pytest.raises(ValueError):
        await b.forward("7:inst-a", command(name="delete_session"))
    assert owner.ran == []


async def test_an_owner_that_does_not_answer_in_time_is_a_clear_error(fleet: Fleet) -> None:
    owner = Owner()
    a = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-a", owner)
    b = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-b", _never_called, timeout_s=0.6)
    await a.start()
    await b.start()
    try:
        started = time.monotonic()
        with pytest.raises(ForwardFailed) as slow:
            await b.forward("7:inst-a", command("wait"))
        assert 0.55 < time.monotonic() - started < 1.5
        assert slow.value.reason == "timeout"
        assert slow.value.code == ErrorCode.UPSTREAM_UNAVAILABLE
        assert slow.value.to_frame("r1").retry_after_ms == 1000
        assert len(owner.ran) == 1
    finally:
        owner.release.set()
        await a.close()
        await b.close()


async def test_an_owner_gone_mid_request_fails_fast_not_at_the_timeout(fleet: Fleet) -> None:
    """The owner stops while running the command (its connections close, as a killed process's
    do): the sender learns it in about `absent_grace_s`, well before its 30 s timeout, with the
    time left on the owner's lease as `retryAfterMs`."""
    lease = await fleet.leases("inst-a").acquire(SESSION, 10_000)
    assert lease is not None
    owner = Owner()
    a = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-a", owner)
    b = Forwarder(
        fleet.client, fleet.url, fleet.keys, "inst-b", _never_called, timeout_s=30, absent_grace_s=1
    )
    await a.start()
    await b.start()
    try:
        forwarded = asyncio.create_task(b.forward(lease.token, command("wait")))
        await until(lambda: len(owner.ran) == 1)
        started = time.monotonic()
        await a.close()
        with pytest.raises(ForwardFailed) as gone:
            await asyncio.wait_for(forwarded, 5)
        assert time.monotonic() - started < 2.5 and gone.value.reason == "owner_gone"
        assert 5_000 < gone.value.retry_after_ms <= 10_000
    finally:
        await b.close()


async def test_a_request_sent_before_the_owner_listens_is_run_once_it_does(fleet: Fleet) -> None:
    owner = Owner()
    a = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-a", owner)
    b = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-b", _never_called, timeout_s=5)
    await b.start()
    try:
        forwarded = asyncio.create_task(b.forward("7:inst-a", command()))
        await asyncio.sleep(0.3)  # sent, nobody listening on A's inbox
        await a.start()
        assert (await asyncio.wait_for(forwarded, 5))["accepted"] is True
        assert len(owner.ran) == 1
    finally:
        await a.close()
        await b.close()


async def test_a_request_its_sender_gave_up_on_is_not_run_later(fleet: Fleet) -> None:
    owner = Owner()
    a = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-a", owner)
    b = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-b", _never_called, timeout_s=0.3)
    await b.start()
    try:
        with pytest.raises(ForwardFailed) as late:
            await b.forward("7:inst-a", command())
        assert late.value.reason == "timeout"
        await a.start()  # reads its inbox: the request is there, and stale
        await asyncio.sleep(0.2)
        assert owner.ran == []
    finally:
        await a.close()
        await b.close()


async def test_no_reply_is_lost_while_the_senders_subscriber_reconnects(pair, fleet) -> None:
    """The reply is published while B's subscriber is disconnected, so pub/sub drops it; B's
    bus reports the gap on reconnecting, B re-reads its inbox and finds the reply."""
    a, b, owner = pair
    forwarded = asyncio.create_task(b.forward("7:inst-a", command("wait")))
    await until(lambda: len(owner.ran) == 1)
    await fleet.client.client_kill_filter(_type="pubsub")  # both subscribers lose the connection
    await until(lambda: not b._bus.connected)
    owner.release.set()  # A replies now, at once, while B is not subscribed
    reply = await asyncio.wait_for(forwarded, 5)
    assert reply["turnId"] == "turn_1" and b._bus.reconnects == 1
    await until(lambda: a._bus.reconnects == 1 and a._bus.connected)
    await asyncio.sleep(0.2)  # A re-read its inbox too: the request there is not run again
    assert len(owner.ran) == 1


async def test_no_request_is_lost_while_the_owners_subscriber_reconnects(pair, fleet) -> None:
    a, b, owner = pair
    await fleet.client.client_kill_filter(_type="pubsub")
    await until(lambda: not a._bus.connected)
    reply = await asyncio.wait_for(b.forward("7:inst-a", command()), 5)  # A reads it on the gap
    assert reply["accepted"] is True and len(owner.ran) == 1


async def test_malformed_inbox_messages_are_dropped_and_the_inbox_keeps_working(
    pair, fleet
) -> None:
    _, b, owner = pair
    channel = fleet.keys.inbox("inst-a").channel
    for junk in (b"", b"not json", b'{"type":"req"}', b'{"type":"req","id":1}'):
        await fleet.client.publish(channel, junk)
    assert (await b.forward("7:inst-a", command()))["accepted"] is True
    assert len(owner.ran) == 1


async def test_forwarding_round_trip_on_loopback(pair, capsys) -> None:
    """The figure in docs/DECISIONS.md: a forwarded command's round trip (send script, pub/sub,
    handler, reply script, pub/sub) on one loopback Valkey, sequential requests."""
    _, b, _owner = pair
    times = []
    for _ in range(200):
        started = time.perf_counter()
        await b.forward("7:inst-a", command())
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    with capsys.disabled():
        print(f"\nforward round trip: p50 {p50:.2f} ms, p99 {p99:.2f} ms (200 sequential)")
    assert p50 < 50  # loose: a loaded shared machine; the real figure is printed


async def test_closing_the_sender_answers_its_waiting_requests(pair) -> None:
    _, b, _owner = pair
    forwarded = asyncio.create_task(b.forward("7:inst-a", command("wait")))
    await asyncio.sleep(0.1)
    await b.close()
    with pytest.raises(ForwardFailed) as closing:
        await asyncio.wait_for(forwarded, 2)
    assert closing.value.reason == "unavailable"


async def test_an_owner_killed_mid_request_is_found_gone(
    fleet: Fleet, valkey_server: LocalValkey
) -> None:
    """SIGKILL of the owner's process while it runs the command: the kernel closes its
    connections, its inbox loses its subscriber, and the sender fails in about
    `absent_grace_s` rather than at its timeout."""
    lease = await fleet.leases("inst-killed").acquire(SESSION, 10_000)
    assert lease is not None
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cluster.forward_owner",
        valkey_server.url,
        "inst-killed",
        stdout=asyncio.subprocess.PIPE,
    )
    b = Forwarder(
        fleet.client, fleet.url, fleet.keys, "inst-b", _never_called, timeout_s=30, absent_grace_s=1
    )
    try:
        assert await _line(owner) == "ready"
        await b.start()
        forwarded = asyncio.create_task(b.forward(lease.token, command("wait")))
        assert await _line(owner) == "ran run_turn"
        started = time.monotonic()
        owner.send_signal(signal.SIGKILL)
        with pytest.raises(ForwardFailed) as gone:
            await asyncio.wait_for(forwarded, 5)
        assert gone.value.reason == "owner_gone" and time.monotonic() - started < 2.5
    finally:
        if owner.returncode is None:
            owner.kill()
        await asyncio.wait_for(owner.wait(), 5)
        await b.close()


async def _line(process: asyncio.subprocess.Process, timeout_s: float = 10) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), timeout_s)).decode().strip()


async def test_valkey_down_is_a_clear_error_within_the_bound(own_valkey: LocalValkey) -> None:
    fleet = await make_fleet(own_valkey.url)
    b = Forwarder(fleet.client, fleet.url, fleet.keys, "inst-b", _never_called)
    await b.start()
    own_valkey.stop()
    try:
        started = time.monotonic()
        with pytest.raises(ForwardFailed) as down:
            await b.forward("7:inst-a", command())
        assert time.monotonic() - started < 1.0
        assert (down.value.reason, down.value.code) == (
            "unavailable",
            ErrorCode.UPSTREAM_UNAVAILABLE,
        )
        assert "127.0.0.1" not in down.value.message  # no server names to clients
    finally:
        await b.close()
        await fleet.client.aclose()
