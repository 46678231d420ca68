"""The smoke test of a built pyz (build.sh, docs/PACKAGING.md "What the smoke test checks").

Run by the pyz's own interpreter, so that every import here (websockets, diminuendo's ports
helper) is the bundled one:

    SHIV_INTERPRETER=1 SHIV_ROOT=… python dist/diminuendo-pyX.Y.pyz pyzbuild/smoke.py PYZ WORK

shiv runs this file with `exec`, so it imports nothing from beside it. The checks: the bundled
imports, the console entry, a bad configuration refused, then the local stand-ins and a gateway
from the pyz serving one WebSocket turn, SIGTERM drain, and the same with WORKERS=2 (spawned
workers). Every process it starts runs the pyz with this interpreter (sys.executable), never
through its shebang, binds 127.0.0.1 on a port from `free_port()`, and is stopped by its PID;
every wait is bounded. A failed check exits non-zero with the reason; logs stay in WORK/run/.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from diminuendo.local.ports import free_port

GRACE_S = 15.0
TURN_TEXT = "Smoke test from the built zipapp: streaming works."
# What the pyz must bundle; `diminuendo` must come from the extracted pyz, not a source tree.
IMPORT_CHECK = """\
import sanic, sanic_ext, uvloop, msgspec, jwt, cryptography, httpx, boto3, loguru
import websockets, prometheus_client, diminuendo.app, diminuendo, os, sys
where = os.path.realpath(diminuendo.__file__)
assert where.startswith(os.path.realpath(os.environ['SHIV_ROOT'])), where
print('ok', sys.version.split()[0])
"""
# `serve` refuses dev mode; the dev gateway alone, against the stand-ins started first.
DEV_GATEWAY = ["dev", "--no-reload", "--no-stack"]


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the pyz's children: no SHIV_* setting but SHIV_ROOT, so they run
    the console entry, not the interpreter this script runs in."""
    return {k: v for k, v in environ.items() if not k.startswith("SHIV_") or k == "SHIV_ROOT"}


def gateway_env(
    port: int, upstreams: Mapping[str, int], data_dir: Path, **extra: str
) -> dict[str, str]:
    """A dev-mode gateway on 127.0.0.1:`port` whose upstreams are the stand-ins' ports."""
    env = {
        "DEV_MODE": "true",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        **extra,
    }
    for name, upstream_port in upstreams.items():
        env[f"{name.upper()}_URL"] = f"http://127.0.0.1:{upstream_port}"
        env[f"{name.upper()}_API_KEY"] = "local-dev-key"
    return env


def streamed_text(frames: list[dict[str, Any]], text: str) -> int:
    """The number of `text_delta`s of a finished turn, after checking that they concatenate to
    `text` and that `turn_complete.finalText` is `text`."""
    deltas = [f["text"] for f in frames if f.get("type") == "text_delta"]
    assert "".join(deltas) == text, (deltas, text)
    assert frames[-1]["finalText"] == text, frames[-1]
    return len(deltas)


class Processes:
    """The pyz's processes this run started, each logging to WORK/<name>.log."""

    def __init__(self, pyz: str, work: Path) -> None:
        self.pyz, self.work = pyz, work
        self.env = child_env(os.environ)
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        with (self.work / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, self.pyz, *args],
                cwd=self.work,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started.append((name, proc))
        return proc

    def process(self, name: str) -> subprocess.Popen:
        return dict(self.started)[name]

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def fail(self, name: str, reason: str) -> SystemExit:
        return SystemExit(f"{reason}:\n{self.log(name)[-3000:]}")

    def wait_healthy(self, name: str, url: str, want_ok: bool, timeout: float = 60) -> dict:
        """The /health body once it answers 200 (and, with `want_ok`, says "ok")."""
        proc = self.process(name)
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise self.fail(name, f"{name} exited {proc.returncode}")
            status, body = get_json(url)
            if status == 200 and (not want_ok or body.get("status") == "ok"):
                return body
            time.sleep(0.2)
        raise self.fail(name, f"{url} not healthy within {timeout}s (last {body})")

    def stop_all(self) -> None:
        for _, proc in self.started:
            stop(proc, 10)


def get_json(url: str) -> tuple[int, dict]:
    """(status, JSON body); (0, {}) while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except OSError:
        return 0, {}


def stop(proc: subprocess.Popen, timeout: float) -> tuple[int | None, float]:
    """SIGTERM, then SIGKILL after `timeout`: (exit status or None if killed, seconds taken)."""
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return None, time.monotonic() - t0
    return proc.returncode, time.monotonic() - t0


def run_pyz(
    pyz: str, args: list[str], cwd: Path, env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """One short run of the pyz, bounded by `timeout`; its output and errors captured."""
    return subprocess.run(
        [sys.executable, pyz, *args],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_pyz_entry(pyz: str, work: Path) -> None:
    """Bundled imports, the console entry, and a configuration refused with exit 2."""
    print("smoke: imports (SHIV_INTERPRETER=1)")
    env = child_env(os.environ)
    done = run_pyz(pyz, ["-c", IMPORT_CHECK], work, {**env, "SHIV_INTERPRETER": "1"}, 120)
    if done.returncode != 0 or not done.stdout.startswith("ok "):
        raise SystemExit(f"smoke: imports failed: {done.stdout}{done.stderr}")
    version = done.stdout.split()[1]
    print(f"smoke: imports ok (Python {version}, diminuendo from the extracted pyz)")

    done = run_pyz(pyz, ["--version"], work, env, 60)
    if done.returncode != 0:
        raise SystemExit(f"smoke: --version failed: {done.stdout}{done.stderr}")
    print(f"smoke: console entry ok ({done.stdout.strip()})")

    bare = {"PATH": os.environ["PATH"], "HOME": str(work), "SHIV_ROOT": os.environ["SHIV_ROOT"]}
    done = run_pyz(pyz, ["check-config"], work, bare, 60)
    output = done.stdout + done.stderr
    if done.returncode != 2 or "config error:" not in output:
        raise SystemExit(
            "smoke: check-config without configuration should exit 2"
            f" (got {done.returncode}): {output}"
        )
    problems = sum("config error:" in line for line in output.splitlines())
    print(f"smoke: bad configuration refused with exit 2 ({problems} problems)")


async def recv(ws: ClientConnection, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def request(
    ws: ClientConnection, message: dict, rid: str, timeout: float = 15
) -> tuple[dict, list[dict]]:
    """Send `message` with id `rid`; (its reply, every frame up to and including it)."""
    await ws.send(json.dumps({**message, "id": rid}))
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            seen.append(frame)
            if frame.get("id") == rid:
                return frame, seen


async def handshake(ws: ClientConnection) -> None:
    types = [(await recv(ws))["type"] for _ in range(3)]
    assert types == ["welcome", "connected", "authenticated"], types


async def turn(port: int) -> int:
    """Create an echo session, join it, run one turn; the number of deltas it streamed."""
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, close_timeout=5) as ws:
        await handshake(ws)
        create = {"type": "create_session", "agentType": "echo", "name": "smoke"}
        created, _ = await request(ws, create, "c1")
        assert created["type"] == "session_created", created
        sid = created["session"]["id"]
        joined, _ = await request(ws, {"type": "join_session", "sessionId": sid}, "j1")
        assert joined["type"] == "state_snapshot", joined
        run = {"type": "run_turn", "sessionId": sid, "text": TURN_TEXT}
        _, frames = await request(ws, run, "t1", timeout=30)
        assert frames[-1]["type"] != "error", frames[-1]
        async with asyncio.timeout(30):
            while frames[-1].get("type") != "turn_complete":
                frames.append(await recv(ws, 30))
        return streamed_text(frames, TURN_TEXT)


async def drain(proc: subprocess.Popen, port: int) -> tuple[int | None, float, int | None]:
    """Hold a socket open, SIGTERM the gateway: (exit status, seconds, the client's close code);
    the socket must close 1001 and the process exit 0 within the grace period."""
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, close_timeout=5) as ws:
        await handshake(ws)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = None
        try:
            async with asyncio.timeout(GRACE_S):
                while True:
                    await ws.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            pass
    remaining = max(0.5, GRACE_S - (time.monotonic() - t0))
    try:
        await asyncio.to_thread(proc.wait, remaining)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None, time.monotonic() - t0, code
    return proc.returncode, time.monotonic() - t0, code


def start_stack(procs: Processes) -> dict[str, int]:
    """The local stand-ins on free ports, once healthy: upstream name → port."""
    ports = {"podium": free_port(), "ensemble": free_port(), "unison": free_port()}
    args = ["local-stack"]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    procs.start("local-stack", args, {"DATA_DIR": str(procs.work / "data-stack")})
    procs.wait_healthy("local-stack", f"http://127.0.0.1:{ports['podium']}/health", False)
    for name in ("ensemble", "unison"):
        url = f"http://127.0.0.1:{ports[name]}/api/v1/health"
        procs.wait_healthy("local-stack", url, False)
    listed = ", ".join(f"{name} :{port}" for name, port in ports.items())
    print(f"smoke: local-stack up ({listed})")
    return ports


def start_gateway(
    procs: Processes, name: str, upstreams: dict[str, int], **extra: str
) -> tuple[subprocess.Popen, int, dict]:
    """A dev gateway from the pyz on a free port, once /health says ok: (process, port, the
    /health body)."""
    port = free_port()
    data_dir = procs.work / f"data-gateway-{port}"
    proc = procs.start(name, DEV_GATEWAY, gateway_env(port, upstreams, data_dir, **extra))
    body = procs.wait_healthy(name, f"http://127.0.0.1:{port}/health", True)
    return proc, port, body


def check_gateway(procs: Processes, upstreams: dict[str, int]) -> None:
    """/health, /metrics, one WebSocket turn, then SIGTERM with a client connected."""
    gateway, port, body = start_gateway(procs, "gateway", upstreams)
    print(f"smoke: gateway /health ok (port {port}, version {body.get('version')})")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert b"# HELP" in resp.read(), "/metrics is not Prometheus text"
    print("smoke: /metrics ok")

    deltas = asyncio.run(turn(port))
    print(f"smoke: websocket turn ok ({deltas} deltas, finalText matches)")

    rc, took, close = asyncio.run(drain(gateway, port))
    if rc != 0 or close != 1001:
        reason = f"gateway SIGTERM: exit {rc} after {took:.1f}s, client close {close}"
        raise procs.fail("gateway", reason)
    print(f"smoke: SIGTERM -> exit 0 in {took:.1f}s, client closed 1001")


def wait_for_workers(procs: Processes, name: str, port: int, count: int) -> None:
    """Until `count` workers answer /health (distinct `instanceId`s; the kernel spreads new
    connections over the SO_REUSEPORT listeners): every worker of the pyz serves, and the
    SIGTERM that follows checks the drain of serving workers."""
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise procs.fail(name, f"{len(seen)} of {count} workers answered /health in 60s")
        status, body = get_json(f"http://127.0.0.1:{port}/health")
        if status == 200 and body.get("instanceId"):
            seen.add(body["instanceId"])
        time.sleep(0.05)


def check_spawned_workers(procs: Processes, upstreams: dict[str, int]) -> None:
    """WORKERS=2: two workers under the gateway's own supervisor (`diminuendo.supervisor`),
    healthy, and SIGTERM drains both and exits 0."""
    name = "gateway-workers2"
    workers, port, _ = start_gateway(procs, name, upstreams, WORKERS="2")
    wait_for_workers(procs, name, port, 2)
    rc, took, _ = asyncio.run(drain(workers, port))
    if rc != 0:
        raise procs.fail(name, f"WORKERS=2 gateway SIGTERM: exit {rc} after {took:.1f}s")
    print(f"smoke: WORKERS=2 (spawned workers) healthy, SIGTERM -> exit 0 in {took:.1f}s")


def main(pyz: str, work: Path) -> int:
    check_pyz_entry(pyz, work)
    run = work / "run"
    run.mkdir(parents=True, exist_ok=True)
    procs = Processes(pyz, run)
    try:
        upstreams = start_stack(procs)
        check_gateway(procs, upstreams)
        check_spawned_workers(procs, upstreams)
        rc, took = stop(procs.process("local-stack"), 15)
        if rc != 0:
            raise procs.fail("local-stack", f"local-stack SIGTERM: exit {rc}")
        print(f"smoke: stand-ins stopped (exit 0 in {took:.1f}s)")
    finally:
        procs.stop_all()
    print("smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # interleaved with build.sh's own lines
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("smoke: interrupted (SIGTERM)"))
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
