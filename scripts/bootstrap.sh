#!/usr/bin/env bash
# Create ./.venv (Python 3.11+) and install the project into it; re-install only when setup.cfg
# or the requested extras change. Sourced by dev.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
python="${PYTHON:-python3}"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
  "$python" -m venv "$venv"
fi
stamp="$venv/.diminuendo-installed"
want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | sha256sum | cut -c1-16)-${extras}"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  spec="$root"
  [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/python" -m pip install --quiet -e "$spec"
  echo "$want" > "$stamp"
fi
