"""A bearer token from a command's standard output (`--token-command` of `diminuendo acp` and
`diminuendo mcp`): e.g. a CLI that prints a cached Auth0 session's access token. Run without a
shell, bounded in time, and never echoed: a failure names the exit status only."""

from __future__ import annotations

import shlex
import subprocess

TIMEOUT_S = 30.0


class TokenCommandFailed(Exception):
    """The command failed, timed out or printed nothing; the message is safe to show."""


def run_token_command(command: str) -> str:
    """The token the command prints, stripped."""
    try:
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TokenCommandFailed(f"--token-command could not run ({type(exc).__name__})") from None
    token = result.stdout.strip()
    if result.returncode != 0 or not token:
        raise TokenCommandFailed(
            f"--token-command exited with {result.returncode} and printed no token"
        )
    return token
