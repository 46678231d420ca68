#!/usr/bin/env bash
# Build dist/diminuendo-pyX.Y.pyz — one shiv zipapp holding the gateway and every dependency,
# for the CPython minor X.Y that builds it — then smoke-test the file that was built, run by that
# same interpreter (docs/PACKAGING.md).
#
#   ./build.sh                        build + smoke test
#   ./build.sh --check-reproducible   build twice from scratch, require identical sha256, smoke test
#   ./build.sh --no-smoke             build only
#
# Needs only Python 3.11+ with pip (and the package index pip is configured for); the build tools
# (shiv) live in their own venv under build/. Environment:
#   PYTHON                  interpreter to build for: a name (python3.13), a version (3.13) or a
#                           path; a version manager's shim that refuses is looked through
#                           (scripts/python.sh). Default python3.11 (the Dockerfile's default
#                           PYTHON_VERSION), else python3; only the default build is also
#                           dist/diminuendo.pyz. The shebang is `/usr/bin/env python3.X`.
#   SOURCE_DATE_EPOCH       zip timestamps (default: time of the last commit, else 1980-01-01)
#   PIP_CONSTRAINT          a constraints file, to pin dependency versions across time
#   DIMINUENDO_CHECK_REPRODUCIBLE=1   same as --check-reproducible
#   DIMINUENDO_SKIP_SMOKE=1           same as --no-smoke
# Artifacts: dist/diminuendo-pyX.Y.pyz (and dist/diminuendo.pyz, the same file, for the default
# build); everything else under build/pyX.Y/ (both git-ignored).
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC PYTHONHASHSEED=0 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
# An activated venv (e.g. the project's editable .venv) must not become the pyz's interpreter in
# the smoke test: its import hooks would hide what the pyz itself holds.
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PATH=":$PATH:"
    PATH="${PATH//":$VIRTUAL_ENV/bin:"/:}"
    PATH="${PATH#:}"
    PATH="${PATH%:}"
    unset VIRTUAL_ENV
fi

SHIV_VERSION="1.0.8"
STEP_TIMEOUT=900   # seconds, for each pip step
SMOKE_TIMEOUT=300  # seconds, for the whole gateway smoke test

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
build="$root/build"
dist="$root/dist"
DEFAULT_PYTHON=python3.11  # the Dockerfile's default PYTHON_VERSION

check_repro="${DIMINUENDO_CHECK_REPRODUCIBLE:-0}"
smoke=1
[[ "${DIMINUENDO_SKIP_SMOKE:-0}" == 1 ]] && smoke=0
for arg in "$@"; do
    case "$arg" in
        --check-reproducible) check_repro=1 ;;
        --no-smoke) smoke=0 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg (try --help)" >&2; exit 64 ;;
    esac
done

log() { printf '%s\n' "$*"; }
# pip, time-bounded, without this machine's "Location … is ignored" noise from its index config.
pip_() {
    timeout "$STEP_TIMEOUT" "$vpy" -m pip "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

# --- the interpreter, and the minor version the pyz is pinned to -------------------------------
# shellcheck source=scripts/python.sh
source "$root/scripts/python.sh"
if [[ -n "${PYTHON:-}" ]]; then
    python="$(resolve_python "$PYTHON")" || die "set PYTHON to an interpreter that runs"
    default_build=0
else
    python="$(resolve_python "$DEFAULT_PYTHON" 2>/dev/null || resolve_python python3)" \
        || die "no $DEFAULT_PYTHON or python3 here (set PYTHON=…)"
    default_build=1
fi
minor="$(python_minor "$python")" || die "cannot build with $python"
shebang="/usr/bin/env python$minor"
pyz="$dist/diminuendo-py$minor.pyz"
work="$build/py$minor"  # per minor: builds for two interpreters never share a directory
log "build: Python $minor ($python) → ${pyz#"$root"/}"
# The shebang is for the machine that runs the pyz. Here, the smoke test runs it with $python.
if ! "python$minor" -c '' >/dev/null 2>&1; then
    log "build: note: python$minor on PATH does not run here; run the pyz as: $python ${pyz#"$root"/}"
fi

if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
    SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct 2>/dev/null || true)"
    SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"
fi
export SOURCE_DATE_EPOCH

# --- build tools in their own venv ---------------------------------------------------------------
venv="$build/venv-py$minor"
vpy="$venv/bin/python"
stamp="$venv/.build-tools"
want="shiv==$SHIV_VERSION $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$vpy" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    log "build: creating the build venv $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv" || die "cannot create a venv with $python (install its venv module)"
    pip_ install --quiet "shiv==$SHIV_VERSION"
    echo "$want" >"$stamp"
fi

# --- one build: source copy → wheel → site-packages → normalised → shiv -------------------------
build_once() {
    local out="$1"
    local src="$work/src" wheels="$work/wheels" site="$work/site-packages"
    rm -rf "$src" "$wheels" "$site"
    mkdir -p "$src" "$wheels" "$dist"

    # A clean copy of what the wheel is made of: no stale build/lib, no caches, nothing written
    # into the work tree.
    local parts=(diminuendo setup.cfg pyproject.toml README.md)
    for optional in setup.py MANIFEST.in LICENSE; do
        [[ -e "$optional" ]] && parts+=("$optional")
    done
    tar --exclude=__pycache__ --exclude='*.pyc' --exclude='*.pyo' -cf - "${parts[@]}" \
        | tar -xf - -C "$src"

    log "build: wheel of the project"
    pip_ wheel --quiet --no-deps --wheel-dir "$wheels" "$src"
    local wheel
    wheel="$(ls "$wheels"/diminuendo-*.whl)"

    # Every non-Python file of the package must be in the wheel (package_data drift).
    "$vpy" - "$src/diminuendo" "$wheel" <<'PY'
import sys, zipfile
from pathlib import Path
pkg, wheel = Path(sys.argv[1]), sys.argv[2]
names = set(zipfile.ZipFile(wheel).namelist())
missing = [
    f"diminuendo/{p.relative_to(pkg).as_posix()}"
    for p in sorted(pkg.rglob("*"))
    if p.is_file() and p.suffix != ".py"
    and f"diminuendo/{p.relative_to(pkg).as_posix()}" not in names
]
if missing:
    sys.exit("build.sh: package files missing from the wheel (add them to [options.package_data]"
             " in setup.cfg): " + ", ".join(missing))
PY

    log "build: installing the wheel and its dependencies (no .pyc)"
    pip_ install --quiet --no-compile --no-warn-script-location \
        --only-binary=:all: --target "$site" "$wheel"

    # What was resolved, usable as PIP_CONSTRAINT to rebuild the same set later.
    pip_ freeze --path "$site" | grep -v -E '^diminuendo( |==|@)' >"$work/requirements.lock"

    # Remove what depends on the build machine or directory, fix modes (umask-proof).
    "$vpy" - "$site" <<'PY'
import os, shutil, sys
from pathlib import Path
site = Path(sys.argv[1])
shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with absolute shebangs
for cache in sorted(site.rglob("__pycache__"), reverse=True):
    shutil.rmtree(cache, ignore_errors=True)
for path in site.rglob("*.pyc"):
    path.unlink()
for path in site.glob("*.dist-info/direct_url.json"):  # holds the build directory's path
    path.unlink()

def dropped(entry: str) -> bool:
    name = entry.split(",", 1)[0]
    return (name.startswith(("bin/", "../")) or name.endswith("/direct_url.json")
            or "__pycache__/" in name)

for record in site.glob("*.dist-info/RECORD"):
    lines = record.read_text(encoding="utf-8").splitlines()
    record.write_text("".join(f"{ln}\n" for ln in lines if not dropped(ln)), encoding="utf-8")
for path in site.rglob("*"):
    if path.is_symlink():
        continue
    mode = path.stat().st_mode
    executable = path.is_dir() or mode & 0o111
    os.chmod(path, 0o755 if executable else 0o644)
PY

    # The build id names the extraction directory under SHIV_ROOT: version + content hash, so the
    # same content always reuses one directory and any change gets a new one.
    local version content build_id
    version="$(basename "$wheel" | cut -d- -f2)"
    content="$("$vpy" - "$site" <<'PY'
import hashlib, sys
from pathlib import Path
site, digest = Path(sys.argv[1]), hashlib.sha256()
for path in sorted(site.rglob("*"), key=lambda p: p.relative_to(site).as_posix()):
    if path.is_file():
        mode = oct(path.stat().st_mode & 0o777)
        digest.update(f"{path.relative_to(site).as_posix()}\0{mode}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
print(digest.hexdigest())
PY
)"
    build_id="$version-${content:0:20}"

    log "build: shiv → $out (build id $build_id, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
    rm -f "$out.tmp"
    "$venv/bin/shiv" --console-script diminuendo --output-file "$out.tmp" --python "$shebang" \
        --site-packages "$site" --build-id "$build_id" --reproducible --compressed \
        | { grep -v "overridden the default build-id" || true; }
    mv -f "$out.tmp" "$out"
    [[ "$(head -n 1 "$out")" == "#!$shebang" ]] || die "unexpected shebang in $out"
}

build_once "$pyz"
sha="$(sha256sum "$pyz" | cut -d' ' -f1)"
log "build: $pyz sha256 $sha"
log "build: resolved dependencies in ${work#"$root"/}/requirements.lock ($(wc -l <"$work/requirements.lock") packages)"

if [[ "$check_repro" == 1 ]]; then
    log "reproducible: building again from scratch"
    build_once "$work/diminuendo.pyz.second"
    sha2="$(sha256sum "$work/diminuendo.pyz.second" | cut -d' ' -f1)"
    if [[ "$sha" != "$sha2" ]]; then
        "$vpy" - "$pyz" "$work/diminuendo.pyz.second" <<'PY' >&2 || true
import sys, zipfile
a, b = ({i.filename: (i.CRC, i.external_attr, i.date_time) for i in zipfile.ZipFile(p).infolist()}
        for p in sys.argv[1:3])
for name in sorted(set(a) | set(b)):
    if a.get(name) != b.get(name):
        print(f"  differs: {name} {a.get(name)} {b.get(name)}")
if list(a) != list(b):
    print("  entry order differs")
PY
        die "reproducible: NO — two builds differ ($sha vs $sha2)"
    fi
    rm -f "$work/diminuendo.pyz.second"
    log "reproducible: yes, two builds are byte-identical (sha256 $sha)"
fi

# --- smoke test the built file ------------------------------------------------------------------
if [[ "$smoke" == 1 ]]; then
    smoke_dir="$work/smoke"
    rm -rf "$smoke_dir"
    mkdir -p "$smoke_dir"
    # SHIV_ROOT: where the pyz extracts itself. Under build/ (not /tmp, which may be noexec).
    shiv_root="$(mktemp -d "$smoke_dir/shiv-root.XXXXXX")"
    trap 'rm -rf "$shiv_root"' EXIT
    printf '#!/bin/sh\nexit 0\n' >"$shiv_root/exec-probe" && chmod +x "$shiv_root/exec-probe"
    "$shiv_root/exec-probe" || die "SHIV_ROOT $shiv_root does not allow executables (noexec mount)"
    rm -f "$shiv_root/exec-probe"
    export SHIV_ROOT="$shiv_root"
    unset PYTHONHASHSEED  # fixed only for the build steps, not for the servers under test

    log "smoke: imports (SHIV_INTERPRETER=1)"
    imports="import sanic, sanic_ext, uvloop, msgspec, jwt, cryptography, httpx, boto3, loguru"
    imports+=", websockets, prometheus_client, diminuendo.app, diminuendo, os, sys"
    out="$(cd "$smoke_dir" && SHIV_INTERPRETER=1 timeout 120 "$python" "$pyz" -c "$imports
assert os.path.realpath(diminuendo.__file__).startswith(os.path.realpath(os.environ['SHIV_ROOT'])), diminuendo.__file__
print('ok', sys.version.split()[0])")" || die "smoke: imports failed"
    [[ "$out" == ok* ]] || die "smoke: imports printed $out"
    log "smoke: imports ok (Python ${out#ok }, diminuendo from the extracted pyz)"

    version_line="$(cd "$smoke_dir" && timeout 60 "$python" "$pyz" --version)" \
        || die "smoke: --version failed"
    log "smoke: console entry ok ($version_line)"

    status=0
    bad="$(cd "$smoke_dir" && env -i PATH="$PATH" HOME="$smoke_dir" SHIV_ROOT="$SHIV_ROOT" \
        timeout 60 "$python" "$pyz" check-config 2>&1)" || status=$?
    [[ "$status" == 2 && "$bad" == *"config error:"* ]] \
        || die "smoke: check-config without configuration should exit 2 (got $status): $bad"
    log "smoke: bad configuration refused with exit 2 ($(grep -c 'config error:' <<<"$bad") problems)"

    cat >"$smoke_dir/smoke_pyz.py" <<'PY'
"""Run by the pyz's own interpreter: local stand-ins + gateway from the pyz, one WebSocket turn,
SIGTERM drain, and the same with WORKERS=2 (spawned workers). Every wait is bounded. Every
process runs the pyz with this interpreter (sys.executable), not through its shebang."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

PYZ, WORK = sys.argv[1], Path(sys.argv[2])
GRACE_S = 15.0
CHILD_ENV = {k: v for k, v in os.environ.items() if not k.startswith("SHIV_") or k == "SHIV_ROOT"}
procs: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = (WORK / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, PYZ, *args], cwd=WORK, env={**CHILD_ENV, **env}, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.name = name  # type: ignore[attr-defined]
    procs.append(proc)
    return proc


def tail(name: str) -> str:
    path = WORK / f"{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def wait_healthy(url: str, proc: subprocess.Popen, want_ok: bool, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.name} exited {proc.returncode}:\n{tail(proc.name)}")
        try:
            status, body = get_json(url)
            if status == 200 and (not want_ok or body.get("status") == "ok"):
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not healthy within {timeout}s (last {body}):\n{tail(proc.name)}")


def wait_log(proc: subprocess.Popen, needle: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tail_count(proc.name, needle) >= count:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"{proc.name}: {count} x {needle!r} not logged in {timeout}s:\n"
                     f"{tail(proc.name)}")


def tail_count(name: str, needle: str) -> int:
    path = WORK / f"{name}.log"
    return path.read_text(errors="replace").count(needle) if path.exists() else 0


def stop(proc: subprocess.Popen, timeout: float) -> tuple[int | None, float]:
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


async def recv(ws, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def request(ws, message: dict, rid: str, timeout: float = 15) -> tuple[dict, list[dict]]:
    await ws.send(json.dumps({**message, "id": rid}))
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            seen.append(frame)
            if frame.get("id") == rid:
                return frame, seen


async def handshake(ws) -> None:
    types = [(await recv(ws))["type"] for _ in range(3)]
    assert types == ["welcome", "connected", "authenticated"], types


async def turn(port: int) -> tuple[int, str]:
    text = "Smoke test from the built zipapp: streaming works."
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, close_timeout=5) as ws:
        await handshake(ws)
        created, _ = await request(ws, {"type": "create_session", "agentType": "echo",
                                        "name": "smoke"}, "c1")
        assert created["type"] == "session_created", created
        sid = created["session"]["id"]
        joined, _ = await request(ws, {"type": "join_session", "sessionId": sid}, "j1")
        assert joined["type"] == "state_snapshot", joined
        _, frames = await request(ws, {"type": "run_turn", "sessionId": sid, "text": text}, "t1",
                                  timeout=30)
        assert frames[-1]["type"] != "error", frames[-1]
        async with asyncio.timeout(30):
            while frames[-1].get("type") != "turn_complete":
                frames.append(await recv(ws, 30))
        deltas = [f["text"] for f in frames if f.get("type") == "text_delta"]
        assert "".join(deltas) == text, (deltas, text)
        assert frames[-1]["finalText"] == text, frames[-1]
        return len(deltas), sid


async def drain(proc: subprocess.Popen, port: int) -> tuple[int | None, float, int | None]:
    """Hold a socket open, SIGTERM the gateway: the socket must close 1001, the process exit."""
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


# `serve` refuses dev mode; the dev gateway alone, against the stand-ins started above.
DEV_GATEWAY = ["dev", "--no-reload", "--no-stack"]


def gateway_env(port: int, ports: dict[str, int], **extra: str) -> dict[str, str]:
    env = {"DEV_MODE": "true", "HOST": "127.0.0.1", "PORT": str(port),
           "DATA_DIR": str(WORK / f"data-gateway-{port}"), "LOG_FORMAT": "json",
           "LOG_LEVEL": "info", **extra}
    for name, p in ports.items():
        env[f"{name.upper()}_URL"] = f"http://127.0.0.1:{p}"
        env[f"{name.upper()}_API_KEY"] = "local-dev-key"
    return env


def main() -> int:
    ports = {"podium": free_port(), "ensemble": free_port(), "unison": free_port()}
    stack = start("local-stack", ["local-stack", "--podium-port", str(ports["podium"]),
                                  "--ensemble-port", str(ports["ensemble"]),
                                  "--unison-port", str(ports["unison"])],
                  {"DATA_DIR": str(WORK / "data-stack")})
    wait_healthy(f"http://127.0.0.1:{ports['podium']}/health", stack, False)
    for name in ("ensemble", "unison"):
        wait_healthy(f"http://127.0.0.1:{ports[name]}/api/v1/health", stack, False)
    print(f"smoke: local-stack up (podium :{ports['podium']}, ensemble :{ports['ensemble']}, "
          f"unison :{ports['unison']})", flush=True)

    port = free_port()
    gateway = start("gateway", DEV_GATEWAY, gateway_env(port, ports))
    body = wait_healthy(f"http://127.0.0.1:{port}/health", gateway, True)
    print(f"smoke: gateway /health ok (port {port}, version {body.get('version')})", flush=True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert b"# HELP" in resp.read(), "/metrics is not Prometheus text"
    print("smoke: /metrics ok", flush=True)

    deltas, _ = asyncio.run(turn(port))
    print(f"smoke: websocket turn ok ({deltas} deltas, finalText matches)", flush=True)

    rc, took, close = asyncio.run(drain(gateway, port))
    if rc != 0 or close != 1001:
        raise SystemExit(f"gateway SIGTERM: exit {rc} after {took:.1f}s, client close {close}:\n"
                         f"{tail('gateway')}")
    print(f"smoke: SIGTERM -> exit 0 in {took:.1f}s, client closed 1001", flush=True)

    # Sanic hangs on a SIGTERM that arrives while a worker is still starting (sanic#2997), so
    # signal only once both spawned workers report ready: this checks the pyz, not that race.
    port2 = free_port()
    workers = start("gateway-workers2", DEV_GATEWAY, gateway_env(port2, ports, WORKERS="2"))
    wait_healthy(f"http://127.0.0.1:{port2}/health", workers, True)
    wait_log(workers, "Worker ready", 2)
    rc, took, close = asyncio.run(drain(workers, port2))
    if rc != 0 and tail_count("gateway-workers2", "Worker complete") >= 2:
        # Both workers drained and finished; only Sanic's manager process failed to exit
        # (sanic#2997, intermittent). One worker per process is the supported default.
        print(f"smoke: WARNING WORKERS=2: workers drained but Sanic's manager hung "
              f"(sanic#2997); killed after {took:.1f}s", flush=True)
    elif rc != 0:
        raise SystemExit(f"WORKERS=2 gateway SIGTERM: exit {rc} after {took:.1f}s:\n"
                         f"{tail('gateway-workers2')}")
    else:
        print(f"smoke: WORKERS=2 (spawned workers) healthy, SIGTERM -> exit 0 in {took:.1f}s",
              flush=True)

    rc, took = stop(stack, 15)
    if rc != 0:
        raise SystemExit(f"local-stack SIGTERM: exit {rc}:\n{tail('local-stack')}")
    print(f"smoke: stand-ins stopped (exit 0 in {took:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("smoke: interrupted (SIGTERM)"))
    try:
        sys.exit(main())
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p, 10)
PY
    mkdir -p "$smoke_dir/run"
    log "smoke: stand-ins + gateway from the pyz (time limit ${SMOKE_TIMEOUT}s)"
    (cd "$smoke_dir/run" && SHIV_INTERPRETER=1 timeout -k 15 "$SMOKE_TIMEOUT" \
        "$python" "$pyz" "$smoke_dir/smoke_pyz.py" "$pyz" "$smoke_dir/run") \
        || die "smoke: gateway smoke test failed (logs in $smoke_dir/run/)"
    log "smoke: all checks passed"
fi

if [[ "$default_build" == 1 ]]; then
    ln -f "$pyz" "$dist/diminuendo.pyz"  # the same file under the name the docs and ops know
fi
size="$(stat -c %s "$pyz")"
log "$(awk -v s="$size" -v t="$((SECONDS - started))" -v p="${pyz#"$root"/}" \
    'BEGIN { printf "pyz: %s %d bytes (%.1f MiB), built in %d s", p, s, s / 1048576, t }')"
[[ "$default_build" == 1 ]] && log "pyz: dist/diminuendo.pyz is the same file (default build)"
exit 0
