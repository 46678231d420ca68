"""The issue's targets as a table, and the verdicts `run-all` prints from it.

One `Target` per row: the benchmark whose results it reads, the figure (a dotted path into the
result), the comparison and limit it must meet, the unit. A figure measured at a smaller size
than the target's (`judged_from`: each named figure at least this) is reported but not judged;
a figure with no target (`judged=False`) or measured where it cannot be judged (`info_unless`
false, e.g. the stream target on shared cores) is "info". A row appears for every result that
holds the object its figure is in (the stream target: a run of the `stream` variant; the
connect targets: a run of that variant).
"""

from __future__ import annotations

import operator
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Check:
    """`figure comparison limit`, e.g. `stream.latency_ms.p99 < 50`."""

    figure: str
    comparison: str
    limit: float

    def holds(self, result: Mapping[str, Any]) -> bool:
        value = lookup(result, self.figure)
        return value is not None and COMPARISONS[self.comparison](value, self.limit)


@dataclass(frozen=True)
class Target:
    """One figure a benchmark must meet; `title` and `shown` are what the table prints."""

    benchmark: str
    title: str
    figure: str
    comparison: str
    limit: float
    unit: str
    judged_from: tuple[tuple[str, float], ...] = ()
    also: tuple[Check, ...] = ()
    judged: bool = True
    info_unless: tuple[str, str] | None = None  # (boolean figure, note added when it is false)
    shown: str | None = None  # a format of dotted paths; by default "{figure} {unit}"

    def applies(self, result: Mapping[str, Any]) -> bool:
        return lookup(result, self.figure.rpartition(".")[0]) is not None

    def verdict(self, result: Mapping[str, Any]) -> str:
        if not self.judged or (self.info_unless and not lookup(result, self.info_unless[0])):
            return "info"
        if not all(Check(name, ">=", size).holds(result) for name, size in self.judged_from):
            return "n/a (smaller size)"
        checks = (Check(self.figure, self.comparison, self.limit), *self.also)
        return "HOLDS" if all(check.holds(result) for check in checks) else "MISSES"

    def measured(self, result: Mapping[str, Any]) -> str:
        if self.shown is None:
            text = f"{lookup(result, self.figure)} {self.unit}"
        else:
            text = _Figures().format(self.shown, result)
        if self.info_unless and not lookup(result, self.info_unless[0]):
            text += self.info_unless[1]
        return text


TARGETS: tuple[Target, ...] = (
    Target(
        "idle",
        "10,000 idle connections < 600 MB RSS",
        "gateway.rss_open_mb",
        "<",
        600,
        "MB",
        judged_from=(("gateway.connections_opened", 10_000),),
        shown="{gateway.connections_opened} conns, {gateway.rss_open_mb} MB",
    ),
    Target(
        "idle",
        "idle ≤ 60 KB per connection",
        "gateway.per_connection_kb",
        "<=",
        60,
        "KB",
        judged_from=(("gateway.connections_opened", 1000),),
    ),
    Target(
        "stream",
        "5,000 sessions, 20,000 ev/s, p99 < 50 ms",
        "stream.delivered_pieces_per_s",
        ">=",
        19_000,
        "ev/s",
        judged_from=(("stream.turns", 5000), ("stream.offered_pieces_per_s", 20_000)),
        also=(Check("stream.latency_ms.p99", "<", 50),),
        info_unless=("stream.pinned", " (shared cores)"),
        shown="{stream.turns} sessions, {stream.delivered_pieces_per_s:,} ev/s, "
        "p99 {stream.latency_ms.p99} ms",
    ),
    Target(
        "stream",
        "5,000 sessions within 2 GB RSS (OPERATIONS §7)",
        "stream.gateway_rss_peak_mb",
        "<",
        2048,
        "MB",
        judged_from=(("stream.turns", 5000),),
        shown="{stream.turns} sessions, peak {stream.gateway_rss_peak_mb} MB",
    ),
    Target(
        "stream",
        "fleet: 2 instances, CPU/delta ≤ 2x memory, p99 < 100 ms",
        "stream_valkey_vs_memory.cpu_ratio",
        "<=",
        2,
        "x",
        judged_from=(
            ("stream_valkey.instances", 2),
            ("stream_valkey.turns", 5000),
            ("stream_valkey.offered_pieces_per_s", 20_000),
        ),
        also=(
            Check("stream_valkey.delivered_pieces_per_s", ">=", 19_000),
            Check("stream_valkey.latency_ms.p99", "<", 100),
        ),
        info_unless=("stream_valkey.pinned", " (shared cores)"),
        shown="{stream_valkey.instances} instances, {stream_valkey.turns} sessions, "
        "{stream_valkey.delivered_pieces_per_s:,} ev/s, {stream_valkey_vs_memory.cpu_ratio}x "
        "CPU/delta, p99 {stream_valkey.latency_ms.p99} ms",
    ),
    Target(
        "stream",
        "fan-out (no target; p99 < 50 ms for reference)",
        "fanout.latency_ms.p99",
        "<",
        50,
        "ms",
        judged=False,
        shown="{fanout.subscribers} subs, {fanout.delivered_pieces_per_s:,} ev/s, "
        "p99 {fanout.latency_ms.p99} ms",
    ),
    Target(
        "connect",
        "connect+auth p50 < 2 ms (dev)",
        "variants.dev.p50",
        "<",
        2,
        "ms",
        judged_from=(("params.connections", 1000),),
    ),
    Target(
        "connect",
        "connect+auth p50 < 3 ms (JWT warm)",
        "variants.jwt-warm.p50",
        "<",
        3,
        "ms",
        judged_from=(("params.connections", 1000),),
    ),
    Target(
        "create",
        "create_session p50 < 5 ms",
        "sequential.p50",
        "<",
        5,
        "ms",
        judged_from=(("sequential.n", 500),),
    ),
    Target(
        "health",
        "/health ≥ 10,000 req/s (one worker)",
        "gateway.rps",
        ">=",
        10_000,
        "req/s",
        judged_from=(("params.duration_s", 5),),
        shown="{gateway.rps:,.0f} req/s (bare Sanic {bare.rps:,.0f})",
    ),
    Target(
        "mapping",
        "mapping ≥ 200,000 ev/s on one core",
        "text_delta.pipeline.events_per_s_best",
        ">=",
        200_000,
        "ev/s",
        judged_from=(("params.events", 100_000),),
        shown="{text_delta.pipeline.events_per_s_best:,} ev/s",
    ),
)


def check_targets(
    results: Mapping[str, Iterable[Mapping[str, Any]]], targets: Iterable[Target] = TARGETS
) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows: benchmark by benchmark in the table's order, for each
    of its results, each of its targets."""
    rows: list[tuple[str, str, str]] = []
    by_benchmark: dict[str, list[Target]] = {}
    for target in targets:
        by_benchmark.setdefault(target.benchmark, []).append(target)
    for benchmark, own in by_benchmark.items():
        for result in results.get(benchmark, []):
            rows += [
                (t.title, t.measured(result), t.verdict(result)) for t in own if t.applies(result)
            ]
    return rows


def lookup(result: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`stream.latency_ms.p99`), None when any part is missing."""
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class _Figures(string.Formatter):
    """`str.format` whose fields are dotted paths into the result given as its one argument
    (`{stream.latency_ms.p99}`); a missing figure reads "None"."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        (result,) = args
        return lookup(result, field_name), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        return "None" if value is None else super().format_field(value, format_spec)
