"""OpenTelemetry tracing for the gateway: a span per client message and per upstream attempt.

Tracing is off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OPERATIONS.md §6). Off means inert:
the OpenTelemetry SDK is never imported, and every helper here returns at once, so the edges can
call them unconditionally on the hot path. On, each Sanic worker gets its own `TracerProvider`
exporting OTLP/HTTP protobuf to `{endpoint}/v1/traces` from a background batch thread, so ending
a span never blocks the event loop.

There is no official Sanic instrumentation (stack notes §8), so the edges call these helpers
themselves: `ClientSession._handle` opens a span per message, `UpstreamHttp.request` a child span
per attempt and puts a W3C `traceparent` on the outgoing request, and the loguru patcher stamps
`trace_id` on every line logged inside a span. Spans follow the OpenTelemetry context, a
`ContextVar`, so an upstream call made while handling a message is that message's child.

This module keeps its own provider, in the one `Tracing` instance `TRACING`, rather than
installing OpenTelemetry's global one: the global can be set only once per process, and tests
(and a reconfigure) need to replace it.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import traceback
from collections.abc import Iterator, MutableMapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the SDK is imported only when tracing is turned on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

AttributeValue = str | int | float | bool | None
SpanKindName = Literal["internal", "server", "client"]

SHUTDOWN_TIMEOUT_S = 2.0
# An export that hangs must not keep a batch thread (or shutdown) waiting for the SDK's 10 s.
EXPORT_TIMEOUT_S = 5.0
_MAX_STATUS_CHARS = 300

_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()


class Tracing:
    """One process's tracing state: inert until `configure` is given an endpoint, inert again
    after `shutdown`.

    There is one instance per process, `TRACING`, and the module functions below are its bound
    methods: spans are opened on every client message and every upstream attempt, from modules
    (the WebSocket edge, `UpstreamHttp`, the loguru patcher) that do not share an owner, and a
    Sanic worker is one process, so threading an object through each of them would add a
    parameter to the hot path for nothing. The state lives here, in one object with a lifecycle,
    instead of in module globals.
    """

    def __init__(self) -> None:
        # All None while inert: the methods test `_tracer` and return.
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self._kinds: dict[str, Any] = {}
        self._propagator: Any = None
        self._get_current_span: Any = None
        self._atexit_registered = False
        self._lock = threading.Lock()

    def configure(
        self, endpoint: str, service_name: str, *, exporter: SpanExporter | None = None
    ) -> None:
        """Turn tracing on for this process when `endpoint` is set; leave it inert when it is "".

        Call once per worker (in `before_server_start`): Sanic spawns workers, and a provider's
        batch thread does not survive into another process. Calling again replaces the previous
        provider (flushing it). `exporter` replaces the OTLP/HTTP exporter — the seam for tests,
        which pass the SDK's `InMemorySpanExporter`.
        """
        if not endpoint:
            return
        self.shutdown()

        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        provider = _new_provider(endpoint, service_name, exporter)
        with self._lock:
            self._kinds.update(
                internal=trace.SpanKind.INTERNAL,
                server=trace.SpanKind.SERVER,
                client=trace.SpanKind.CLIENT,
            )
            self._propagator = TraceContextTextMapPropagator()
            self._get_current_span = trace.get_current_span
            self._provider = provider
            self._tracer = provider.get_tracer("diminuendo", _version())
            if not self._atexit_registered:
                # A process that exits without `after_server_stop` still sends what it has.
                atexit.register(self.shutdown)
                self._atexit_registered = True

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Flush the spans not yet exported and stop the batch thread, waiting at most
        `timeout_s`.

        Called in `after_server_stop`. The SDK's own flush waits on the exporter, which waits on
        the collector; an unreachable collector must not hold up a deploy, so the work runs in a
        daemon thread that is abandoned after `timeout_s`. Tracing is inert again afterwards.
        Idempotent.
        """
        with self._lock:
            provider, self._provider, self._tracer = self._provider, None, None
        if provider is None:
            return

        def flush_and_stop() -> None:
            with contextlib.suppress(Exception):  # tracing never breaks shutdown
                provider.force_flush(int(timeout_s * 1000))
                provider.shutdown()

        worker = threading.Thread(target=flush_and_stop, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_s)

    def span(
        self, name: str, *, kind: SpanKindName = "internal", **attributes: AttributeValue
    ) -> contextlib.AbstractContextManager[None]:
        """A span around the `with` body, current inside it so that spans started there
        (upstream calls) become its children.

        Keyword names become dotted attribute keys (`session_id` → `session.id`, `url_path` →
        `url.path`), so callers can write OpenTelemetry's semantic-convention names as keywords;
        None values are left out. An exception escaping the body is recorded (redacted, like
        logs) and sets the span's status to ERROR; cancellation is not an error. Inert: a shared
        no-op context manager, nothing allocated.
        """
        tracer = self._tracer
        if tracer is None:
            return _NOOP
        return _recording_span(
            tracer, name, self._kinds.get(kind, self._kinds["internal"]), attributes
        )

    def inject_headers(self, headers: MutableMapping[str, str]) -> None:
        """Put the current span's W3C `traceparent` (and `tracestate`) into outgoing `headers`,
        so an upstream that traces joins the gateway's trace. Call inside the upstream call's
        span."""
        if self._tracer is None:
            return
        self._propagator.inject(headers)

    def current_trace_id(self) -> str | None:
        """The current span's trace id as 32 hex digits, for log lines; None when inert or when
        no span is current (startup, background loops)."""
        if self._tracer is None:
            return None
        context = self._get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x")


def _version() -> str:
    from diminuendo import __version__

    return __version__


def _new_provider(
    endpoint: str, service_name: str, exporter: SpanExporter | None
) -> TracerProvider:
    """A provider exporting to `{endpoint}/v1/traces` (or to `exporter`) from a batch thread."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=f"{endpoint.rstrip('/')}/v1/traces", timeout=EXPORT_TIMEOUT_S
        )
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": _version()}),
        # Our own bounded shutdown replaces the SDK's atexit hook, which may wait 30 s.
        shutdown_on_exit=False,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


TRACING = Tracing()
configure_tracing = TRACING.configure
shutdown_tracing = TRACING.shutdown
span = TRACING.span
inject_headers = TRACING.inject_headers
current_trace_id = TRACING.current_trace_id


@contextlib.contextmanager
def _recording_span(
    tracer: Tracer, name: str, kind: Any, attributes: dict[str, AttributeValue]
) -> Iterator[None]:
    attrs = {_attribute_key(k): v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attrs,
        record_exception=False,  # done below, redacted
        set_status_on_exception=False,
    ) as current:
        try:
            yield
        except Exception as exc:
            _record_error(current, exc)
            raise


@lru_cache(maxsize=256)
def _attribute_key(keyword: str) -> str:
    return keyword.replace("_", ".")


def _record_error(current: Span, exc: Exception) -> None:
    """Record `exc` on `current` like the SDK would, but through the log redaction: exception
    messages can hold tokens or URLs with credentials, and traces leave the process too."""
    from opentelemetry.trace import Status, StatusCode

    from diminuendo.redaction import redact

    message = redact(str(exc))
    current.record_exception(
        exc,
        attributes={
            "exception.message": message,
            "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
        },
        escaped=True,
    )
    # A GatewayError's code (UPSTREAM_UNAVAILABLE, FORBIDDEN, …) says more than its class.
    code = getattr(getattr(exc, "code", None), "value", None)
    current.set_attribute("error.type", code if isinstance(code, str) else type(exc).__qualname__)
    description = f"{type(exc).__name__}: {message}"[:_MAX_STATUS_CHARS]
    current.set_status(Status(StatusCode.ERROR, description))
