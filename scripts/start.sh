#!/usr/bin/env bash
# Production entry point (the Docker CMD): load secrets from SSM, then become the gateway.
#
#   SSM_PATH=/diminuendo/prod/ scripts/start.sh [serve options…]
#
# When SSM_PATH is set, the parameters under it become environment variables (variables already
# set win: the loader leaves them out), then the zipapp is exec'd so it gets signals directly.
# Only the gateway's settings and AWS_* / OTEL_* names are exported, never DEV_MODE: `ssm-env`
# skips any other parameter (LD_PRELOAD, PYTHONPATH, PATH…) with a warning naming it.
# If loading fails, the loader's one-line reason is on stderr and the gateway is not started.
#
#   DIMINUENDO_PYZ  the zipapp (default /app/diminuendo.pyz)
#   DIMINUENDO_CMD  command used instead of `python3 $DIMINUENDO_PYZ`, split on spaces, e.g.
#                   "python -m diminuendo" to run from source (tests use a stand-in)
#
# Values are never echoed: no `set -x` here, and they pass only through a variable into eval.
set -euo pipefail

PYZ="${DIMINUENDO_PYZ:-/app/diminuendo.pyz}"
if [[ -n "${DIMINUENDO_CMD:-}" ]]; then
    read -r -a cmd <<<"$DIMINUENDO_CMD"
else
    cmd=(python3 "$PYZ")
fi

if [[ -n "${SSM_PATH:-}" ]]; then
    # Capture first, eval only on success: a failed load must not half-configure the gateway.
    status=0
    exports="$("${cmd[@]}" ssm-env --path "$SSM_PATH" --format export)" || status=$?
    if ((status != 0)); then
        exit "$status"
    fi
    eval "$exports"
    unset exports status
fi

exec "${cmd[@]}" serve "$@"
