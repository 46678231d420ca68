"""A real OTLP/HTTP trace receiver on 127.0.0.1, for tests that check what the gateway exports.

It is what a collector is to the gateway — `POST /v1/traces` with an `ExportTraceServiceRequest`
protobuf body (gzip or not) — minus everything a test does not look at. Decoding uses
`opentelemetry-proto`, which the OTLP/HTTP exporter depends on. Runs a stdlib `http.server` in a
thread; use it as a context manager so it is always stopped.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    service_name: str | None
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_span_id: str | None  # 16 hex, None for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    status_code: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    """The spans of one `ExportTraceServiceRequest`, flattened with their resource."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=s.name,
                        service_name=resource.get("service.name"),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex() or None,
                        kind=s.kind,
                        status_code=s.status.code,
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        resource=resource,
                    )
                )
    return spans


class OtlpReceiver:
    """Collects every span POSTed to `{endpoint}/v1/traces`; `requests` counts the exports."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.errors: list[str] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.split("?")[0] != "/v1/traces":
                    self._answer(404, b"")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._answer(413, b"")
                    return
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    spans = decode_spans(body)
                except Exception as exc:  # a bad export is a finding, not a crash
                    receiver._record([], f"{type(exc).__name__}: {exc}")
                    self._answer(400, b"")
                    return
                receiver._record(spans, None)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="otlp-receiver",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it (no `/v1/traces`)."""
        return f"http://127.0.0.1:{self.port}"

    def _record(self, spans: list[ReceivedSpan], error: str | None) -> None:
        with self._changed:
            self.requests += 1
            self.spans.extend(spans)
            if error is not None:
                self.errors.append(error)
            self._changed.notify_all()

    def snapshot(self) -> list[ReceivedSpan]:
        with self._changed:
            return list(self.spans)

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """The spans received so far, once `predicate(spans)` holds or `timeout` has passed —
        never raises, so the caller's assertion says what was missing."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return list(self.spans)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
