#!/usr/bin/env bash
# First-time developer set-up: write .env in the repository root from SSM parameters.
#
#   scripts/setup.sh [--force] [PATH]
#
# PATH is the parameter path (default: $SSM_PATH, else /diminuendo/dev/). Needs AWS credentials
# that may read it (e.g. `aws sso login` and AWS_PROFILE). The file is written with mode 0600 and
# an existing one is kept unless --force is given. It holds the gateway's settings and AWS_* /
# OTEL_* names only (`ssm-env` skips others with a warning); `dev` sets DEV_MODE itself.
#
#   DIMINUENDO_ENV_FILE  file to write, relative to the repository root (default .env)
#   DIMINUENDO           command that runs the package (default "python -m diminuendo"; e.g.
#                        "python3 dist/diminuendo.pyz"), split on spaces
set -euo pipefail

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

force=0
path_arg=""
for arg in "$@"; do
    case "$arg" in
    --force) force=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        echo "setup.sh: unknown option $arg (see --help)" >&2
        exit 2
        ;;
    *)
        if [[ -n "$path_arg" ]]; then
            echo "setup.sh: one parameter path only (got $path_arg and $arg)" >&2
            exit 2
        fi
        path_arg="$arg"
        ;;
    esac
done

ssm_path="${path_arg:-${SSM_PATH:-/diminuendo/dev/}}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root" # so "python -m diminuendo" finds the package from a source checkout
env_file="${DIMINUENDO_ENV_FILE:-.env}"

if [[ -e "$env_file" && "$force" -ne 1 ]]; then
    echo "setup.sh: $env_file already exists; re-run with --force to replace it" >&2
    exit 1
fi

read -r -a cmd <<<"${DIMINUENDO:-python -m diminuendo}"
# --overwrite: the file holds every parameter even if this shell happens to set one; when the
# gateway reads .env later, the real environment still wins.
status=0
"${cmd[@]}" ssm-env --path "$ssm_path" --format dotenv --output "$env_file" --overwrite ||
    status=$?
if ((status != 0)); then
    echo "setup.sh: $env_file not written (see the line above)" >&2
    exit "$status"
fi
echo "setup.sh: wrote $env_file (mode 0600) from $ssm_path; never commit it"
