"""Byte budgets, paged replies and replay, and no task left behind (PROTOCOL.md §5, §7, §13):
a client that stops reading can cost the gateway only its own `WS_SEND_BUFFER_BYTES`, no reply
is larger than `REPLY_MAX_BYTES`, a replay of any length arrives whole and in order, and a
socket that closes with work in flight leaves nothing running.

Every test runs against a production-mode gateway (`prod`) and the local stack. Sessions with
thousands of events come from the `slow` agent with a 4 KiB `pad`, which makes every delta its
own event (the coalescing window flushes at 4 KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Client
from tests.integration.test_sessions import join_ready, new_session

MiB = 1024 * 1024
PAD = 4096  # chars per delta: one event each (the coalescer flushes at 4 KiB)


def tiny_receive_buffer_socket(port: int) -> socket.socket:
    """A client socket whose kernel receive buffer is as small as Linux allows, so a client that
    stops reading makes the gateway hold the bytes instead of the kernel."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the gateway process, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


async def fill_session(c: Client, deltas: int, pad: int = PAD) -> tuple[str, int]:
    """A `slow` session whose turn published about `deltas` events at full speed; returns (id,
    last seq). `c` does not join: a burst of megabytes in a moment could make even a reading
    client a slow consumer under the small budgets these tests set."""
    session_id = await new_session(c, "slow")
    return session_id, await run_slow_turn(c, session_id, deltas, pad)


async def run_slow_turn(c: Client, session_id: str, deltas: int, pad: int = PAD) -> int:
    """Run a `slow` turn of about `deltas` events at full speed without joining (see
    `fill_session`) and return the session's last seq once it is over."""
    text = json.dumps({"deltas": deltas, "interval_ms": 0, "pad": pad})
    await c.request({"type": "run_turn", "sessionId": session_id, "text": text})
    async with asyncio.timeout(60):
        while True:
            listing = await c.request({"type": "list_sessions"})
            (meta,) = [s for s in listing["sessions"] if s["id"] == session_id]
            if meta["status"] == "ready":
                return meta["lastSeq"]
            await asyncio.sleep(0.2)


async def raw_reply(c: Client, message: dict[str, Any], request_id: str) -> tuple[str, dict]:
    """Send `message` and return its reply as received (text and decoded), skipping stream
    frames that arrive meanwhile."""
    await c.send({**message, "id": request_id})
    async with asyncio.timeout(10):
        while True:
            raw = await c.ws.recv()
            frame = json.loads(raw)
            if frame.get("id") == request_id:
                return raw, frame


async def read_until_closed(c: Client, timeout: float) -> int | None:
    """Read everything the gateway still sends; the close code it ended with (None: it never
    closed within `timeout`)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await c.ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006
    except TimeoutError:
        return None


async def test_clients_that_never_read_cannot_grow_memory(prod) -> None:
    """Five connections that never read each send `get_events {limit: 5000}` fifty times in nine
    seconds (within the rate limit) on a session holding thousands of events.

    Before the fix: each reply was one frame of the whole window (~8 MB), queued without a
    byte bound (the queue counted frames, 1,000): RSS passed the limit (86 MiB against 69)
    within two seconds, when the test stopped the flood, and no connection was closed."""
    budget = MiB
    p = prod(WS_SEND_BUFFER_BYTES="1MiB")
    token = p.token()
    async with p.client(token, max_size=None) as owner:
        session_id, _ = await fill_session(owner, 1500)
        chat_id = await new_session(owner, "echo")
        await join_ready(owner, chat_id)
    pid = p.gw.proc.pid
    await asyncio.sleep(0.5)
    baseline, hwm_before = rss_bytes(pid)
    limit = 5 * budget + 64 * MiB
    peak = baseline
    over = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_bytes(pid)[0])
            if peak - baseline > limit:
                over.set()  # stop the flood: the hole is shown, no need to take the machine
            await asyncio.sleep(0.05)

    async def flood(raw: Any) -> None:
        for n in range(50):
            if over.is_set():
                return
            request = {"type": "get_events", "sessionId": session_id, "afterSeq": 0}
            await raw.send(json.dumps({**request, "limit": 5000, "id": f"f{n}"}))
            await asyncio.sleep(9 / 50)

    async def well_behaved_turn() -> dict[str, Any]:
        async with p.client(token) as c:
            await join_ready(c, chat_id)
            await c.request({"type": "run_turn", "sessionId": chat_id, "text": "still here"})
            return (await c.recv_until("turn_complete", timeout=30))[-1]

    async with contextlib.AsyncExitStack() as stack:
        flooders = []
        for _ in range(5):
            raw = await stack.enter_async_context(
                connect(
                    p.gw.ws_url,
                    sock=tiny_receive_buffer_socket(p.gw.port),
                    max_queue=1,
                    max_size=None,
                    open_timeout=10,
                    additional_headers=p.headers(token),
                )
            )
            flooders.append(raw)
        watcher = asyncio.create_task(watch())
        try:
            turn, *_ = await asyncio.gather(well_behaved_turn(), *(flood(r) for r in flooders))
        finally:
            watcher.cancel()
        peak = max(peak, rss_bytes(pid)[1] if rss_bytes(pid)[1] > hwm_before else 0)
        assert peak - baseline < limit, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"
        assert turn["finalText"] == "still here"
        codes = await asyncio.gather(*(read_until_closed(Client(r), 30) for r in flooders))
    assert codes == [4008] * 5


async def test_get_events_pages_by_reply_bytes(prod) -> None:
    """`get_events` stops at `REPLY_MAX_BYTES` with `hasMore: true`; asking again from the last
    seq walks the whole window without a hole (an event larger than the cap comes alone).

    Before the fix: one reply carried every retained event (1.7 MB here against a 64 KiB cap)
    and had no `hasMore`."""
    cap = 64 * 1024
    p = prod(REPLY_MAX_BYTES="64KiB")
    async with p.client(p.token(), max_size=None) as c:
        session_id, last_seq = await fill_session(c, 200)
        after, seqs, pages = 0, [], 0
        while True:
            request = {"type": "get_events", "sessionId": session_id, "afterSeq": after}
            raw, reply = await raw_reply(c, {**request, "limit": 5000}, f"page{pages}")
            assert reply["type"] == "events", reply
            # A page stops at the cap; an event larger than a page (the `turn_complete`
            # repeating the whole text) comes alone.
            assert len(raw.encode()) <= cap or len(reply["events"]) == 1, len(raw)
            pages += 1
            seqs += [e["seq"] for e in reply["events"]]
            if not reply["hasMore"]:
                break
            after = reply["events"][-1]["seq"]
        assert seqs[0] == 1 and seqs == list(range(1, seqs[-1] + 1))
        assert seqs[-1] >= last_seq and pages > 5
        small = await c.request(
            {"type": "get_events", "sessionId": session_id, "afterSeq": last_seq - 2, "limit": 1}
        )
        assert [e["seq"] for e in small["events"]] == [last_seq - 1] and small["hasMore"] is True


async def test_read_file_larger_than_a_reply_is_file_too_large(prod) -> None:
    """A file over `REPLY_MAX_BYTES` is `FILE_TOO_LARGE` with `details.size`, for `read_file`
    and `file_at_iteration`; a smaller one is still read.

    Before the fix: the whole file came back in one reply."""
    p = prod(REPLY_MAX_BYTES="64KiB")
    async with p.client(p.token(), max_size=None) as c:
        session_id = await new_session(c, "demo")
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "x" * 100_000})
        await c.recv_until("question_requested", timeout=20)  # the file is written by now
        path = "demo/notes.md"
        for request in (
            {"type": "read_file", "sessionId": session_id, "path": path},
            {"type": "file_at_iteration", "sessionId": session_id, "path": path, "iteration": 1},
        ):
            reply = await c.request(request)
            assert reply["type"] == "error" and reply["code"] == "FILE_TOO_LARGE", reply
            assert reply["details"]["size"] > 100_000
            assert reply["sessionId"] == session_id

        other = await new_session(c, "demo")
        await join_ready(c, other)
        await c.request({"type": "run_turn", "sessionId": other, "text": "short"})
        await c.recv_until("question_requested", timeout=20)
        small = await c.request({"type": "read_file", "sessionId": other, "path": path})
        assert small["type"] == "file_content" and "short" in small["content"]


async def test_history_is_bounded_by_reply_bytes(prod) -> None:
    """`get_history` (WebSocket and REST) stays under `REPLY_MAX_BYTES`: the newest messages
    that fit, `hasMore: true`, and paging with `before` reaches the older ones. A single message
    larger than a reply is cut and marked `truncated`.

    Before the fix: every requested message came back, whatever its size."""
    cap = 64 * 1024
    p = prod(REPLY_MAX_BYTES="64KiB")
    token = p.token()
    async with p.client(token, max_size=None) as c:
        session_id = await new_session(c, "echo")
        await join_ready(c, session_id)
        # ~15 KB a message, twice per turn, in 150 pieces (the echo agent streams a word
        # every 5 ms: 3,000 short words made this test a minute long).
        words = " ".join(["w" * 99] * 150)
        for _ in range(4):
            await c.request({"type": "run_turn", "sessionId": session_id, "text": words})
            await c.recv_until("turn_complete", timeout=30)
        request = {"type": "get_history", "sessionId": session_id, "limit": 500}
        raw, first = await raw_reply(c, request, "h")
        assert len(raw.encode()) <= cap, len(raw)
        assert first["hasMore"] is True and 0 < len(first["messages"]) < 8
        older = await c.request(
            {
                "type": "get_history",
                "sessionId": session_id,
                "limit": 500,
                "before": first["messages"][0]["id"],
            }
        )
        seen = {m["id"] for m in first["messages"]} | {m["id"] for m in older["messages"]}
        assert len(seen) == len(first["messages"]) + len(older["messages"])

        async with p.http(token) as http:
            rest = await http.get(f"/api/threads/{session_id}/messages", params={"limit": 500})
        assert rest.status_code == 200 and len(rest.content) <= cap
        assert rest.json()["hasMore"] is True

        big = await new_session(c, "slow")
        await join_ready(c, big)
        text = json.dumps({"deltas": 40, "interval_ms": 0, "pad": PAD})
        await c.request({"type": "run_turn", "sessionId": big, "text": text})
        await c.recv_until("turn_complete", timeout=30)
        raw, cut = await raw_reply(c, {"type": "get_history", "sessionId": big}, "big")
        assert len(raw.encode()) <= cap, len(raw)
        assistant = cut["messages"][-1]
        assert assistant["role"] == "assistant" and assistant["truncated"] is True
        assert assistant["text"].startswith("d1.")


async def test_join_replay_longer_than_the_queue_arrives_whole_then_live(prod) -> None:
    """A `join_session {afterSeq: 0}` whose replay is 16 times the send queue and 6 times the
    byte budget (one frame, the `turn_complete` carrying the whole text, is 3 MB), while a turn
    streams live: every event arrives, in seq order, then the live ones, and the socket is not
    closed.

    Before the fix: the whole replay was queued at once and the connection was closed with
    4008 (slow consumer) before the first page was read."""
    p = prod(WS_SEND_QUEUE_MAX="50", WS_SEND_BUFFER_BYTES="1MiB")
    token = p.token()
    async with p.client(token, max_size=None) as owner:
        session_id, _ = await fill_session(owner, 800)
        live = json.dumps({"deltas": 300, "interval_ms": 2})
        started = await owner.request({"type": "run_turn", "sessionId": session_id, "text": live})
        async with connect(
            p.gw.ws_url,
            sock=tiny_receive_buffer_socket(p.gw.port),  # reads, but over a narrow pipe
            max_size=None,
            open_timeout=10,
            additional_headers=p.headers(token),
        ) as raw:
            late = Client(raw)
            for _ in range(3):
                await late.recv()
            snapshot = await late.request(
                {"type": "join_session", "sessionId": session_id, "afterSeq": 0}
            )
            assert snapshot["type"] == "state_snapshot" and snapshot["gap"] is False
            frames = await late.recv_until(
                lambda f: f.get("type") == "turn_complete" and f["turnId"] == started["turnId"],
                timeout=60,
            )
    seqs = [f["seq"] for f in frames if "seq" in f]
    assert seqs == list(range(1, len(seqs) + 1)), "every event, in order, no duplicate"
    texts = [f["text"] for f in frames if f.get("type") == "text_delta"]
    assert "".join(texts[800:]) == frames[-1]["finalText"]


async def read_sse_frames(lines: Any, until_seq: int, timeout: float) -> list[dict[str, Any]]:
    events, current = [], {}
    async with asyncio.timeout(timeout):
        async for line in lines:
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append(current)
                    if int(current.get("id", 0)) >= until_seq:
                        return events
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    return events


async def test_sse_resume_far_behind_replays_everything(prod) -> None:
    """An SSE stream resumed with a `Last-Event-ID` 800 events behind (eight times the send
    queue, three times the byte budget) receives every retained event in order, then live ones.

    Before the fix: the replay overflowed the subscriber's buffer before anything was written,
    and the answer was a 200 with an empty body (the client retried forever)."""
    p = prod(WS_SEND_QUEUE_MAX="100", WS_SEND_BUFFER_BYTES="1MiB")
    token = p.token()
    async with p.client(token, max_size=None) as owner:
        session_id, last_seq = await fill_session(owner, 800)
        async with (
            p.http(token) as http,
            http.stream(
                "GET",
                f"/api/threads/{session_id}/events",
                headers={"Last-Event-ID": "1"},
                timeout=httpx.Timeout(30),
            ) as stream,
        ):
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            replayed = await read_sse_frames(lines, last_seq, timeout=30)
            assert replayed[0]["event"] == "state_snapshot"
            assert json.loads(replayed[0]["data"])["gap"] is False
            seqs = [int(e["id"]) for e in replayed if "id" in e]
            assert seqs == list(range(2, last_seq + 1))
            await owner.request({"type": "run_turn", "sessionId": session_id, "text": "{}"})
            live = await read_sse_frames(lines, last_seq + 3, timeout=20)
            assert [int(e["id"]) for e in live if "id" in e][:3] == [
                last_seq + 1,
                last_seq + 2,
                last_seq + 3,
            ]


async def test_sse_stream_that_never_reads_ends_at_the_byte_budget(prod) -> None:
    """An SSE client that stops reading while a turn streams 14 MB: the gateway holds at most
    `WS_SEND_BUFFER_BYTES` for it and ends the stream.

    Before the fix: the stream held up to 1,000 frames whatever their size (here all 900, and
    the 14 MB `turn_complete`) and never ended; the client received all 29 MB."""
    p = prod(WS_SEND_BUFFER_BYTES="1MiB")
    token = p.token()
    async with p.client(token, max_size=None) as owner:
        session_id = await new_session(owner, "slow")
        sock = tiny_receive_buffer_socket(p.gw.port)
        sock.setblocking(True)
        sock.sendall(
            (
                f"GET /api/threads/{session_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await asyncio.sleep(0.5)  # subscribed
        # The owner does not join: under the same 1 MiB budget a loaded machine could make even
        # a reading client a slow consumer of this burst.
        await run_slow_turn(owner, session_id, 900, pad=16_000)

    def drain() -> tuple[int, bool]:
        sock.settimeout(10)
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError) as exc:
            return received, not isinstance(exc, TimeoutError)
        finally:
            sock.close()
        return received, True

    received, ended = await asyncio.to_thread(drain)
    assert ended, f"the stream was still open after {received} bytes"
    assert received < 1 * MiB + 8 * MiB, received  # the budget plus the kernel's buffers


async def health_tasks(http: httpx.AsyncClient) -> tuple[int, int]:
    metrics = (await http.get("/health")).json()["metrics"]
    return metrics["tasks"], metrics["connections"]


async def test_closing_with_handlers_in_flight_leaves_no_task(prod) -> None:
    """Fifty times: open `/ws`, send `join_session`, `run_turn`, `get_events` and `list_files`
    back to back and close at once. With no connection left, the asyncio task count in
    `/health` returns to its baseline.

    Before the fix: 64 tasks against a baseline of 6, with no connection left, on a loaded
    machine (on a quiet one the churn often passes before the fix too: it takes a close that
    overtakes the handler). The left tasks were Sanic's, each holding a message the client had
    sent: the handler had stopped reading, and they waited forever for it to fetch them.

    (`close_timeout=1`: the client itself stops reading, so with many unread frames it may not
    see the gateway's close frame and waits out its close timeout.)"""
    p = prod(WS_RATE_LIMIT="1000/10s")
    token = p.token()
    async with p.client(token) as c:
        session_id = await new_session(c, "echo")
        await join_ready(c, session_id)
        await c.request({"type": "run_turn", "sessionId": session_id, "text": "warm"})
        await c.recv_until("turn_complete")
    async with p.http() as http:
        await asyncio.sleep(1.0)  # background record writes settle
        baseline, connections = await health_tasks(http)
        assert connections == 0
        for n in range(50):
            async with p.client(token, close_timeout=1) as c:
                for message in (
                    {"type": "join_session", "sessionId": session_id, "afterSeq": 0},
                    {"type": "run_turn", "sessionId": session_id, "text": f"turn {n}"},
                    {"type": "get_events", "sessionId": session_id, "afterSeq": 0},
                    {"type": "list_files", "sessionId": session_id},
                ):
                    await c.send(message)
        deadline = time.monotonic() + 20
        while True:
            tasks, connections = await health_tasks(http)
            if connections == 0 and tasks <= baseline:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{tasks} tasks against a baseline of {baseline}")
            await asyncio.sleep(0.3)
