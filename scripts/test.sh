#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine: lint, then pytest (unit, local stack,
# integration — every server the tests need is started by the tests themselves on 127.0.0.1).
# Extra arguments go to pytest. Installs the test and edges extras; DIMINUENDO_EXTRAS=test,edges,browser
# adds the browser test's deps. PYTHON=python3.13 (or 3.13, or a path) runs it on that
# interpreter, in its own ./.venv-3.13 (scripts/bootstrap.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh" "${DIMINUENDO_EXTRAS:-test,edges}"
cd "$root"
"$DIMINUENDO_VENV/bin/ruff" check diminuendo tests pyzbuild bench
"$DIMINUENDO_VENV/bin/ruff" format --check diminuendo tests pyzbuild bench
exec "$DIMINUENDO_VENV/bin/python" -m pytest "$@"
