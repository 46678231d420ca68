"""PODIUM_SECRETS_KEY (UPSTREAMS.md §1): the instance secrets the gateway forwards are sealed
with it, and Podium opens them with the same key; a gateway whose key differs cannot activate a
session, and says so, instead of running agents without their secrets."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LOCAL_KEY, Stack, free_port
from tests.unit.test_settings import PROD

# Not the local stack's key (settings.LOCAL_STACK_SECRETS_KEY): 32 bytes, base64url.
OTHER_KEY = base64.urlsafe_b64encode(b"a-key-that-is-not-the-stacks-key").decode()


def stack_log(stack: Stack) -> str:
    return "".join(path.read_text() for path in Path(stack.data_dir).glob("local-stack-*.log"))


async def test_a_gateway_whose_key_differs_from_podiums_cannot_activate(
    prod: Any, stack: Stack
) -> None:
    """Before the fix: PODIUM_SECRETS_KEY was required but never used (instances got
    `secrets={}`), so this gateway's `join_session` activated the session (no error frame came;
    the test timed out waiting, run against main) and every agent ran without the
    `ensemble_api_key` it needs — a silent empty secret instead of an error."""
    p = prod(PODIUM_SECRETS_KEY=OTHER_KEY)
    async with p.client(p.token(tenant="sealing")) as c:
        created = await c.request({"type": "create_session", "agentType": "echo"})
        await c.send({"type": "join_session", "sessionId": created["session"]["id"]})
        frames = await c.recv_until("error")
    state, error = frames[-2:]
    assert error["code"] == "UPSTREAM_ERROR"
    assert "PODIUM_SECRETS_KEY differs" in error["message"]
    assert state["state"] == "error" and state["reason"] == error["message"]

    gateway_log = p.gw.output()
    assert gateway_log.count("podium cannot open the instance secrets") == 1, gateway_log
    assert "SECRETS_KEY differs" in gateway_log
    for log in (gateway_log, stack_log(stack)):
        assert OTHER_KEY.rstrip("=") not in log and LOCAL_KEY not in log


async def test_with_the_same_key_the_agent_reaches_ensemble_with_the_forwarded_key(
    prod: Any, stack: Stack
) -> None:
    """The chat agent calls Ensemble with the `ensemble_api_key` opened from its instance's
    secrets (the stand-in has no key of its own for it), so a finished turn proves the key made
    the trip sealed and came out whole."""
    p = prod()
    async with p.client(p.token(tenant="sealing")) as c:
        created = await c.request({"type": "create_session", "agentType": "chat"})
        session_id = created["session"]["id"]
        joined = await c.request({"type": "join_session", "sessionId": session_id})
        assert joined["type"] != "error", joined
        await c.send({"type": "run_turn", "sessionId": session_id, "text": "hello"})
        frames = await c.recv_until("turn_complete")
    assert frames[-1]["finalText"] == "You said: hello. This is the mock model."
    for log in (p.gw.output(), stack_log(stack)):
        assert LOCAL_KEY not in log


# Malformed keys an operator might paste: a password, a hex key, a key cut short.
BAD_KEYS = ["hunter2-is-my-key", "ab" * 32, OTHER_KEY[:30]]


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["check-config"], PROD),
        (["serve"], {**PROD, "HOST": "127.0.0.1"}),
        (["dev", "--no-reload"], {"DEV_MODE": "true"}),
        (["local-stack"], {}),
    ],
)
def test_a_malformed_key_stops_every_command_with_one_line(
    command: list[str], env: dict[str, str], key: str, tmp_path: Path
) -> None:
    """Exit 2 before anything starts, one line naming the variable and the expected format,
    never the value (the gateway's and the local stack's commands alike)."""
    ports = {"PORT": str(free_port()), "DATA_DIR": str(tmp_path)}
    if command == ["local-stack"]:  # should it start after all, never on the default ports
        command = [*command, "--podium-port", str(free_port())]
        command += ["--ensemble-port", str(free_port()), "--unison-port", str(free_port())]
    done = subprocess.run(
        [sys.executable, "-m", "diminuendo", *command],
        env={"PATH": os.environ["PATH"], **env, **ports, "PODIUM_SECRETS_KEY": key},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("config error: PODIUM_SECRETS_KEY: must be 32 random bytes, base64url")
    assert key not in done.stderr + done.stdout
