#!/usr/bin/env bash
# Create the project's venv and install the project into it (editable) with the given extras;
# re-install only when setup.cfg/pyproject.toml change or an extra is missing.
#
#   source scripts/bootstrap.sh EXTRAS     sets DIMINUENDO_VENV (what dev.sh and test.sh do);
#                                          pass "" for none: sourced without an argument, it
#                                          would see the caller's own arguments
#   bash scripts/bootstrap.sh [EXTRAS]     prints the venv's path
#
# PYTHON picks the interpreter (scripts/python.sh): unset → python3 into ./.venv; set (a name,
# a version such as 3.13, or a path) → ./.venv-X.Y. A venv whose Python is not the requested one
# any more (another patch release, a different default python3) is rebuilt.
set -euo pipefail

_diminuendo_bootstrap() {
    local root extras python minor venv version stamp want installed spec
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    extras="${1:-}"
    # shellcheck source=scripts/python.sh
    source "$root/scripts/python.sh"
    python="$(resolve_python "${PYTHON:-python3}")"
    minor="$(python_minor "$python")"
    venv="$(project_venv "$root" "$minor")"
    version="$("$python" -c 'import platform; print(platform.python_version())')"
    if [[ "$("$venv/bin/python" -c 'import platform; print(platform.python_version())' 2>/dev/null)" \
        != "$version" ]]; then
        [[ -e "$venv" ]] && echo "bootstrap: $venv is not Python $version, recreating it" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv" >&2
    fi
    # The stamp: what was installed (sources hash) and with which extras (comma-separated).
    stamp="$venv/.diminuendo-installed"
    want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
    installed="$(cat "$stamp" 2>/dev/null || true)"
    local have_hash="${installed%%-*}" have_extras=",${installed#*-}," extra missing=""
    [[ "$installed" == *-* ]] || have_extras=","
    for extra in ${extras//,/ }; do
        [[ "$have_extras" == *",$extra,"* ]] || missing=1
    done
    if [[ "$have_hash" != "$want" || -n "$missing" ]]; then
        # Keep the extras already there: test.sh after bench/run-all must not drop `test`.
        if [[ "$have_hash" == "$want" ]]; then
            extras="$(tr ',' '\n' <<<"$have_extras$extras" | grep -v '^$' | sort -u | paste -sd, -)"
        fi
        "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
        spec="$root"
        [[ -n "$extras" ]] && spec="$root[$extras]"
        "$venv/bin/python" -m pip install --quiet -e "$spec" >&2
        echo "$want-$extras" >"$stamp"
    fi
    DIMINUENDO_VENV="$venv"
}

_diminuendo_bootstrap "$@"
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    printf '%s\n' "$DIMINUENDO_VENV"
fi
