"""Tracing end to end: spans leave over real OTLP/HTTP and arrive at a real receiver.

`test_otlp_exporter_*` drives `observability.tracing` in-process against the receiver — the
production exporter path, no gateway. The gateway tests run a real gateway process with
`OTEL_EXPORTER_OTLP_ENDPOINT` set, drive an echo turn over the WebSocket, stop the gateway (which
flushes) and check what arrived: a span per client message, upstream spans as their children,
and trace ids in the JSON log lines.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from diminuendo.observability import tracing
from tests.conftest import Stack, client, gateway_process
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

SERVICE = "diminuendo-test"
MESSAGE_SPANS = ("ws create_session", "ws join_session", "ws run_turn")
UPSTREAM_SPANS = ("unison PUT", "podium POST")
ARRIVAL_TIMEOUT_S = 5.0


# ----- the exporter path, in process ------------------------------------------------------------


def test_otlp_exporter_delivers_nested_spans_to_the_receiver() -> None:
    with OtlpReceiver() as receiver:
        tracing.configure_tracing(receiver.endpoint + "/", "diminuendo-inproc")
        try:
            headers: dict[str, str] = {}
            with (
                tracing.span("ws run_turn", kind="server", session_id="s1"),
                tracing.span("podium POST", kind="client", url_path="/api/v1/instances"),
            ):
                tracing.inject_headers(headers)
            with pytest.raises(KeyError), tracing.span("ws get_history"):
                raise KeyError("missing")
        finally:
            tracing.shutdown_tracing()
        spans = receiver.wait_for(lambda s: len(s) >= 3, ARRIVAL_TIMEOUT_S)
    assert receiver.errors == []
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"ws run_turn", "podium POST", "ws get_history"}
    outer, inner = by_name["ws run_turn"], by_name["podium POST"]
    assert inner.parent_span_id == outer.span_id and outer.parent_span_id is None
    assert inner.trace_id == outer.trace_id
    assert headers["traceparent"].split("-")[1:3] == [inner.trace_id, inner.span_id]
    assert outer.attributes == {"session.id": "s1"}
    assert inner.attributes == {"url.path": "/api/v1/instances"}
    assert {s.service_name for s in spans} == {"diminuendo-inproc"}
    assert by_name["ws get_history"].status_code == 2  # STATUS_CODE_ERROR


def test_otlp_exporter_shutdown_is_bounded_without_a_collector() -> None:
    with OtlpReceiver() as receiver:
        endpoint = receiver.endpoint
    # The receiver is gone: the port refuses connections.
    tracing.configure_tracing(endpoint, "nobody-listens")
    with tracing.span("lost"):
        pass
    started = time.monotonic()
    tracing.shutdown_tracing()
    assert time.monotonic() - started < tracing.SHUTDOWN_TIMEOUT_S + 1.0


# ----- the gateway, end to end ------------------------------------------------------------------


@dataclass
class TracedRun:
    spans: list[ReceivedSpan]
    log: str
    session_id: str


async def _echo_turn(ws_url: str) -> str:
    async with client(ws_url) as c:
        created = await c.request({"type": "create_session", "agentType": "echo", "name": "traced"})
        assert created["type"] == "session_created", created
        session_id = created["session"]["id"]
        snapshot = await c.request({"type": "join_session", "sessionId": session_id})
        assert snapshot["type"] == "state_snapshot", snapshot
        await c.recv_until(lambda f: f.get("type") == "session_state" and f["state"] == "ready")
        await c.send({"type": "run_turn", "sessionId": session_id, "text": "trace me", "id": "t1"})
        await c.recv_until("turn_complete")
        return session_id


def _has_message_spans(spans: list[ReceivedSpan]) -> bool:
    names = {s.name for s in spans}
    return all(n in names for n in (*MESSAGE_SPANS, *UPSTREAM_SPANS))


@pytest.fixture(scope="module")
def traced_run(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedRun]:
    """One traced gateway run shared by the assertions below (a gateway start costs seconds)."""
    with OtlpReceiver() as receiver:
        gateway = gateway_process(
            stack,
            tmp_path_factory.mktemp("traced"),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_SERVICE_NAME=SERVICE,
            LOG_LEVEL="debug",  # more lines logged inside handlers to look for trace ids in
        )
        gateway.start()
        try:
            session_id = asyncio.run(asyncio.wait_for(_echo_turn(gateway.ws_url), 60))
        finally:
            gateway.stop()  # SIGTERM: after_server_stop flushes the batch processor
        spans = receiver.wait_for(_has_message_spans, ARRIVAL_TIMEOUT_S)
        yield TracedRun(spans, gateway.output(), session_id)


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> Iterator[ReceivedSpan]:
    seen: set[str] = set()
    while span.parent_span_id and span.parent_span_id in by_id:
        if span.parent_span_id in seen:
            return
        seen.add(span.parent_span_id)
        span = by_id[span.parent_span_id]
        yield span


def test_gateway_exports_a_span_per_client_message(traced_run: TracedRun) -> None:
    names = [s.name for s in traced_run.spans]
    for name in MESSAGE_SPANS:
        assert name in names, f"{name!r} not exported; got {sorted(set(names))}"
    ours = [s for s in traced_run.spans if s.name in MESSAGE_SPANS]
    assert {s.service_name for s in ours} == {SERVICE}
    run_turn = next(s for s in ours if s.name == "ws run_turn")
    assert run_turn.attributes.get("session.id") == traced_run.session_id
    assert run_turn.attributes.get("client.id")


def test_gateway_upstream_spans_are_children_of_the_message_span(traced_run: TracedRun) -> None:
    spans = traced_run.spans
    by_id = {s.span_id: s for s in spans}
    message_spans = {s.span_id: s for s in spans if s.name in MESSAGE_SPANS}
    assert message_spans, "no message spans exported"
    for name in UPSTREAM_SPANS:
        calls = [s for s in spans if s.name == name]
        assert calls, f"no {name!r} span; got {sorted({s.name for s in spans})}"
        assert {s.service_name for s in calls} == {SERVICE}
        under_a_message = [
            s
            for s in calls
            if any(a.span_id in message_spans for a in _ancestors(s, by_id))
            and s.trace_id in {m.trace_id for m in message_spans.values()}
        ]
        assert under_a_message, f"no {name!r} span is a descendant of a ws message span"
        for call in under_a_message:
            message = next(a for a in _ancestors(call, by_id) if a.span_id in message_spans)
            assert call.trace_id == message.trace_id


def test_gateway_log_lines_in_a_handler_carry_the_trace_id(traced_run: TracedRun) -> None:
    lines = []
    for raw in traced_run.log.splitlines():
        with_brace = raw[raw.find("{") :] if "{" in raw else ""
        try:
            line = json.loads(with_brace)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    # A line with a request id was logged while a client message was being handled.
    in_handler = [line for line in lines if line.get("request_id")]
    if not in_handler:
        pytest.skip("the gateway logged no line inside a message handler in this run")
    traced = [line for line in in_handler if line.get("trace_id")]
    assert traced, f"no handler log line has a trace_id: {in_handler[:5]}"
    exported = {s.trace_id for s in traced_run.spans}
    for line in traced:
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]), line
        assert line["trace_id"] in exported, f"log trace id not among exported traces: {line}"
