"""`scripts/start.sh` and `scripts/setup.sh` run for real against an SSM endpoint on loopback.

The endpoint is a small HTTP front-end speaking SSM's JSON protocol whose answers come from
moto's in-process SSM (so paging, decryption and errors are moto's, not ours). moto's own
`ThreadedMotoServer` needs Flask (`moto[server]`), which this project does not install.

The scripts reach it the way production reaches AWS: a separate `python -m diminuendo ssm-env`
process configured by `AWS_ENDPOINT_URL`. `serve` is replaced by a stand-in that prints the
environment it was exec'd with, so the gateway itself is not needed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from dotenv import dotenv_values
from moto import mock_aws

REPO = Path(__file__).resolve().parents[2]
START = REPO / "scripts" / "start.sh"
SETUP = REPO / "scripts" / "setup.sh"
REGION = "us-east-1"
PATH = "/diminuendo/prod/"
TIMEOUT_S = 30

SECRETS = {
    "PODIUM_API_KEY": "podium secret with 'quotes' and $HOME",
    "ENSEMBLE_API_KEY": "multi\nline\nsecret",
    "UNISON_API_KEY": "`id`; echo pwned",
}

# Stand-in for `python3 diminuendo.pyz`: the real package for every command but `serve`, which
# prints the environment variables named by its arguments as JSON instead of starting a server.
STAND_IN = """\
#!/usr/bin/env bash
set -euo pipefail
if [[ "$1" == serve ]]; then
    shift
    exec "$PYTHON" -c 'import json, os, sys
print(json.dumps({name: os.environ.get(name) for name in sys.argv[1:]}))' "$@"
fi
exec "$PYTHON" -m diminuendo "$@"
"""


class _SsmJsonFrontEnd(BaseHTTPRequestHandler):
    """Answers `X-Amz-Target: AmazonSSM.<Operation>` requests by calling moto's SSM."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        operation = self.headers["X-Amz-Target"].split(".", 1)[1]
        try:
            result = getattr(self.server.moto_client, xform_name(operation))(**body)
            result.pop("ResponseMetadata", None)
            status = 200
        except ClientError as exc:
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            result = {"__type": exc.response["Error"]["Code"], "message": str(exc)}
        payload = json.dumps(result, default=lambda when: when.timestamp()).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for assertions."""


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """(endpoint URL, boto3 client to put parameters with), both backed by one moto SSM."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    with mock_aws():
        client = boto3.client(
            "ssm",
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), _SsmJsonFrontEnd)
        server.moto_client = client  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", client
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.fixture
def env(ssm: tuple[str, Any], tmp_path: Path) -> dict[str, str]:
    """A clean environment for the scripts: fake credentials, the loopback endpoint, no profile."""
    stand_in = tmp_path / "stand-in.sh"
    stand_in.write_text(STAND_IN)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": ssm[0],
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "DIMINUENDO_CMD": f"bash {stand_in}",
        "DIMINUENDO": f"{sys.executable} -m diminuendo",
    }


def put_secrets(client: Any, path: str = PATH, **more: str) -> None:
    """SECRETS and `more` as SecureStrings plus twelve nested Strings, so the load spans pages
    (`OTEL_EXTRA_<i>`: ssm-env exports only settings and AWS_* / OTEL_* names)."""
    for name, value in {**SECRETS, **more}.items():
        client.put_parameter(
            Name=f"{path}{name.lower().replace('_', '-')}", Value=value, Type="SecureString"
        )
    for i in range(12):
        client.put_parameter(Name=f"{path}extra/n{i}/otel-extra-{i}", Value=f"x{i}", Type="String")


def run(script: Path, env: dict[str, str], *args: str, cwd: Path = REPO):
    return subprocess.run(
        ["bash", str(script), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def assert_no_secret_in(text: str) -> None:
    for value in SECRETS.values():
        assert value not in text


# --- start.sh ----------------------------------------------------------------------------------


def test_start_loads_parameters_and_execs_serve_with_them(
    ssm: tuple[str, Any], env: dict[str, str]
) -> None:
    put_secrets(ssm[1])
    env |= {"SSM_PATH": PATH, "UNISON_API_KEY": "set-by-operator"}

    done = run(START, env, *SECRETS, "OTEL_EXTRA_11", "SSM_PATH")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "PODIUM_API_KEY": SECRETS["PODIUM_API_KEY"],
        "ENSEMBLE_API_KEY": SECRETS["ENSEMBLE_API_KEY"],
        "UNISON_API_KEY": "set-by-operator",  # the environment wins
        "OTEL_EXTRA_11": "x11",  # from the second page
        "SSM_PATH": PATH,
    }
    assert "UNISON_API_KEY" in done.stderr
    assert_no_secret_in(done.stderr)


def test_start_exports_no_parameter_that_is_not_a_setting(
    ssm: tuple[str, Any], env: dict[str, str]
) -> None:
    """Before the fix start.sh exported every parameter under SSM_PATH: with `ld-preload` or
    `pythonpath` in the store the gateway loaded that code, and `dev-mode` turned its
    authentication off (`serve` now refuses DEV_MODE, so that one stopped the start instead)."""
    unsafe = {"LD_PRELOAD": "/nonexistent/evil.so", "PYTHONPATH": "/tmp/x", "DEV_MODE": "false"}
    put_secrets(ssm[1], **unsafe)
    env["SSM_PATH"] = PATH

    done = run(START, env, *unsafe, "PODIUM_API_KEY")

    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout)
    assert served == {
        "LD_PRELOAD": None,
        "PYTHONPATH": str(REPO),  # the caller's own, untouched
        "DEV_MODE": None,
        "PODIUM_API_KEY": SECRETS["PODIUM_API_KEY"],
    }
    for name in unsafe:
        assert f"ssm-env: skipped {name} from {PATH}" in done.stderr
    assert "/nonexistent/evil.so" not in done.stderr
    assert_no_secret_in(done.stderr)


def test_start_without_ssm_path_serves_directly(env: dict[str, str]) -> None:
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # would fail if it were asked
    done = run(START, env, "PODIUM_API_KEY")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"PODIUM_API_KEY": None}


@pytest.mark.parametrize(
    ("drop_credentials", "exit_code", "fragment"),
    [(False, 2, "no parameters found under"), (True, 1, "no AWS credentials")],
)
def test_start_does_not_serve_when_loading_fails(
    ssm: tuple[str, Any],
    env: dict[str, str],
    drop_credentials: bool,
    exit_code: int,
    fragment: str,
) -> None:
    put_secrets(ssm[1], "/diminuendo/other/")
    env["SSM_PATH"] = "/diminuendo/empty/"
    if drop_credentials:
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]

    done = run(START, env, "PODIUM_API_KEY")

    assert done.returncode == exit_code
    assert done.stdout == ""  # serve never ran
    assert done.stderr.count("\n") == 1 and fragment in done.stderr, done.stderr


# --- setup.sh ----------------------------------------------------------------------------------


def test_setup_writes_a_private_env_file_in_the_repo_root(
    ssm: tuple[str, Any], env: dict[str, str], tmp_path: Path
) -> None:
    put_secrets(ssm[1], "/diminuendo/dev/", DEV_MODE="true", LD_PRELOAD="/tmp/evil.so")
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, checkout / "scripts" / "setup.sh")
    env["PODIUM_API_KEY"] = "in-this-shell"  # still written: .env holds every parameter

    done = run(checkout / "scripts" / "setup.sh", env, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    env_file = checkout / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dotenv_values(env_file, interpolate=False)
    assert {name: values[name] for name in SECRETS} == SECRETS
    assert len(values) == len(SECRETS) + 12
    assert "DEV_MODE" not in values and "LD_PRELOAD" not in values
    assert_no_secret_in(done.stdout + done.stderr)


def test_setup_keeps_an_existing_env_file_unless_forced(
    ssm: tuple[str, Any], env: dict[str, str], tmp_path: Path
) -> None:
    put_secrets(ssm[1], "/diminuendo/staging/")
    env_file = tmp_path / "dev.env"
    env_file.write_text("KEEP=me\n")
    env |= {"DIMINUENDO_ENV_FILE": str(env_file), "SSM_PATH": "/diminuendo/staging/"}

    refused = run(SETUP, env)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert env_file.read_text() == "KEEP=me\n"

    forced = run(SETUP, env, "--force")
    assert forced.returncode == 0, forced.stderr
    written = dotenv_values(env_file, interpolate=False)
    assert written["PODIUM_API_KEY"] == SECRETS["PODIUM_API_KEY"]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_setup_path_argument_and_failure_leave_no_file(
    ssm: tuple[str, Any], env: dict[str, str], tmp_path: Path
) -> None:
    put_secrets(ssm[1], "/diminuendo/dev/")
    env_file = tmp_path / "dev.env"
    env |= {"DIMINUENDO_ENV_FILE": str(env_file), "SSM_PATH": "/diminuendo/dev/"}

    done = run(SETUP, env, "/diminuendo/nothing-here/")  # the argument beats SSM_PATH

    assert done.returncode == 2
    assert "no parameters found under /diminuendo/nothing-here/" in done.stderr
    assert not env_file.exists()
    assert list(tmp_path.glob(".dev.env.*")) == []
