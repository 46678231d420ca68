#!/usr/bin/env bash
# One command for the whole dev stack on a fresh machine: gateway on 127.0.0.1:8001 plus local
# Podium (8002), Ensemble (8004) and Unison (8005). Extra arguments go to `diminuendo dev`.
# PYTHON picks the interpreter, as for scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh" ""  # no extras: without an argument, ours would be passed
cd "$root"
exec "$DIMINUENDO_VENV/bin/diminuendo" dev "$@"
