#!/usr/bin/env bash
# One command for the whole dev stack on a fresh machine: gateway on 127.0.0.1:8001 plus local
# Podium (8002), Ensemble (8004) and Unison (8005). Extra arguments go to `diminuendo dev`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/diminuendo" dev "$@"
