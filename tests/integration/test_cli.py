"""The command line as an operator and a developer meet it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port, stop_process


def run(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diminuendo", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_reports_every_problem_and_exits_2(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "PORT": "nope", "PODIUM_URL": "https://u:secretpw@x"}
    result = run("check-config", env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("config error: ") for line in lines)
    assert any("PORT:" in line for line in lines) and any("AUTH0_DOMAIN" in line for line in lines)
    assert "Traceback" not in result.stderr and "secretpw" not in result.stderr


def test_check_config_prints_effective_config_without_secrets(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "DEV_MODE": "true", "PODIUM_API_KEY": "very-secret-key"}
    result = run("check-config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["DEV_MODE"] is True and config["PODIUM_API_KEY"] == "<set>"
    assert "very-secret-key" not in result.stdout


# The settings of issue 13 (README "Limits and security settings"); the last three are secret.
LIMIT_SETTINGS = {
    "WS_SEND_BUFFER_BYTES": ("16MiB", 16 * 2**20),
    "REPLY_MAX_BYTES": ("2MiB", 2 * 2**20),
    "MAX_ACTIVE_SESSIONS_PER_TENANT": ("500", 500),
    "MAX_JOINED_PER_CONNECTION": ("50", 50),
    "MAX_CONNECTIONS_PER_USER": ("20", 20),
    "MAX_PENDING_PER_IP": ("10", 10),
    "RPC_BATCH_MAX": ("5", 5),
    "AUTH_CLOCK_LEEWAY": ("10s", 10.0),
    "AUTH_REFRESH_WINDOW": ("120", 120.0),
    "PROXIES_COUNT": ("1", 1),
    "REAL_IP_HEADER": ("x-real-ip", "x-real-ip"),
    "ALLOW_INSECURE_UPSTREAMS": ("true", True),
    "FORWARDED_SECRET": ("forwarded-secret-value", "<set>"),
    "METRICS_TOKEN": ("metrics-token-value", "<set>"),
}


def test_check_config_lists_every_limit_and_security_setting(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "DEV_MODE": "true"}
    unset = json.loads(run("check-config", env=env, cwd=tmp_path).stdout)
    assert unset["METRICS_TOKEN"] == unset["FORWARDED_SECRET"] == "<unset>"
    env |= {name: raw for name, (raw, _) in LIMIT_SETTINGS.items()}
    result = run("check-config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert {name: config[name] for name in LIMIT_SETTINGS} == {
        name: shown for name, (_, shown) in LIMIT_SETTINGS.items()
    }
    assert "secret-value" not in result.stdout and "token-value" not in result.stdout


def test_serve_refuses_bad_config_before_starting(tmp_path) -> None:
    result = run("serve", env={"PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert result.returncode == 2 and "required unless DEV_MODE=true" in result.stderr


def test_serve_refuses_dev_mode(tmp_path) -> None:
    """Dev mode bypasses authentication, so a production start must not inherit it (a stray
    `.env` line is enough): `serve` with DEV_MODE=true exits 2 and names `dev`. Before the fix
    it started an unauthenticated gateway."""
    (tmp_path / ".env").write_text("DEV_MODE=true\n")
    result = run("serve", env={"PATH": os.environ["PATH"], "PORT": str(free_port())}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "DEV_MODE" in result.stderr and "`dev`" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("reload", [False, True], ids=["single-process", "auto-reload"])
def test_a_port_another_program_holds_is_one_line_and_exit_1(tmp_path, reload: bool) -> None:
    """A busy PORT is an operator's mistake: one line naming the address, exit 1, nothing
    started. Before the fix: Sanic's `OSError: [Errno 98]` traceback (and, under a supervisor,
    a gateway restarted five times)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        args = ["dev", "--port", str(port), *([] if reload else ["--no-reload"])]
        args += [f"--{name}-port={free_port()}" for name in ("podium", "ensemble", "unison")]
        result = run(*args, env={**os.environ, "DATA_DIR": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert f"error: 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "local-stack").exists()  # the stand-ins never started


def test_dev_starts_the_whole_stack_and_stops_cleanly_on_ctrl_c(tmp_path) -> None:
    port, podium, ensemble, unison = (free_port() for _ in range(4))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diminuendo",
            "dev",
            "--no-reload",
            "--port",
            str(port),
            "--podium-port",
            str(podium),
            "--ensemble-port",
            str(ensemble),
            "--unison-port",
            str(unison),
        ],
        env={**os.environ, "DATA_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        body = {}
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                if body.get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert body.get("status") == "ok", body
        assert (tmp_path / "local-stack").is_dir()
    finally:
        code = stop_process(proc, signal.SIGINT)
    output = proc.stdout.read().decode()
    assert code == 0, output
    assert "Traceback" not in output
