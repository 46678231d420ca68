"""`observability.tracing`: inert costs nothing and imports no SDK; enabled, spans nest, carry
attributes, record errors (redacted) and propagate W3C trace context.

Enabled mode exports to the SDK's `InMemorySpanExporter` through the `exporter=` seam; the
OTLP/HTTP path is covered end to end by tests/integration/test_tracing.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from diminuendo.observability import tracing

# version 00, trace id, parent span id, flags (sampled 0x01; Trace Context 2 adds random 0x02)
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def test_inert_mode_imports_no_opentelemetry() -> None:
    code = """
import json, sys
import diminuendo.observability.tracing as t
t.configure_tracing("", "x")
headers = {}
with t.span("ws run_turn", session_id="s1", client_id=None):
    t.inject_headers(headers)
    trace_id = t.current_trace_id()
t.shutdown_tracing()
print(json.dumps({
    "sdk": any(m.startswith("opentelemetry.sdk") for m in sys.modules),
    "any": any(m.startswith("opentelemetry") for m in sys.modules),
    "headers": headers,
    "trace_id": trace_id,
}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"sdk": False, "any": False, "headers": {}, "trace_id": None}


def test_inert_helpers_are_noops() -> None:
    tracing.shutdown_tracing()
    tracing.configure_tracing("", "x")
    headers: dict[str, str] = {}
    cm = tracing.span("a", x=1)
    assert cm is tracing.span("b"), "inert spans share one no-op context manager"
    with cm:
        tracing.inject_headers(headers)
        assert tracing.current_trace_id() is None
    assert headers == {}
    with pytest.raises(ValueError), tracing.span("boom"):
        raise ValueError("passes through untouched")


def test_inert_span_is_cheap() -> None:
    tracing.shutdown_tracing()
    n = 100_000
    started = time.perf_counter()
    for _ in range(n):
        with tracing.span("ws ping", session_id="s"):
            tracing.inject_headers({})
        tracing.current_trace_id()
    per_call = (time.perf_counter() - started) / n
    assert per_call < 20e-6, f"{per_call * 1e6:.2f} µs per span+inject+trace_id when inert"


@pytest.fixture
def exporter() -> Iterator[object]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    tracing.configure_tracing("http://127.0.0.1:9", "diminuendo-unit", exporter=memory)
    yield memory
    tracing.shutdown_tracing()


def _finished(exporter: object) -> dict[str, object]:
    tracing.shutdown_tracing()  # flushes the batch processor into the exporter
    return {s.name: s for s in exporter.get_finished_spans()}  # type: ignore[attr-defined]


def test_nested_spans_parent_and_carry_attributes(exporter: object) -> None:
    with tracing.span("ws run_turn", kind="server", session_id="s1", client_id=None, n=3):
        outer_trace = tracing.current_trace_id()
        with tracing.span("podium POST", kind="client", url_path="/api/v1/instances", ok=True):
            inner_trace = tracing.current_trace_id()
    assert tracing.current_trace_id() is None, "no span is current after the with"
    spans = _finished(exporter)
    outer, inner = spans["ws run_turn"], spans["podium POST"]
    from opentelemetry.trace import SpanKind, StatusCode

    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert outer.parent is None
    assert inner.context.trace_id == outer.context.trace_id
    assert outer_trace == inner_trace == format(outer.context.trace_id, "032x")
    assert re.fullmatch(r"[0-9a-f]{32}", outer_trace or "")
    assert dict(outer.attributes) == {"session.id": "s1", "n": 3}
    assert dict(inner.attributes) == {"url.path": "/api/v1/instances", "ok": True}
    assert outer.kind is SpanKind.SERVER and inner.kind is SpanKind.CLIENT
    assert outer.status.status_code is StatusCode.UNSET
    assert outer.resource.attributes["service.name"] == "diminuendo-unit"


def test_exception_is_recorded_redacted_with_error_status(exporter: object) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlc2lnbg"
    with pytest.raises(RuntimeError), tracing.span("ws create_session"):
        raise RuntimeError(f"upstream said no to {token}")
    (failed,) = _finished(exporter).values()
    from opentelemetry.trace import StatusCode

    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description.startswith("RuntimeError: upstream said no to")
    assert token not in failed.status.description
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "RuntimeError"
    assert token not in event.attributes["exception.message"]
    assert token not in event.attributes["exception.stacktrace"]
    assert "[REDACTED]" in event.attributes["exception.message"]
    assert failed.attributes["error.type"] == "RuntimeError"


def test_gateway_error_code_becomes_error_type(exporter: object) -> None:
    from diminuendo.protocol.errors import ErrorCode, GatewayError

    with pytest.raises(GatewayError), tracing.span("unison PUT", kind="client"):
        raise GatewayError(ErrorCode.UPSTREAM_UNAVAILABLE, "Unison is unavailable")
    (failed,) = _finished(exporter).values()
    assert failed.attributes["error.type"] == ErrorCode.UPSTREAM_UNAVAILABLE.value


async def test_cancellation_is_not_an_error(exporter: object) -> None:
    async def handler() -> None:
        with tracing.span("ws run_turn"):
            await asyncio.sleep(10)

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (cancelled,) = _finished(exporter).values()
    from opentelemetry.trace import StatusCode

    assert cancelled.status.status_code is StatusCode.UNSET
    assert cancelled.end_time is not None


def test_inject_headers_writes_traceparent_of_current_span(exporter: object) -> None:
    headers = {"X-Request-ID": "r1"}
    tracing.inject_headers(headers)
    assert "traceparent" not in headers, "no current span, nothing to propagate"
    with tracing.span("unison PUT", kind="client"):
        tracing.inject_headers(headers)
        trace_id = tracing.current_trace_id()
    match = TRACEPARENT.match(headers["traceparent"])
    assert match, headers
    (sent,) = _finished(exporter).values()
    assert match.group(1) == trace_id == format(sent.context.trace_id, "032x")
    assert match.group(2) == format(sent.context.span_id, "016x")
    assert int(match.group(3), 16) & 0x01, "sampled"
    assert headers["X-Request-ID"] == "r1"


async def test_spans_follow_asyncio_tasks(exporter: object) -> None:
    """Two messages handled concurrently: each upstream call is the child of its own message."""

    async def handle(message: str) -> None:
        with tracing.span(f"ws {message}"):
            await asyncio.sleep(0.01)
            with tracing.span(f"upstream for {message}"):
                await asyncio.sleep(0)

    await asyncio.gather(handle("a"), handle("b"))
    spans = _finished(exporter)
    for message in ("a", "b"):
        parent, child = spans[f"ws {message}"], spans[f"upstream for {message}"]
        assert child.parent.span_id == parent.context.span_id
    assert spans["ws a"].context.trace_id != spans["ws b"].context.trace_id


def test_shutdown_is_bounded_when_the_exporter_hangs() -> None:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Hanging(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            time.sleep(30)
            return SpanExportResult.SUCCESS

    tracing.configure_tracing("http://127.0.0.1:9", "x", exporter=Hanging())
    with tracing.span("stuck"):
        pass
    started = time.monotonic()
    tracing.shutdown_tracing(timeout_s=0.5)
    assert time.monotonic() - started < 1.5
    assert tracing.current_trace_id() is None
    with tracing.span("after shutdown"):
        assert tracing.current_trace_id() is None, "inert again after shutdown"


def test_reconfigure_replaces_the_provider() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    tracing.configure_tracing("http://127.0.0.1:9", "one", exporter=first)
    with tracing.span("to first"):
        pass
    tracing.configure_tracing("http://127.0.0.1:9", "two", exporter=second)
    with tracing.span("to second"):
        pass
    tracing.shutdown_tracing()
    assert [s.name for s in first.get_finished_spans()] == ["to first"]
    assert [s.name for s in second.get_finished_spans()] == ["to second"]
