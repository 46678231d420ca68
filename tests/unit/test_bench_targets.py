"""`bench/run-all`'s targets table (bench/lib/targets.py): the verdict and the measured text of
each row, from result files as the benchmarks write them. The expected rows are what run-all
printed before the targets became a table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from lib.targets import TARGETS, Check, check_targets, lookup

IDLE = "10,000 idle connections < 600 MB RSS"
PER_CONN = "idle ≤ 60 KB per connection"
STREAM = "5,000 sessions, 20,000 ev/s, p99 < 50 ms"
STREAM_RSS = "5,000 sessions within 2 GB RSS (OPERATIONS §7)"
FANOUT = "fan-out (no target; p99 < 50 ms for reference)"
FLEET = "fleet: 2 instances, CPU/delta ≤ 2x memory, p99 < 100 ms"
DEV = "connect+auth p50 < 2 ms (dev)"
JWT = "connect+auth p50 < 3 ms (JWT warm)"
CREATE = "create_session p50 < 5 ms"
HEALTH = "/health ≥ 10,000 req/s (one worker)"
MAPPING = "mapping ≥ 200,000 ev/s on one core"


# Figures of a full-size run on which every target holds; a test changes some of them.
FULL: dict[str, Any] = {
    "conns": 10_000,
    "rss": 512.3,
    "kb": 40.1,
    "sessions": 5000,
    "rate": 19_500,
    "p99": 31.2,
    "pinned": True,
    "offered": 20_000,
    "peak": 609.0,
    "n": 1000,
    "dev": 1.234,
    "jwt": 2.5,
    "create": 3.1,
    "rps": 12_345.6,
    "duration": 10.0,
    "events": 200_000,
    "mapping": 456_789,
}


def results(**change: Any) -> dict[str, list[dict[str, Any]]]:
    """Result files as the benchmarks write them (only the figures the targets read)."""
    assert set(change) <= set(FULL), change
    f = {**FULL, **change}
    stream = {
        "turns": f["sessions"],
        "delivered_pieces_per_s": f["rate"],
        "latency_ms": {"p99": f["p99"]},
        "pinned": f["pinned"],
        "offered_pieces_per_s": f["offered"],
        "gateway_rss_peak_mb": f["peak"],
    }
    fanout = {"subscribers": 1000, "delivered_pieces_per_s": 20_000, "latency_ms": {"p99": 12.5}}
    return {
        "idle": [
            {
                "gateway": {
                    "connections_opened": f["conns"],
                    "rss_open_mb": f["rss"],
                    "per_connection_kb": f["kb"],
                }
            }
        ],
        "stream": [{"stream": stream, "fanout": fanout}],
        "connect": [
            {
                "params": {"connections": f["n"]},
                "variants": {"dev": {"p50": f["dev"]}, "jwt-warm": {"p50": f["jwt"]}},
            }
        ],
        "create": [{"sequential": {"p50": f["create"], "n": f["n"]}}],
        "health": [
            {
                "params": {"duration_s": f["duration"]},
                "gateway": {"rps": f["rps"]},
                "bare": {"rps": 23_456.7},
            }
        ],
        "mapping": [
            {
                "params": {"events": f["events"]},
                "text_delta": {"pipeline": {"events_per_s_best": f["mapping"]}},
            }
        ],
    }


def test_every_target_holds_at_full_size() -> None:
    assert check_targets(results()) == [
        (IDLE, "10000 conns, 512.3 MB", "HOLDS"),
        (PER_CONN, "40.1 KB", "HOLDS"),
        (STREAM, "5000 sessions, 19,500 ev/s, p99 31.2 ms", "HOLDS"),
        (STREAM_RSS, "5000 sessions, peak 609.0 MB", "HOLDS"),
        (FANOUT, "1000 subs, 20,000 ev/s, p99 12.5 ms", "info"),
        (DEV, "1.234 ms", "HOLDS"),
        (JWT, "2.5 ms", "HOLDS"),
        (CREATE, "3.1 ms", "HOLDS"),
        (HEALTH, "12,346 req/s (bare Sanic 23,457)", "HOLDS"),
        (MAPPING, "456,789 ev/s", "HOLDS"),
    ]


def test_a_figure_at_its_limit_on_the_wrong_side_misses() -> None:
    rows = check_targets(
        results(
            rss=700.0, kb=70.0, rate=18_000, peak=2048.0, dev=2.0, jwt=3.5, create=5.0, rps=9999.0
        )
    )
    verdicts = {title: verdict for title, _, verdict in rows}
    assert verdicts == {
        IDLE: "MISSES",
        PER_CONN: "MISSES",
        STREAM: "MISSES",
        STREAM_RSS: "MISSES",
        FANOUT: "info",
        DEV: "MISSES",
        JWT: "MISSES",
        CREATE: "MISSES",
        HEALTH: "MISSES",
        MAPPING: "HOLDS",
    }


@pytest.mark.parametrize(
    ("change", "verdict"),
    [
        ({"p99": 51.0}, "MISSES"),  # the rate holds, the p99 does not
        ({"p99": 49.9, "rate": 19_000}, "HOLDS"),
        ({"sessions": 4999}, "n/a (smaller size)"),
        ({"offered": 19_999}, "n/a (smaller size)"),
        ({"pinned": False, "p99": 60.0}, "info"),  # shared cores: reported, not judged
    ],
)
def test_the_stream_target_needs_rate_and_p99_at_full_size_on_a_pinned_gateway(
    change: dict[str, Any], verdict: str
) -> None:
    (row,) = [r for r in check_targets(results(**change)) if r[0] == STREAM]
    assert row[2] == verdict
    assert row[1].endswith(" (shared cores)") == (change.get("pinned") is False)


def test_a_smaller_run_is_reported_but_not_judged() -> None:
    rows = check_targets(
        results(conns=100, sessions=20, offered=200, n=20, duration=1.0, events=5000)
    )
    assert {verdict for title, _, verdict in rows if title != FANOUT} == {"n/a (smaller size)"}
    # the per-connection figure is judged from 1,000 connections, the total RSS from 10,000
    per_conn = {t: v for t, _, v in check_targets(results(conns=1000, kb=61.0))}
    assert (per_conn[IDLE], per_conn[PER_CONN]) == ("n/a (smaller size)", "MISSES")


def test_rows_follow_the_results_present_and_a_missing_figure_never_holds() -> None:
    partial = {
        "stream": [{"fanout": {"subscribers": 5, "delivered_pieces_per_s": 50, "latency_ms": {}}}],
        "connect": [{"params": {"connections": 1000}, "variants": {"dev": {"n": 0}}}],
        "create": [{"sequential": {"n": 600}}],
    }
    assert check_targets(partial) == [
        (FANOUT, "5 subs, 50 ev/s, p99 None ms", "info"),
        (DEV, "None ms", "MISSES"),
        (CREATE, "None ms", "MISSES"),
    ]
    assert check_targets({}) == []


def test_two_results_of_one_benchmark_give_two_rows_each() -> None:
    two = results()
    two["stream"].append({"stream": {**two["stream"][0]["stream"], "pinned": False}})
    titles = [title for title, _, _ in check_targets(two) if title.startswith("5,000")]
    assert titles == [STREAM, STREAM_RSS, STREAM, STREAM_RSS]


def test_titles_are_unique_and_a_check_reads_a_dotted_path() -> None:
    titles = [t.title for t in TARGETS]
    assert len(titles) == len(set(titles))
    assert Check("a.b", "<", 1).holds({"a": {"b": 0.5}})
    assert not Check("a.b", "<", 1).holds({"a": {}})
    assert lookup({"a": {"b": {"c": 3}}}, "a.b.c") == 3
    assert lookup({"a": 1}, "a.b") is None


def test_bench_readme_shows_every_target_of_the_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "bench" / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "`" in line]
    shown = [row for row in rows if row.split(" | ")[0] in {f"| {t.benchmark}" for t in TARGETS}]
    assert [row.split(" | ")[1:3] for row in shown] == [[t.title, f"`{t.figure}`"] for t in TARGETS]


def fleet_run(**change: Any) -> dict[str, list[dict[str, Any]]]:
    """A full-size `stream.py --valkey --instances 2` result (the figures the fleet row reads)."""
    fleet = {
        "instances": 2,
        "turns": 5000,
        "offered_pieces_per_s": 22_000,
        "delivered_pieces_per_s": 21_900,
        "latency_ms": {"p99": 62.5},
        "pinned": True,
    }
    ratio = change.pop("cpu_ratio", 1.7)
    fleet.update(change)
    run = results()
    run["stream"][0].update(
        stream_valkey=fleet, stream_valkey_vs_memory={"cpu_ratio": ratio, "target_met": True}
    )
    return run


@pytest.mark.parametrize(
    ("change", "verdict"),
    [
        ({}, "HOLDS"),
        ({"cpu_ratio": 2.01}, "MISSES"),
        ({"latency_ms": {"p99": 100.0}}, "MISSES"),
        ({"delivered_pieces_per_s": 18_000}, "MISSES"),
        ({"instances": 1}, "n/a (smaller size)"),
        ({"turns": 300}, "n/a (smaller size)"),
        ({"pinned": False}, "info"),
    ],
)
def test_the_fleet_target_is_cpu_ratio_rate_and_p99_of_two_instances_at_full_size(
    change: dict[str, Any], verdict: str
) -> None:
    (row,) = [r for r in check_targets(fleet_run(**change)) if r[0] == FLEET]
    assert row[2] == verdict
    assert row[1].endswith(" (shared cores)") == (change.get("pinned") is False)
