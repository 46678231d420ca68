"""stream: S active sessions on the `slow` agent, one subscriber each, all streaming stamped
deltas → delivered events/s, end-to-end latency (agent emit → client receipt) p50/p99, gateway
CPU and RSS; and `fanout`: one session with F subscribers.

    .venv/bin/python bench/stream.py --sessions 5000 --rate 4 --duration 20     # 20,000 ev/s
    .venv/bin/python bench/stream.py --variant fanout --subscribers 1000 --fanout-rate 20
    .venv/bin/python bench/stream.py --valkey --instances 2 --cross 0.1   # fleet beside memory

`--valkey` runs each variant a second time with a local Valkey (`REDIS_URL`: every frame also
appended to the session's log there) and reports beside the figures above the gateway's CPU per
delivered delta, the Valkey server's CPU (from /proc/<pid>) and its bytes per retained event
(`INFO memory` `used_memory` after the window minus before the sessions, over the logs' entries),
and the ratio of per-delta CPU and p99 to the in-memory run's, judged against the issue's target
(≤ 2x, p99 < 100 ms). `--instances 2` makes that run a fleet of two gateways on the one Valkey:
each creates and owns half the sessions (its subscriber joins there first, and the first join
claims the session), `--cross` of each half is also followed by a subscriber on the other
instance (pub/sub + merge: the follower path, its latency reported apart), the CPU is per
instance and summed, per delta over all subscribers. The fan-out's subscribers all follow from
the second instance; the first owns the session and runs the turn. With `--pin`, each gateway
has a CPU of its own and the client, the local stack and Valkey share the others, or every CPU on
a 2-core host (printed, and recorded as `pinning`).

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
import sys
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
from lib.upstream_calls import calls_between, upstream_calls_of
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
    valkey: bool = option(False, "run each variant again with a local Valkey (REDIS_URL)")
    instances: int = option(
        1, "gateways in the --valkey run (1 or 2: two each own half the sessions)"
    )
    cross: float = option(
        0.1, "with --instances 2: share of each instance's sessions also followed from the other"
    )


# The target for the fleet: per-delta gateway CPU at most this times the in-memory one,
# and p99 under this, at 20,000 ev/s across two instances.
TARGET_CPU_RATIO = 2.0
TARGET_P99_MS = 100.0


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


def gateway_keys(gateways: list[Gateway]) -> list[str]:
    """The CPU meter's name of each gateway: `gateway` alone, `gateway_1`, `gateway_2` in a
    fleet run (whose `gateway` is then their sum)."""
    if len(gateways) == 1:
        return ["gateway"]
    return [f"gateway_{i + 1}" for i in range(len(gateways))]


def total_gateway_cpu(cpu: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """`cpu` with `gateway` the sum of the instances' (CPU seconds, and % of one core)."""
    if keys == ["gateway"]:
        return cpu
    used = sum(cpu[key]["cpu_s"] for key in keys)
    return {
        **cpu,
        "gateway": {"cpu_s": round(used, 3), "cpu_pct": round(100 * used / cpu["wall_s"], 1)},
    }


async def measure_window(
    gateways: list[Gateway],
    stack: Stack,
    rec: Recorder,
    options: StreamOptions,
    valkey_pid: int | None = None,
) -> dict[str, Any]:
    """The measurement window: CPU of every process (each gateway's, and Valkey's when given),
    the gateways' RSS and upstream calls, /health of the first gateway once a second, the
    client's own collector pauses. `--py-spy FILE` records the first gateway (in the Valkey run
    to FILE-valkey.EXT)."""
    keys = gateway_keys(gateways)
    pids = {
        **{key: gateway.pid for key, gateway in zip(keys, gateways, strict=True)},
        "local_stack": stack.server.pid,
        "client": os.getpid(),
        "machine": MACHINE,
    }
    meter = CpuMeter(pids if valkey_pid is None else {**pids, "valkey": valkey_pid})
    urls = [gateway.url for gateway in gateways]
    rss_start = sum(rss_bytes(gateway.pid) for gateway in gateways)
    calls_start = await asyncio.to_thread(upstream_calls_of, urls)
    rec.measuring = True
    window_unix = [round(time.time(), 3)]
    meter.begin()
    probe = asyncio.create_task(health_probe(gateways[0].url, options.duration))
    profile = options.py_spy
    if profile is not None and valkey_pid is not None:  # the Valkey run's beside memory's
        profile = profile.with_name(f"{profile.stem}-valkey{profile.suffix}")
    with py_spy(gateways[0].pid, profile, options.duration), PauseMeter() as client_gc:
        await asyncio.sleep(options.duration)
    rec.measuring = False
    window_unix.append(round(time.time(), 3))
    health_during = await probe
    cpu = total_gateway_cpu(meter.end(), keys)
    rss_end = sum(rss_bytes(gateway.pid) for gateway in gateways)
    calls_end = await asyncio.to_thread(upstream_calls_of, urls)
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
    gateways: list[Gateway],
    stack: Stack,
    rec: Recorder,
    starters: list[Subscriber],
    options: StreamOptions,
    *,
    rate: float,
    label: str,
    receivers: int,
    completions: int,
    followers: list[float],
    valkey_pid: int | None = None,
) -> dict[str, Any]:
    """Start one turn per `starters` entry, staggered over one interval; measure the window.
    `receivers` subscribers get every delta, `completions` of them wait for the turn's end;
    `followers` are the latencies of those on the session's non-owner (in a fleet run), which
    count in `latency_ms` and are also reported apart."""
    interval_ms = max(1, round(1000 / rate))
    stagger_s = interval_ms / 1000
    turn_s = stagger_s + options.warmup + options.duration + 1.0
    deltas = math.ceil(turn_s * 1000 / interval_ms)
    rec.expected_completions = completions
    start_turns(starters, turn_text(deltas, interval_ms), stagger_s)
    await asyncio.sleep(0.2 + stagger_s + options.warmup)
    window = await measure_window(gateways, stack, rec, options, valkey_pid)
    window_s = window["cpu"]["wall_s"]
    try:
        async with asyncio.timeout(turn_s + 60):
            await rec.all_done
    except TimeoutError:
        pass
    health_after = await health_probe(gateways[0].url, 0)
    latency: dict[str, Any] = {"latency_ms": percentiles(rec.latencies + followers)}
    if followers:
        latency["latency_ms_owner"] = percentiles(rec.latencies)
        latency["latency_ms_followers"] = percentiles(followers)
    return {
        "label": label,
        "pinned": bench.gateway_cpu is not None,
        "pinning": bench.pinning,
        "instances": len(gateways),
        "turns": len(starters),
        "receivers": receivers,
        "deltas_per_turn": deltas,
        "interval_ms": interval_ms,
        "offered_pieces_per_s": round(receivers * 1000 / interval_ms),
        "window_s": window_s,
        "window_unix": window["window_unix"],
        "delivered_pieces_per_s": round(rec.window_pieces / window_s),
        "delivered_frames_per_s": round(rec.window_frames / window_s),
        "pieces_per_frame": round(rec.window_pieces / max(rec.window_frames, 1), 3),
        **latency,
        "cpu": window["cpu"],
        "gateway_cpu_us_per_delta": round(
            window["cpu"]["gateway"]["cpu_s"] * 1e6 / max(rec.window_pieces, 1), 1
        ),
        "client_gc_pauses_ms": window["client_gc_pauses_ms"],
        "gateway_rss_mb_start": window["gateway_rss_mb_start"],
        "gateway_rss_mb_end": window["gateway_rss_mb_end"],
        "gateway_rss_peak_mb": round(max(hwm_bytes(g.pid) for g in gateways) / 2**20, 1),
        "turns_completed": rec.completed,
        "pieces_total": rec.pieces,
        "pieces_expected_total": deltas * receivers,
        "errors": len(rec.errors),
        "first_errors": [e.decode(errors="replace") for e in rec.errors[:3]],
        "upstream_calls_in_window": window["upstream_calls_in_window"],
        "health_during_window": window["health_during_window"],
        "health_after_turns": health_after,
    }


def start_gateways(
    bench: Bench, stack: Stack, valkey: LocalValkey | None, count: int, **settings: str
) -> list[Gateway]:
    """`count` gateways on the stack (and on `valkey`'s `REDIS_URL` when given), each on its
    own CPU with `--pin` (`Bench.pin`), all with their dependencies ok."""
    fleet = {} if valkey is None else {"REDIS_URL": valkey.url}
    gateways = [
        bench.start_gateway(
            stack,
            name="gateway" if count == 1 else f"gateway-{i + 1}",
            instance=i,
            **settings,
            **fleet,
        )
        for i in range(count)
    ]
    for gateway in gateways:
        bench.wait_health_ok(gateway)
    return gateways


def valkey_pid_of(valkey: LocalValkey | None) -> int | None:
    return None if valkey is None or valkey.process is None else valkey.process.pid


async def run_stream(
    bench: Bench, options: StreamOptions, valkey: LocalValkey | None, instances: int
) -> dict[str, Any]:
    """The stream phase; with `valkey`, the gateways append every frame to its logs there.
    With two instances each creates and owns half the sessions (its subscriber joins there
    first), and `--cross` of each half also get a follower on the other instance."""
    sessions = options.sessions
    stack = bench.start_stack()
    gateways = start_gateways(
        bench,
        stack,
        valkey,
        instances,
        # Room for the capacity reserve (the last tenth kept for tenants under their share).
        MAX_ACTIVE_SESSIONS=str(max(5000, sessions * 12 // 10)),
        MAX_CONNECTIONS=str(max(10_000, sessions + 100)),
    )
    valkey_bytes_idle = None if valkey is None else await used_memory(valkey.url)
    rss_idle = sum(rss_bytes(gateway.pid) for gateway in gateways)
    started = time.perf_counter()
    shares = [sessions // instances + (i < sessions % instances) for i in range(instances)]
    owned = await asyncio.gather(
        *(create_sessions(g.port, n) for g, n in zip(gateways, shares, strict=True))
    )
    create_s = time.perf_counter() - started

    rec = Recorder()
    followed: list[float] = []
    owners = [
        (g, Subscriber(rec, sid)) for g, ids in zip(gateways, owned, strict=True) for sid in ids
    ]
    crossing = [
        (gateways[(i + 1) % instances], Subscriber(rec, sid, followed))
        for i, ids in enumerate(owned if instances > 1 else [])
        for sid in ids[: round(len(ids) * options.cross)]
    ]
    sources = source_addresses(len(owners) + len(crossing))
    semaphore = asyncio.Semaphore(options.setup_concurrency)

    async def join_all(pairs: list[tuple[Gateway, Subscriber]], offset: int) -> list[float]:
        return await asyncio.gather(
            *(
                join(g.port, s, sources[(offset + i) % len(sources)], semaphore)
                for i, (g, s) in enumerate(pairs)
            )
        )

    started = time.perf_counter()
    join_ms = await join_all(owners, 0)  # the owners first: the first join claims the session
    follow_ms = await join_all(crossing, len(owners))
    join_s = time.perf_counter() - started
    rss_ready = sum(rss_bytes(gateway.pid) for gateway in gateways)
    subs = [s for _, s in owners + crossing]
    for sub in subs:
        assert sub.ws is not None
        sub.ws.on_text = sub.on_text
    label = f"{sessions} sessions"
    if valkey is not None:
        label += " with Valkey" if instances == 1 else f" on {instances} instances with Valkey"
    if crossing:
        label += f", {len(crossing)} followed across"
    result = await stream_phase(
        bench,
        gateways,
        stack,
        rec,
        [s for _, s in owners],
        options,
        rate=options.rate,
        label=label,
        receivers=len(subs),
        completions=len(subs),
        followers=followed,
        valkey_pid=valkey_pid_of(valkey),
    )
    if valkey is not None and valkey_bytes_idle is not None:
        retained = await retained_events(valkey.url, [sid for ids in owned for sid in ids])
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
        **({"follower_join_to_ready_ms": percentiles(follow_ms)} if crossing else {}),
        "gateway_rss_mb_idle": round(rss_idle / 2**20, 1),
        "gateway_rss_mb_sessions_ready": round(rss_ready / 2**20, 1),
        "rss_kb_per_ready_session": round((rss_ready - rss_idle) / sessions / 1024, 1),
    }
    lost = result["pieces_expected_total"] - result["pieces_total"]
    result["pieces_lost"] = lost if result["turns_completed"] == len(subs) else None
    await close_all([s.ws for s in subs if s.ws is not None])
    bench.stop_all()
    return result


async def run_fanout(
    bench: Bench, options: StreamOptions, valkey: LocalValkey | None, instances: int
) -> dict[str, Any]:
    """One session, `--subscribers` clients. With two instances the first owns the session
    (its one subscriber starts the turn) and the others join the second: followers."""
    stack = bench.start_stack()
    gateways = start_gateways(
        bench, stack, valkey, instances, MAX_CONNECTIONS=str(max(10_000, options.subscribers + 100))
    )
    owner, elsewhere = gateways[0], gateways[-1]
    (session_id,) = await create_sessions(owner.port, 1)
    rec = Recorder()
    followed: list[float] = []
    starter = Subscriber(rec, session_id)
    others = [
        Subscriber(rec, session_id, followed if instances > 1 else None)
        for _ in range(options.subscribers - 1)
    ]
    semaphore = asyncio.Semaphore(options.setup_concurrency)
    started = time.perf_counter()
    await join(owner.port, starter, None, semaphore)  # the first join claims the session
    await asyncio.gather(*(join(elsewhere.port, s, None, semaphore) for s in others))
    join_s = time.perf_counter() - started
    subs = [starter, *others]
    for sub in subs:
        assert sub.ws is not None
        sub.ws.on_text = sub.on_text
    label = f"1 session x {options.subscribers} subscribers"
    if valkey is not None:
        label += " with Valkey" if instances == 1 else f", {len(others)} following on instance 2"
    result = await stream_phase(
        bench,
        gateways,
        stack,
        rec,
        [starter],
        options,
        rate=options.fanout_rate,
        label=label,
        receivers=len(subs),
        # The starter's completion ends the wait, as before; the count below checks the rest.
        completions=1,
        followers=followed,
        valkey_pid=valkey_pid_of(valkey),
    )
    result["subscribers"] = options.subscribers
    result["subscribers_completed"] = sum(1 for s in subs if s.completed)
    result["pieces_lost"] = result["pieces_expected_total"] - result["pieces_total"]
    result["slow_consumer_closes"] = sum(
        1 for s in subs if s.ws is not None and s.ws.close_code == 4008
    )
    result["setup"] = {"connect_join_s": round(join_s, 2)}
    await close_all([s.ws for s in subs if s.ws is not None])
    bench.stop_all()
    return result


RUNS = {"stream": run_stream, "fanout": run_fanout}


async def main_async(bench: Bench, options: StreamOptions) -> dict[str, Any]:
    """Each variant in memory on one gateway; with `--valkey` again on a fresh local Valkey
    with `--instances` gateways, each pinned as `Bench.pin` prints."""
    result: dict[str, Any] = {"params": params(options)}
    for variant in ("stream", "fanout"):
        if options.variant not in (variant, "both"):
            continue
        bench.pin(1)
        result[variant] = await RUNS[variant](bench, options, None, 1)
        if options.valkey:
            bench.pin(options.instances)
            with local_valkey() as valkey:
                fleet = await RUNS[variant](bench, options, valkey, options.instances)
            result[f"{variant}_valkey"] = fleet
            result[f"{variant}_valkey_vs_memory"] = compare(result[variant], fleet)
    return result


def compare(memory: dict[str, Any], fleet: dict[str, Any]) -> dict[str, Any]:
    """The issue's fleet target: per-delta gateway CPU (summed over the instances) at most
    TARGET_CPU_RATIO times memory's, and p99 under TARGET_P99_MS. A ratio whose base is
    unmeasured (no CPU tick in a tiny window, no delta received) is None and never met."""
    base = memory["gateway_cpu_us_per_delta"]
    cpu_ratio = fleet["gateway_cpu_us_per_delta"] / base if base > 0 else None
    p99_memory = memory["latency_ms"].get("p99")
    p99_fleet = fleet["latency_ms"].get("p99")
    p99_ratio = p99_fleet / p99_memory if p99_fleet is not None and p99_memory else None
    return {
        "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 2),
        "p99_ratio": None if p99_ratio is None else round(p99_ratio, 2),
        "p99_ms": p99_fleet,
        "target_met": cpu_ratio is not None
        and cpu_ratio <= TARGET_CPU_RATIO
        and p99_fleet is not None
        and p99_fleet < TARGET_P99_MS,
    }


def describe(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = r["cpu"]
    health = r["health_during_window"]["latency_ms"]
    fleet = ""
    if "valkey" in r:
        fleet += f", {r['valkey']['bytes_per_retained_event']} B per retained event"
    if "valkey" in cpu:
        fleet += f", Valkey CPU {cpu['valkey']['cpu_pct']}%"
    if "gateway_2" in cpu:
        fleet += f" (instances {cpu['gateway_1']['cpu_pct']}% + {cpu['gateway_2']['cpu_pct']}%)"
    if "latency_ms_followers" in r:
        followers = r["latency_ms_followers"]
        fleet += f", followers p50 {followers.get('p50')} p99 {followers.get('p99')} ms"
    if r.get("pieces_lost"):
        fleet += f", {r['pieces_lost']:,} deltas LOST"
    return (
        f"{r['label']}: {r['delivered_pieces_per_s']:,} deltas/s in "
        f"{r['delivered_frames_per_s']:,} frames/s (offered {r['offered_pieces_per_s']:,}), "
        f"latency p50 {lat.get('p50')} p99 {lat.get('p99')} ms, gateway CPU "
        f"{cpu['gateway']['cpu_pct']}% ({r['gateway_cpu_us_per_delta']} µs/delta){fleet} "
        f"(stack {cpu['local_stack']['cpu_pct']}%, client "
        f"{cpu['client']['cpu_pct']}%, machine {cpu['machine']['cpu_pct']}% of "
        f"{100 * (os.cpu_count() or 1)}%), RSS {r['gateway_rss_mb_end']} MB, /health max "
        f"{health.get('max')} ms{'' if r['pinned'] else ' [shared cores]'}"
    )


def describe_comparison(c: dict[str, Any]) -> str:
    verdict = "met" if c["target_met"] else "MISSED"
    cpu, p99 = (("n/a" if v is None else f"{v}x") for v in (c["cpu_ratio"], c["p99_ratio"]))
    return (
        f"Valkey/memory: {cpu} CPU per delta, {p99} p99 "
        f"(target <= {TARGET_CPU_RATIO:g}x, p99 < {TARGET_P99_MS:g} ms: {verdict})"
    )


def main() -> int:
    options = parse_options(StreamOptions, __doc__.splitlines()[0])
    if options.instances not in (1, 2) or (options.instances > 1 and not options.valkey):
        print(
            "--instances is 1 or 2, and 2 needs --valkey (gateways without a shared Valkey "
            "are islands)",
            file=sys.stderr,
        )
        return 2
    if not 0 <= options.cross <= 1:
        print("--cross is a share, 0 to 1", file=sys.stderr)
        return 2
    raise_nofile(2 * max(options.sessions, options.subscribers) + 10_000)
    with Bench("stream", options) as bench:
        result = run(main_async(bench, options))
    path = write_result("stream", result, options.results_dir)
    parts = []
    for key in ("stream", "stream_valkey", "fanout", "fanout_valkey"):
        if key in result:
            parts.append(describe(result[key]))
        if f"{key}_vs_memory" in result:
            parts.append(describe_comparison(result[f"{key}_vs_memory"]))
    summary("stream", f"{'; '.join(parts)} [{path.name}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
