#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine: lint, then pytest (unit, local stack,
# integration — every server the tests need is started by the tests themselves on 127.0.0.1).
# Extra arguments go to pytest. Installs the test and edges extras; DIMINUENDO_EXTRAS=test,edges,browser
# adds the browser test's deps.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" "${DIMINUENDO_EXTRAS:-test,edges}"
cd "$root"
"$root/.venv/bin/ruff" check diminuendo tests
"$root/.venv/bin/ruff" format --check diminuendo tests
exec "$root/.venv/bin/python" -m pytest "$@"
