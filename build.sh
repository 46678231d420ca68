#!/usr/bin/env bash
# Build dist/diminuendo-pyX.Y.pyz — one shiv zipapp holding the gateway and every dependency,
# for the CPython minor X.Y that builds it — then smoke-test the file that was built, run by that
# same interpreter (docs/PACKAGING.md). The Python steps are the tested modules in pyzbuild/.
#
#   ./build.sh                        build + smoke test
#   ./build.sh --check-reproducible   build twice from scratch, require identical sha256, smoke test
#   ./build.sh --no-smoke             build only
#
# Needs only Python 3.11+ with pip (and the package index pip is configured for); the build tools
# (shiv) live in their own venv under build/. Environment:
#   PYTHON             interpreter to build for: a name (python3.13), a version (3.13) or a path;
#                      a version manager's shim that refuses is looked through (scripts/python.sh).
#                      Default python3.11 (the Dockerfile's default PYTHON_VERSION), else python3.
#   SOURCE_DATE_EPOCH  zip timestamps (default: time of the last commit, else 1980-01-01)
#   PIP_CONSTRAINT     a constraints file, to pin dependency versions across time
#   DIMINUENDO_CHECK_REPRODUCIBLE=1 / DIMINUENDO_SKIP_SMOKE=1: same as the options
# Artifacts: dist/diminuendo-pyX.Y.pyz, shebang `/usr/bin/env pythonX.Y` (the default build is
# also dist/diminuendo.pyz, the same file); everything else under build/pyX.Y/ (git-ignored).
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC PYTHONHASHSEED=0 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
# An activated venv (e.g. the project's editable .venv) must not become the pyz's interpreter in
# the smoke test: its import hooks would hide what the pyz itself holds.
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PATH=":$PATH:" && PATH="${PATH//":$VIRTUAL_ENV/bin:"/:}" && PATH="${PATH#:}" && PATH="${PATH%:}"
    unset VIRTUAL_ENV
fi

SHIV_VERSION="1.0.8"
STEP_TIMEOUT=900   # seconds, for each pip step
SMOKE_TIMEOUT=420  # seconds, for the whole smoke test (each of its waits is bounded too)
DEFAULT_PYTHON=python3.11  # the Dockerfile's default PYTHON_VERSION
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" && cd "$root"
build="$root/build" dist="$root/dist"

check_repro="${DIMINUENDO_CHECK_REPRODUCIBLE:-0}" smoke=1
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
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
# pip, time-bounded, without this machine's "Location … is ignored" noise from its index config.
pip_() {
    timeout "$STEP_TIMEOUT" "$vpy" -m pip "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
# A step of pyzbuild/ (python -m pyzbuild --help), run by the build venv's Python from $root.
pyzbuild() { PYTHONDONTWRITEBYTECODE=1 "$vpy" -m pyzbuild "$@"; }
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
pyz="$dist/diminuendo-py$minor.pyz" work="$build/py$minor"  # per minor: never shared
log "build: Python $minor ($python) → ${pyz#"$root"/}"
# The shebang is for the machine that runs the pyz. Here, the smoke test runs it with $python.
if ! "python$minor" -c '' >/dev/null 2>&1; then
    log "build: note: python$minor on PATH does not run here; run the pyz as: $python ${pyz#"$root"/}"
fi
: "${SOURCE_DATE_EPOCH:=$(git -C "$root" log -1 --format=%ct 2>/dev/null || true)}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"  # else 1980-01-01
# --- build tools in their own venv ---------------------------------------------------------------
venv="$build/venv-py$minor" && vpy="$venv/bin/python"
want="shiv==$SHIV_VERSION $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$vpy" || "$(cat "$venv/.build-tools" 2>/dev/null || true)" != "$want" ]]; then
    log "build: creating the build venv $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv" || die "cannot create a venv with $python (install its venv module)"
    pip_ install --quiet "shiv==$SHIV_VERSION"
    echo "$want" >"$venv/.build-tools"
fi

# --- one build: source copy → wheel → site-packages → normalised → shiv -------------------------
build_once() {
    local out="$1" src="$work/src" wheels="$work/wheels" site="$work/site-packages"
    local wheel id
    rm -rf "$src" "$wheels" "$site" && mkdir -p "$wheels" "$dist"
    pyzbuild copy-sources "$root" "$src"  # without caches: nothing stale reaches the wheel
    log "build: wheel of the project"
    pip_ wheel --quiet --no-deps --wheel-dir "$wheels" "$src"
    wheel="$(ls "$wheels"/diminuendo-*.whl)"
    pyzbuild check-wheel "$src/diminuendo" "$wheel"
    log "build: installing the wheel and its dependencies (no .pyc)"
    pip_ install --quiet --no-compile --no-warn-script-location \
        --only-binary=:all: --target "$site" "$wheel"
    # What was resolved, usable as PIP_CONSTRAINT to rebuild the same set later.
    pip_ freeze --path "$site" | grep -v -E '^diminuendo( |==|@)' >"$work/requirements.lock"
    pyzbuild normalise "$site"
    id="$(pyzbuild build-id "$wheel" "$site")"
    log "build: shiv → $out (build id $id, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
    rm -f "$out.tmp"
    "$venv/bin/shiv" --console-script diminuendo --output-file "$out.tmp" --python "$shebang" \
        --site-packages "$site" --build-id "$id" --reproducible --compressed \
        | { grep -v "overridden the default build-id" || true; }
    mv -f "$out.tmp" "$out"
    [[ "$(head -n 1 "$out")" == "#!$shebang" ]] || die "unexpected shebang in $out"
}

build_once "$pyz"
sha="$(sha256sum "$pyz" | cut -d' ' -f1)"
log "build: $pyz sha256 $sha"
log "build: resolved dependencies in ${work#"$root"/}/requirements.lock" \
    "($(wc -l <"$work/requirements.lock") packages)"
if [[ "$check_repro" == 1 ]]; then
    log "reproducible: building again from scratch"
    build_once "$work/diminuendo.pyz.second"
    pyzbuild compare "$pyz" "$work/diminuendo.pyz.second" \
        || die "reproducible: NO — two builds differ"
    rm -f "$work/diminuendo.pyz.second"
    log "reproducible: yes, two builds are byte-identical (sha256 $sha)"
fi

# --- smoke test the built file (pyzbuild/smoke.py, run by the pyz's own interpreter) ------------
if [[ "$smoke" == 1 ]]; then
    smoke_dir="$work/smoke"
    rm -rf "$smoke_dir" && mkdir -p "$smoke_dir"
    # SHIV_ROOT: where the pyz extracts itself. Under build/ (not /tmp, which may be noexec).
    SHIV_ROOT="$(pyzbuild shiv-root "$smoke_dir")" && export SHIV_ROOT
    trap 'rm -rf "$SHIV_ROOT"' EXIT
    unset PYTHONHASHSEED  # fixed only for the build steps, not for the servers under test
    log "smoke: the pyz's imports, entry, stand-ins, gateway (time limit ${SMOKE_TIMEOUT}s)"
    (cd "$smoke_dir" && SHIV_INTERPRETER=1 timeout -k 15 "$SMOKE_TIMEOUT" \
        "$python" "$pyz" "$root/pyzbuild/smoke.py" "$pyz" "$smoke_dir") \
        || die "smoke: failed (logs in ${smoke_dir#"$root"/}/run/)"
fi

# The default build is also the file under the name the docs and ops know.
[[ "$default_build" == 1 ]] && ln -f "$pyz" "$dist/diminuendo.pyz"
log "$(awk -v s="$(stat -c %s "$pyz")" -v t="$((SECONDS - started))" -v p="${pyz#"$root"/}" \
    'BEGIN { printf "pyz: %s %d bytes (%.1f MiB), built in %d s", p, s, s / 1048576, t }')"
[[ "$default_build" == 1 ]] && log "pyz: dist/diminuendo.pyz is the same file (default build)"
exit 0
