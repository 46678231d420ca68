"""Shared plumbing of the benchmarks: server processes, /proc readings, a minimal WebSocket
client, percentiles and result files.

Only the standard library and what `setup.cfg` installs are used. Every server started here binds
127.0.0.1, runs in its own process group, dies with the benchmark (PR_SET_PDEATHSIG) and is
stopped in a `finally` (SIGTERM to the group, then SIGKILL). A benchmark is also bounded in time:
`Bench.deadline` raises `BenchTimeout` from a SIGALRM, which unwinds through those `finally`s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from diminuendo.local.ports import ephemeral_range, free_port
from diminuendo.wire import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    close_payload,
    frame_bounds,
    masked_frame,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
LOCAL_KEY = "local-dev-key"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchTimeout(Exception):
    """The benchmark ran past its time bound."""


# ----- event loop ---------------------------------------------------------------------------


def run(coro: Any) -> Any:
    """Run the client side on uvloop when it is installed (Sanic installs it on Linux)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def loop_name() -> str:
    try:
        import uvloop

        return f"uvloop {uvloop.__version__}"
    except ImportError:
        return "asyncio"


# ----- limits and addresses -----------------------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) to at least `wanted`; return the soft
    limit now in force. Children (gateway, stack) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ephemeral_ports() -> int:
    low, high = ephemeral_range()
    return high - low + 1


def source_addresses(connections: int, per_address: int | None = None) -> list[str | None]:
    """Client source addresses: None (the kernel's choice, 127.0.0.1) while one address has
    ports enough, else 127.0.0.2, 127.0.0.3, … each bound explicitly (a bound port is exclusive
    per source address, so leave head room)."""
    per_address = per_address or int(ephemeral_ports() * 0.8)
    if connections <= per_address:
        return [None]
    count = math.ceil(connections / per_address)
    return [f"127.0.0.{i}" for i in range(2, 2 + count)]


# ----- processes ----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the benchmark dies, however it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL after STOP_TIMEOUT_S."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        else:  # the leader is gone; make sure nothing of its group lingers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def spawn(name: str, argv: list[str], env: dict[str, str], log: Path) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(log.parent),
            start_new_session=True,
            preexec_fn=_die_with_parent,  # the benchmark is single-threaded when it spawns
        )
    return Server(name, proc, log)


def wait_http(url: str, server: Server, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name}: {url} not up within {timeout}s:\n{server.tail()}")


@dataclass
class Stack:
    server: Server
    podium_port: int
    ensemble_port: int
    unison_port: int

    def gateway_env(self) -> dict[str, str]:
        return {
            "PODIUM_URL": f"http://127.0.0.1:{self.podium_port}",
            "ENSEMBLE_URL": f"http://127.0.0.1:{self.ensemble_port}",
            "UNISON_URL": f"http://127.0.0.1:{self.unison_port}",
            "PODIUM_API_KEY": LOCAL_KEY,
            "ENSEMBLE_API_KEY": LOCAL_KEY,
            "UNISON_API_KEY": LOCAL_KEY,
        }


@dataclass
class Gateway:
    server: Server
    port: int

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# Gateway settings every benchmark uses: quiet logs, and a per-connection message rate limit
# that a benchmark client sending requests back to back does not trip (the limiter still runs).
BENCH_GATEWAY_ENV = {
    "LOG_LEVEL": "warning",
    "LOG_FORMAT": "json",
    "WS_RATE_LIMIT": "1000000/10s",
    # Every benchmark client is the one dev-mode tenant, so its quota must not be the limit
    # (PROTOCOL §13's per-tenant default of 1,000 is below the 2,000-5,000 sessions measured).
    "MAX_ACTIVE_SESSIONS_PER_TENANT": "1000000",
}


class Bench:
    """One benchmark run: its work directory, its servers (always stopped) and its deadline."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.servers: list[Server] = []
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.started = time.time()
        self._keep = bool(getattr(args, "keep_logs", False))
        self.gateway_cpu: int | None = None  # set by --pin

    def __enter__(self) -> Bench:
        timeout = int(getattr(self.args, "timeout", 0) or 0)
        if timeout:

            def expired(signum: int, frame: Any) -> None:
                raise BenchTimeout(f"{self.name}: over its {timeout}s bound")

            signal.signal(signal.SIGALRM, expired)
            signal.alarm(timeout)

        def terminated(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, terminated)
        if getattr(self.args, "pin", False):
            self.gateway_cpu = pin_load_generator()
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.alarm(0)
        self.stop_all()
        if self._keep:
            print(f"[{self.name}] logs kept in {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def stop(self, server: Server) -> None:
        if server in self.servers:
            self.servers.remove(server)
        server.stop()

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str], *, under_test: bool = False
    ) -> Server:
        """Start a server; with `--pin`, the one `under_test` gets the gateway's core and any
        other (the local stack) inherits the load generator's."""
        server = spawn(name, argv, env, self.work / f"{name}.log")
        self.servers.append(server)
        if under_test and self.gateway_cpu is not None:
            os.sched_setaffinity(server.pid, {self.gateway_cpu})
        return server

    def start_stack(self) -> Stack:
        ports = free_port(), free_port(), free_port()
        data = self.work / "stack"
        data.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "diminuendo", "local-stack"]
        argv += ["--podium-port", str(ports[0]), "--ensemble-port", str(ports[1])]
        argv += ["--unison-port", str(ports[2])]
        env = {**os.environ, "DATA_DIR": str(data), "LOG_LEVEL": "warning"}
        env["PYTHONPATH"] = str(ROOT)
        server = self.spawn("local-stack", argv, env)
        wait_http(f"http://127.0.0.1:{ports[0]}/health", server)
        wait_http(f"http://127.0.0.1:{ports[1]}/api/v1/health", server)
        wait_http(f"http://127.0.0.1:{ports[2]}/api/v1/health", server)
        return Stack(server, *ports)

    def start_gateway(
        self, stack: Stack, *, name: str = "gateway", dev: bool = True, **overrides: str
    ) -> Gateway:
        port = free_port()
        data = self.work / name
        data.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "DEV_MODE": "true" if dev else "false",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATA_DIR": str(data),
            "PYTHONPATH": str(ROOT),
            **BENCH_GATEWAY_ENV,
            **stack.gateway_env(),
            **overrides,
        }
        command = ["dev", "--no-reload", "--no-stack"] if dev else ["serve"]
        argv = [sys.executable, "-m", "diminuendo", *command]
        if getattr(self.args, "trace_memory", False):
            argv = [sys.executable, str(BENCH_DIR / "tools" / "serve_traced.py"), *command]
            env["BENCH_TRACE_OUT"] = str(self.work / f"{name}-memory.txt")
        elif getattr(self.args, "watchdog", None):
            argv = [sys.executable, str(BENCH_DIR / "tools" / "serve_watchdog.py"), *command]
            env["BENCH_WATCHDOG_OUT"] = str(self.args.watchdog)
        server = self.spawn(name, argv, env, under_test=True)
        gateway = Gateway(server, port)
        wait_http(f"{gateway.url}/health", server)
        return gateway

    def start_bare(self) -> Gateway:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, str(BENCH_DIR / "bare_sanic.py"), "--port", str(port)]
        server = self.spawn("bare-sanic", argv, env, under_test=True)
        bare = Gateway(server, port)
        wait_http(f"{bare.url}/health", server)
        return bare

    def wait_health_ok(self, gateway: Gateway, timeout: float = 15.0) -> dict[str, Any]:
        """Until every dependency probe has answered ok (the probe cache is warm)."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = httpx.get(f"{gateway.url}/health", timeout=2).json()
            deps = body.get("dependencies", {})
            if deps and all(d.get("ok") for d in deps.values()):
                return body
            time.sleep(0.1)
        raise RuntimeError(f"gateway health never became ok: {body}")


# ----- /proc readings -----------------------------------------------------------------------


def proc_status_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    return proc_status_kb(pid, "VmRSS") * 1024


def hwm_bytes(pid: int) -> int:
    return proc_status_kb(pid, "VmHWM") * 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def listen_overflows() -> int:
    """Host-wide TcpExt ListenOverflows: SYNs dropped because an accept queue was full (each
    costs the client a 1 s SYN retransmit)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", -1))
    return -1


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU seconds of several processes over a window."""

    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def begin(self) -> None:
        self.wall = time.monotonic()
        self.start = {name: self._read(pid) for name, pid in self.pids.items()}

    def end(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        out: dict[str, Any] = {"wall_s": round(wall, 3)}
        for name, pid in self.pids.items():
            used = self._read(pid) - self.start[name]
            out[name] = {"cpu_s": round(used, 3), "cpu_pct": round(100 * used / wall, 1)}
        return out

    @staticmethod
    def _read(pid: int) -> float:
        if pid == MACHINE:
            return machine_busy_seconds()
        return self_cpu_seconds() if pid == os.getpid() else cpu_seconds(pid)


MACHINE = 0  # CpuMeter key for the whole machine: busy CPU of all cores, whoever uses it


def machine_busy_seconds() -> float:
    """Busy (non-idle, non-iowait) CPU seconds of all cores since boot, from /proc/stat. Over a
    window, busy - (our processes) is what the rest of the machine used meanwhile."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / CLK_TCK


def upstream_calls(url: str) -> dict[str, dict[str, float]]:
    """Upstream calls so far per service from the gateway's /metrics: count, seconds, failures."""
    out: dict[str, dict[str, float]] = {}
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        for metric, key in (
            ("diminuendo_upstream_request_seconds_count", "calls"),
            ("diminuendo_upstream_request_seconds_sum", "seconds"),
            ("diminuendo_upstream_failures_total", "failures"),
        ):
            if line.startswith(metric + "{"):
                service = line.split('service="', 1)[1].split('"', 1)[0]
                out.setdefault(service, {})[key] = float(line.rsplit(" ", 1)[1])
    return out


def calls_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for service, values in after.items():
        base = before.get(service, {})
        diff[service] = {k: round(v - base.get(k, 0.0), 3) for k, v in values.items()}
    return diff


# ----- statistics ---------------------------------------------------------------------------


def percentiles(samples: list[float], digits: int = 3) -> dict[str, Any]:
    """p50/p95/p99 (nearest rank), mean, min, max of `samples` (ms in, ms out)."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]

    return {
        "n": n,
        "p50": round(rank(50), digits),
        "p95": round(rank(95), digits),
        "p99": round(rank(99), digits),
        "mean": round(sum(ordered) / n, digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
    }


# ----- machine and results ------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def calibration_ms() -> float:
    """A fixed pure-Python workload (best of 5), to compare runs on a machine whose speed
    drifts (shared or throttled hosts): lower is faster."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i % 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "sanic": _version("sanic"),
        "websockets": _version("websockets"),
        "msgspec": _version("msgspec"),
        "client_loop": loop_name(),
        "cpu_calibration_ms": calibration_ms(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def write_result(name: str, data: dict[str, Any], results_dir: Path | None = None) -> Path:
    results_dir = results_dir or RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = results_dir / f"{name}-{stamp}.json"
    suffix = 1
    while path.exists():
        suffix += 1
        path = results_dir / f"{name}-{stamp}-{suffix}.json"
    body = {"benchmark": name, "timestamp": stamp, "machine": machine_info(), **data}
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
    return path


def summary(name: str, text: str) -> None:
    print(f"{name}: {text}", flush=True)


def pin_load_generator() -> int | None:
    """Leave one CPU to the gateway: this process (and so everything it starts: the local stack,
    wrk, py-spy) moves to the other CPUs it may use. Returns the gateway's CPU (the lowest this
    process may use), or None, unpinned, where it may use only one."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        print("one CPU: --pin ignored, the gateway shares it", file=sys.stderr)
        return None
    os.sched_setaffinity(0, allowed[1:])
    return allowed[0]


def base_parser(description: str, *, pin_default: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=pin_default,
        help="the gateway alone on one CPU (the lowest allowed), the load generator and the "
        "local stack on the others (a gateway is one process on one core; this keeps the test "
        "doubles' CPU out of its measurements)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--timeout", type=int, default=900, help="hard bound in seconds")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs")
    parser.add_argument(
        "--watchdog",
        type=Path,
        default=None,
        metavar="FILE",
        help="run the gateway under tools/serve_watchdog.py: loop stalls over 50 ms, with the "
        "stack that caused them, go to FILE",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="FILE",
        help="profile the gateway with py-spy during the measurement (collapsed stacks to FILE)",
    )
    return parser


# ----- profiling ----------------------------------------------------------------------------


def py_spy_path() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, duration_s: float, rate: int = 250) -> Iterator[None]:
    """Record the gateway with py-spy (collapsed "raw" stacks) while the block runs."""
    if out is None:
        yield
        return
    exe = py_spy_path()
    if exe is None:
        print("py-spy not installed: no profile", file=sys.stderr)
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    argv += ["--duration", str(max(1, int(duration_s))), "--output", str(out), "--nonblocking"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        yield
    finally:
        try:
            proc.wait(duration_s + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(10)


# ----- a minimal WebSocket client -----------------------------------------------------------


class WSError(Exception):
    pass


class WS(asyncio.Protocol):
    """The client end of one WebSocket, parsing as little as possible (`diminuendo.wire`).

    Text frames are handed to `on_text(payload_bytes)` when set, else queued for `recv()`. Pings
    are answered, a close frame is echoed. No extension, no compression; server frames are
    unmasked (RFC 6455), client frames masked.
    """

    def __init__(self, request: bytes, on_text: Callable[[bytes], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None
        self.upgraded: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.close_code: int | None = None
        self._head = bytearray()  # the upgrade response, until its blank line
        self._frames: FrameReader | None = None  # set once upgraded
        self._frag: list[bytes] | None = None
        self._inbox: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._frames = None
        if not self.upgraded.done():
            self.upgraded.set_exception(WSError(f"connection lost before upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)
        self._wake()

    def data_received(self, data: bytes) -> None:
        frames = self._frames
        if frames is None:
            data = self._read_head(data)
            frames = self._frames
            if frames is None:
                return
        frames.feed(data)
        if frames.stopped and self.transport is not None:  # a frame no server may send
            self.transport.close()

    def _read_head(self, data: bytes) -> bytes:
        """Take the upgrade response from the start of the stream; return the bytes after it."""
        head = self._head
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        try:
            self.status = int(head[:end].split(b" ", 2)[1])
        except (IndexError, ValueError):
            self.status = 0
        rest = bytes(head[end + 4 :])
        head.clear()
        if self.status != 101:
            if not self.upgraded.done():
                self.upgraded.set_exception(WSError(f"upgrade refused: HTTP {self.status}"))
            if self.transport is not None:
                self.transport.close()
            return b""
        self._frames = FrameReader(self._message, self._other_frame)
        self.upgraded.set_result(101)
        return rest

    def _other_frame(self, frame: bytes) -> None:
        """A frame off the text fast path: a fragment, a binary message, a ping or a close."""
        bounds = frame_bounds(frame, 0)
        assert bounds is not None  # the reader hands on whole frames only
        first = bounds[2]
        payload = frame[bounds[0] :]
        opcode = first & 0x0F
        if opcode == PING:
            self._send_frame(PONG, payload)
        elif opcode == CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            with contextlib.suppress(Exception):
                self._send_frame(CLOSE, payload[:2])
            if self.transport is not None:
                self.transport.close()
        elif opcode < CLOSE:  # a data frame: keep fragments until the final one
            self._frag = (self._frag or []) + [payload]
            if first & 0x80:
                whole, self._frag = b"".join(self._frag), None
                self._message(whole)

    def _message(self, payload: bytes) -> None:
        if self.on_text is not None:
            self.on_text(payload)
        else:
            self._inbox.append(payload)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # sending
    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(masked_frame(opcode, payload))

    def send_text(self, text: str | bytes) -> None:
        self._send_frame(TEXT, text.encode() if isinstance(text, str) else text)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message, separators=(",", ":")))

    async def recv(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            while not self._inbox:
                if self.closed.done():
                    raise WSError(f"closed ({self.close_code})")
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            return self._inbox.popleft()

    async def recv_json(self, timeout: float = 10.0) -> dict[str, Any]:
        return json.loads(await self.recv(timeout))

    async def recv_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0):
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv_json(timeout)
                if predicate(frame):
                    return frame

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self._send_frame(CLOSE, close_payload(1000))
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def upgrade_request(port: int, path: str = "/ws", headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def ws_connect(
    port: int,
    *,
    path: str = "/ws",
    headers: dict[str, str] | None = None,
    local_ip: str | None = None,
    on_text: Callable[[bytes], None] | None = None,
    timeout: float = 10.0,
) -> WS:
    loop = asyncio.get_running_loop()
    request = upgrade_request(port, path, headers)
    local = (local_ip, 0) if local_ip else None
    async with asyncio.timeout(timeout):
        _, proto = await loop.create_connection(
            lambda: WS(request, on_text), "127.0.0.1", port, local_addr=local
        )
        await proto.upgraded
    return proto


async def gateway_handshake(ws: WS, timeout: float = 10.0) -> list[str]:
    """The three frames a dev-mode (or header-authenticated) client gets on open."""
    types = []
    for _ in range(3):
        frame = await ws.recv_json(timeout)
        types.append(frame.get("type"))
    if types != ["welcome", "connected", "authenticated"]:
        raise WSError(f"unexpected handshake {types}")
    return types


async def close_all(sockets: list[WS], grace_s: float = 5.0) -> None:
    for ws in sockets:
        ws.close()
    pending = [ws.closed for ws in sockets if not ws.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=grace_s)
    for ws in sockets:
        if not ws.closed.done():
            ws.abort()
