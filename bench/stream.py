"""stream: S active sessions on the `slow` agent, one subscriber each, all streaming stamped
deltas → delivered events/s, end-to-end latency (agent emit → client receipt) p50/p99, gateway
CPU and RSS; and `fanout`: one session with F subscribers.

    .venv/bin/python bench/stream.py --sessions 5000 --rate 4 --duration 20     # 20,000 ev/s
    .venv/bin/python bench/stream.py --variant fanout --subscribers 1000 --fanout-rate 20
    .venv/bin/python bench/stream.py --variant stream --valkey   # then again with REDIS_URL

`--valkey` runs the stream phase a second time with a local Valkey (`REDIS_URL`: every frame also
appended to the session's log there) and reports beside the figures above the gateway's CPU per
delivered delta, the Valkey server's CPU (from /proc/<pid>) and its bytes per retained event
(`INFO memory` `used_memory` after the window minus before the sessions, over the logs' entries).

The agent stamps each delta `d{i}@{emit_unix_ms} `; the client takes `time.time()` on receipt, so
latency spans the local Podium's socket, the gateway and the client socket. The stamp has 1 ms
resolution and is truncated, so figures read up to 1 ms high (0.5 ms on average).

The gateway coalesces deltas (at most one `text_delta` per session per 10 ms), so both frames and
delta pieces are counted. Turns are started staggered over one delta interval, so sessions do not
emit in lock-step. The load generator, the local stack and the gateway run on this one machine,
and the CPU of each is reported. By default (`--pin`) the gateway has a CPU to itself and the
client and the local stack share the others, as a gateway process has its own core in
production; `--no-pin` lets all three compete for every core. The client parses as little as
it can (a raw WebSocket protocol, a prefix test and one regex per frame, no JSON) and runs on
uvloop when installed.

Sessions are created first over a few connections, then subscribers connect and join: every
connection of the dev tenant gets the tenant's `session_created` broadcasts, and creating S
sessions with S connections open would cost S² frames, which is not what this measures.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from benchlib import close_all
from lib.host import raise_nofile, source_addresses
from lib.loop import run
from lib.options import PIN_HELP, BenchOptions, option, params, parse_options
from lib.proc import MACHINE, CpuMeter, hwm_bytes, rss_bytes
from lib.processes import Bench, Gateway, Stack
from lib.profiling import py_spy
from lib.results import summary, write_result
from lib.stats import percentiles
from lib.stream_clients import Recorder, Subscriber, create_sessions, join, start_turns, turn_text
from lib.upstream_calls import calls_between, upstream_calls
from lib.valkey import local_valkey, retained_events, used_memory

if TYPE_CHECKING:
    from diminuendo.local.valkey import LocalValkey


@dataclass(frozen=True, kw_only=True)
class StreamOptions(BenchOptions):
    pin: bool = option(True, PIN_HELP, negatable=True)
    variant: Literal["stream", "fanout", "both"] = option("both")
    sessions: int = option(5000)
    rate: float = option(4.0, "deltas/s per session")
    subscribers: int = option(1000, "fan-out subscribers")
    fanout_rate: float = option(20.0, "fan-out deltas/s")
    warmup: float = option(5.0)
    duration: float = option(20.0)
    setup_concurrency: int = option(50)
    valkey: bool = option(False, "run the stream phase again with a local Valkey (REDIS_URL)")


class PauseMeter:
    """The client's own cycle-collector pauses over 5 ms inside the window: a load generator
    that stops to collect delays receipts, and that shows up as gateway latency."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._since = 0.0

    def __enter__(self) -> PauseMeter:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        elif (took := (time.perf_counter() - self._since) * 1000) > 5:
            self.pauses_ms.append(round(took, 1))


async def health_probe(url: str, duration: float, every: float = 1.0) -> dict[str, Any]:
    """`/health` once a second for `duration` (once when 0): latency, failures, last metrics.
    PROTOCOL.md §9 wants an answer within 1 s whatever the load."""
    samples: list[float] = []
    failures: list[str] = []
    body: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + duration
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            started = time.perf_counter()
            try:
                response = await client.get(f"{url}/health")
                body = response.json()
                samples.append((time.perf_counter() - started) * 1000)
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__} after {time.perf_counter() - started:.1f}s")
            if loop.time() + every > stop_at:
                break
            await asyncio.sleep(every)
    return {
        "latency_ms": percentiles(samples),
        "over_1s": sum(1 for ms in samples if ms > 1000),
        "failures": failures,
        "metrics": body.get("metrics"),
    }


async def measure_window(
    gateway: Gateway,
    stack: Stack,
    rec: Recorder,
    options: StreamOptions,
    valkey_pid: int | None = None,
) -> dict[str, Any]:
    """The measurement window: CPU of every process (and of Valkey's, when given), the
    gateway's RSS and upstream calls, /health once a second, the client's own collector
    pauses."""
    pids = {
        "gateway": gateway.pid,
        "local_stack": stack.server.pid,
        "client": os.getpid(),
        "machine": MACHINE,
    }
    meter = CpuMeter(pids if valkey_pid is None else {**pids, "valkey": valkey_pid})
    rss_start = rss_bytes(gateway.pid)
    calls_start = await asyncio.to_thread(upstream_calls, gateway.url)
    rec.measuring = True
    window_unix = [round(time.time(), 3)]
    meter.begin()
    probe = asyncio.create_task(health_probe(gateway.url, options.duration))
    with py_spy(gateway.pid, options.py_spy, options.duration), PauseMeter() as client_gc:
        await asyncio.sleep(options.duration)
    rec.measuring = False
    window_unix.append(round(time.time(), 3))
    health_during = await probe
    cpu = meter.end()
    rss_end = rss_bytes(gateway.pid)
    calls_end = await asyncio.to_thread(upstream_calls, gateway.url)
    return {
        "window_unix": window_unix,
        "cpu": cpu,
        "client_gc_pauses_ms": client_gc.pauses_ms,
        "gateway_rss_mb_start": round(rss_start / 2**20, 1),
        "gateway_rss_mb_end": round(rss_end / 2**20, 1),
        "upstream_calls_in_window": calls_between(calls_start, calls_end),
        "health_during_window": health_during,
    }


async def stream_phase(
    bench: Bench,
    gateway: Gateway,
    stack: Stack,
    rec: Recorder,
    starters: list[Subscriber],
    options: StreamOptions,
    *,
    rate: float,
    label: str,
    copies: int = 1,
    valkey_pid: int | None = None,
) -> dict[str, Any]:
    """Start one turn per `starters` entry, staggered over one interval; measure the window."""
    interval_ms = max(1, round(1000 / rate))
    stagger_s = interval_ms / 1000
    turn_s = stagger_s + options.warmup + options.duration + 1.0
    deltas = math.ceil(turn_s * 1000 / interval_ms)
    rec.expected_completions = len(starters)
    start_turns(starters, turn_text(deltas, interval_ms), stagger_s)
    await asyncio.sleep(0.2 + stagger_s + options.warmup)
    window = await measure_window(gateway, stack, rec, options, valkey_pid)
    window_s = window["cpu"]["wall_s"]
    try:
        async with asyncio.timeout(turn_s + 60):
            await rec.all_done
    except TimeoutError:
        pass
    health_after = await health_probe(gateway.url, 0)
    return {
        "label": label,
        "pinned": bench.gateway_cpu is not None,
        "turns": len(starters),
        "deltas_per_turn": deltas,
        "interval_ms": interval_ms,
        "offered_pieces_per_s": round(len(starters) * copies * 1000 / interval_ms),
        "window_s": window_s,
        "window_unix": window["window_unix"],
        "delivered_pieces_per_s": round(rec.window_pieces / window_s),
        "delivered_frames_per_s": round(rec.window_frames / window_s),
        "pieces_per_frame": round(rec.window_pieces / max(rec.window_frames, 1), 3),
        "latency_ms": percentiles(rec.latencies),
        "cpu": window["cpu"],
        "client_gc_pauses_ms": window["client_gc_pauses_ms"],
        "gateway_rss_mb_start": window["gateway_rss_mb_start"],
        "gateway_rss_mb_end": window["gateway_rss_mb_end"],
        "gateway_rss_peak_mb": round(hwm_bytes(gateway.pid) / 2**20, 1),
        "turns_completed": rec.completed,
        "pieces_total": rec.pieces,
        "pieces_expected_total": deltas * len(starters),
        "errors": len(rec.errors),
        "first_errors": [e.decode(errors="replace") for e in rec.errors[:3]],
        "upstream_calls_in_window": window["upstream_calls_in_window"],
        "health_during_window": window["health_during_window"],
        "health_after_turns": health_after,
    }


async def run_stream(
    bench: Bench, options: StreamOptions, valkey: LocalValkey | None = None
) -> dict[str, Any]:
    """The stream phase; with `valkey`, the gateway appends every frame to its logs there."""
    sessions = options.sessions
    stack = bench.start_stack()
    fleet = {} if valkey is None else {"REDIS_URL": valkey.url}
    gateway = bench.start_gateway(
        stack,
        # Room for the capacity reserve (the last tenth kept for tenants under their share).
        MAX_ACTIVE_SESSIONS=str(max(5000, sessions * 12 // 10)),
        MAX_CONNECTIONS=str(max(10_000, sessions + 100)),
        **fleet,
    )
    bench.wait_health_ok(gateway)
    valkey_bytes_idle = None if valkey is None else await used_memory(valkey.url)
    rss_idle = rss_bytes(gateway.pid)
    started = time.perf_counter()
    ids = await create_sessions(gateway.port, sessions)
    create_s = time.perf_counter() - started

    rec = Recorder()
    subs = [Subscriber(rec, sid) for sid in ids]
    sources = source_addresses(sessions)
    semaphore = asyncio.Semaphore(options.setup_concurrency)
    started = time.perf_counter()
    join_ms = await asyncio.gather(
        *(join(gateway.port, s, sources[i % len(sources)], semaphore) for i, s in enumerate(subs))
    )
    join_s = time.perf_counter() - started
    rss_ready = rss_bytes(gateway.pid)
    for sub in subs:
        assert sub.ws is not None
        sub.ws.on_text = sub.on_text
    valkey_pid = None if valkey is None or valkey.process is None else valkey.process.pid
    label = f"{sessions} sessions{'' if valkey is None else ' with Valkey'}"
    result = await stream_phase(
        bench,
        gateway,
        stack,
        rec,
        subs,
        options,
        rate=options.rate,
        label=label,
        valkey_pid=valkey_pid,
    )
    result["gateway_cpu_us_per_delta"] = round(
        result["cpu"]["gateway"]["cpu_s"] * 1e6 / max(rec.window_pieces, 1), 1
    )
    if valkey is not None and valkey_bytes_idle is not None:
        retained = await retained_events(valkey.url, ids)
        grown = await used_memory(valkey.url) - valkey_bytes_idle
        result["valkey"] = {
            "retained_events": retained,
            "used_memory_growth_mb": round(grown / 2**20, 1),
            "bytes_per_retained_event": round(grown / retained) if retained else None,
        }
    result["setup"] = {
        "create_s": round(create_s, 2),
        "connect_join_activate_s": round(join_s, 2),
        "join_to_ready_ms": percentiles(join_ms),
        "gateway_rss_mb_idle": round(rss_idle / 2**20, 1),
        "gateway_rss_mb_sessions_ready": round(rss_ready / 2**20, 1),
        "rss_kb_per_ready_session": round((rss_ready - rss_idle) / sessions / 1024, 1),
    }
    lost = result["pieces_expected_total"] - result["pieces_total"]
    result["pieces_lost"] = lost if result["turns_completed"] == sessions else None
    await close_all([s.ws for s in subs if s.ws is not None])
    bench.stop_all()
    return result


async def run_fanout(bench: Bench, options: StreamOptions) -> dict[str, Any]:
    stack = bench.start_stack()
    gateway = bench.start_gateway(
        stack, MAX_CONNECTIONS=str(max(10_000, options.subscribers + 100))
    )
    bench.wait_health_ok(gateway)
    (session_id,) = await create_sessions(gateway.port, 1)
    rec = Recorder()
    subs = [Subscriber(rec, session_id) for _ in range(options.subscribers)]
    semaphore = asyncio.Semaphore(options.setup_concurrency)
    started = time.perf_counter()
    await asyncio.gather(*(join(gateway.port, s, None, semaphore) for s in subs))
    join_s = time.perf_counter() - started
    for sub in subs:
        assert sub.ws is not None
        sub.ws.on_text = sub.on_text
    result = await stream_phase(
        bench,
        gateway,
        stack,
        rec,
        subs[:1],
        options,
        rate=options.fanout_rate,
        label=f"1 session x {options.subscribers} subscribers",
        copies=options.subscribers,
    )
    # Every subscriber completes, not just the one that started the turn.
    result["subscribers"] = options.subscribers
    result["subscribers_completed"] = sum(1 for s in subs if s.completed)
    result["pieces_expected_total"] = result["deltas_per_turn"] * options.subscribers
    result["pieces_lost"] = result["pieces_expected_total"] - result["pieces_total"]
    result["slow_consumer_closes"] = sum(
        1 for s in subs if s.ws is not None and s.ws.close_code == 4008
    )
    result["setup"] = {"connect_join_s": round(join_s, 2)}
    await close_all([s.ws for s in subs if s.ws is not None])
    bench.stop_all()
    return result


async def main_async(bench: Bench, options: StreamOptions) -> dict[str, Any]:
    result: dict[str, Any] = {"params": params(options)}
    if options.variant in ("stream", "both"):
        result["stream"] = await run_stream(bench, options)
        if options.valkey:
            with local_valkey() as valkey:
                result["stream_valkey"] = await run_stream(bench, options, valkey)
    if options.variant in ("fanout", "both"):
        result["fanout"] = await run_fanout(bench, options)
    return result


def describe(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = r["cpu"]
    health = r["health_during_window"]["latency_ms"]
    valkey = ""
    if "valkey" in r:
        valkey = (
            f", Valkey CPU {cpu['valkey']['cpu_pct']}%, "
            f"{r['valkey']['bytes_per_retained_event']} B per retained event"
        )
    per_delta = (
        f" ({r['gateway_cpu_us_per_delta']} µs/delta)" if "gateway_cpu_us_per_delta" in r else ""
    )
    return (
        f"{r['label']}: {r['delivered_pieces_per_s']:,} deltas/s in "
        f"{r['delivered_frames_per_s']:,} frames/s (offered {r['offered_pieces_per_s']:,}), "
        f"latency p50 {lat.get('p50')} p99 {lat.get('p99')} ms, gateway CPU "
        f"{cpu['gateway']['cpu_pct']}%{per_delta}{valkey} "
        f"(stack {cpu['local_stack']['cpu_pct']}%, client "
        f"{cpu['client']['cpu_pct']}%, machine {cpu['machine']['cpu_pct']}% of "
        f"{100 * (os.cpu_count() or 1)}%), RSS {r['gateway_rss_mb_end']} MB, /health max "
        f"{health.get('max')} ms{'' if r['pinned'] else ' [shared cores]'}"
    )


def main() -> int:
    options = parse_options(StreamOptions, __doc__.splitlines()[0])
    raise_nofile(2 * max(options.sessions, options.subscribers) + 10_000)
    with Bench("stream", options) as bench:
        result = run(main_async(bench, options))
    path = write_result("stream", result, options.results_dir)
    parts = [describe(result[k]) for k in ("stream", "stream_valkey", "fanout") if k in result]
    summary("stream", f"{'; '.join(parts)} [{path.name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
