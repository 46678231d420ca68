# Which Python, and which venv: sourced by bootstrap.sh, build.sh and bench/run-all so that every
# script reads `PYTHON` the same way. Defines functions only.
#
# PYTHON may be a name on PATH (python3.13), a bare version (3.13) or a path. A version manager's
# shim can be on PATH and still refuse to run (pyenv with 3.13 installed but not selected), so a
# name that does not run is looked up through `pyenv prefix` before giving up.

# resolve_python [NAME]: print the absolute path of a working interpreter (default python3).
resolve_python() {
    local want="${1:-python3}" found prefix
    [[ "$want" =~ ^[0-9]+\.[0-9]+$ ]] && want="python$want"
    if found="$("$want" -c 'import sys; print(sys.executable)' 2>/dev/null)" && [[ -x "$found" ]]; then
        printf '%s\n' "$found"
        return 0
    fi
    if [[ "$(basename -- "$want")" =~ ^python([0-9]+\.[0-9]+)$ ]] && command -v pyenv >/dev/null 2>&1; then
        local version="${BASH_REMATCH[1]}" name
        name="$(basename -- "$want")"
        if prefix="$(pyenv prefix "$version" 2>/dev/null)" && [[ -x "$prefix/bin/$name" ]]; then
            printf '%s\n' "$prefix/bin/$name"
            return 0
        fi
    fi
    printf 'no working Python interpreter %s (set PYTHON to a name on PATH, a version such as 3.13, or a path)\n' \
        "$want" >&2
    return 1
}

# python_minor INTERPRETER: print its X.Y, or fail when it is older than 3.11.
python_minor() {
    "$1" -c 'import sys
if sys.version_info < (3, 11):
    sys.exit("Python 3.11+ is required, %s is %d.%d" % ((sys.executable,) + sys.version_info[:2]))
print("%d.%d" % sys.version_info[:2])'
}

# project_venv ROOT MINOR: ./.venv for the default interpreter (PYTHON unset), ./.venv-X.Y for an
# interpreter chosen with PYTHON, so switching PYTHON never mixes two versions in one venv.
project_venv() {
    if [[ -z "${PYTHON:-}" ]]; then
        printf '%s\n' "$1/.venv"
    else
        printf '%s\n' "$1/.venv-$2"
    fi
}
