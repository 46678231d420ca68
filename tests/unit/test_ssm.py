"""`diminuendo ssm-env` against moto's in-process SSM and botocore's Stubber (no real AWS).

Secrets are the point of this module, so besides the mapping rules the tests check, for every
output format and every failure, that values reach only the requested output and never stderr,
logs or a `repr()`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from dotenv import dotenv_values
from moto import mock_aws

from diminuendo import ssm
from diminuendo.ssm import SsmError, load_parameters, main, make_client, parameter_env_name

REGION = "us-east-1"
PATH = "/diminuendo/test/"

# Values a naive quoting scheme would break: quotes, spaces, newlines, `$`, backquotes, escapes.
# The names are settings that hold free text, since ssm-env exports no other name.
TRICKY = {
    "PODIUM_API_KEY": "it's 'quoted'",
    "PODIUM_SECRETS_KEY": 'say "hi"',
    "ENSEMBLE_API_KEY": "  leading and trailing  ",
    "UNISON_API_KEY": "line one\nline two\n",
    "METRICS_TOKEN": "$HOME ${PATH} $(id) `id`",
    "FORWARDED_SECRET": "back\\slash \\' \\n",
    "AUTH0_CLIENT_ID": "päßwörd-✓",
    "OTEL_EXPORTER_OTLP_HEADERS": "a; echo pwned #",
}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region only; no profile, config file or instance metadata lookups."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name in ("PODIUM_API_KEY", "PODIUM_URL", "API_KEY", *TRICKY):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def moto_ssm(aws_env: None) -> Iterator[Any]:
    """A boto3 SSM client created inside `mock_aws`, for putting parameters."""
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)


def put(client: Any, name: str, value: str, *, secure: bool = False) -> None:
    client.put_parameter(Name=name, Value=value, Type="SecureString" if secure else "String")


def closed_port() -> int:
    """A loopback port nothing listens on, so a stray request fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str, client: Any = None):
    code = main(list(argv), client=client)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str) -> None:
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


# --- mapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "name", "expected"),
    [
        ("/diminuendo/prod/", "/diminuendo/prod/podium-api-key", "PODIUM_API_KEY"),
        ("/diminuendo/prod", "/diminuendo/prod/podium-api-key", "PODIUM_API_KEY"),
        ("/diminuendo/prod/", "/diminuendo/prod/podium/base.url", "BASE_URL"),
        ("/diminuendo/prod/", "/diminuendo/prod/a/b/c/Log_Level", "LOG_LEVEL"),
        ("/", "/_private-2", "_PRIVATE_2"),
    ],
)
def test_last_path_segment_becomes_upper_snake(prefix: str, name: str, expected: str) -> None:
    assert parameter_env_name(prefix, name) == expected


@pytest.mark.parametrize(
    ("prefix", "name", "fragment"),
    [
        ("/diminuendo/prod/", "/diminuendo/prod/1st-key", "not a valid environment variable"),
        ("/diminuendo/prod/", "/diminuendo/production/key", "is not under /diminuendo/prod/"),
    ],
)
def test_unusable_names_are_errors(prefix: str, name: str, fragment: str) -> None:
    with pytest.raises(SsmError, match=fragment) as info:
        parameter_env_name(prefix, name)
    assert info.value.exit_code == 2


# --- loading -----------------------------------------------------------------------------------


def test_loads_more_than_one_page_of_nested_parameters(moto_ssm: Any) -> None:
    expected = {}
    for i in range(25):
        put(moto_ssm, f"{PATH}group-{i % 4}/deeper/key-{i}", f"value-{i}", secure=i % 2 == 1)
        expected[f"KEY_{i}"] = f"value-{i}"
    put(moto_ssm, "/diminuendo/other/key-99", "not under the path")

    assert load_parameters(PATH) == expected


def test_secure_strings_are_decrypted(moto_ssm: Any) -> None:
    put(moto_ssm, f"{PATH}podium-api-key", "plain-secret", secure=True)

    assert load_parameters(PATH) == {"PODIUM_API_KEY": "plain-secret"}


def test_short_and_empty_pages_with_a_token_are_followed(aws_env: None) -> None:
    client = make_client()
    base = {"Path": PATH, "Recursive": True, "WithDecryption": True, "MaxResults": 10}
    pages = [
        ({**base}, ["a", "b"], "t1"),
        ({**base, "NextToken": "t1"}, [], "t2"),
        ({**base, "NextToken": "t2"}, ["c"], None),
    ]
    with Stubber(client) as stubber:
        for request, names, token in pages:
            response: dict[str, Any] = {
                "Parameters": [{"Name": f"{PATH}{n}", "Value": n.upper()} for n in names]
            }
            if token:
                response["NextToken"] = token
            stubber.add_response("get_parameters_by_path", response, request)
        assert load_parameters(PATH, client=client) == {"A": "A", "B": "B", "C": "C"}
        stubber.assert_no_pending_responses()


def test_client_uses_adaptive_retries_and_the_configured_endpoint(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    client = make_client()
    # botocore turns `max_attempts` (retries) into total attempts: 1 call + 10 retries.
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 11}
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"


def test_repr_of_loaded_parameters_hides_values(moto_ssm: Any) -> None:
    put(moto_ssm, f"{PATH}podium-api-key", "hunter2-secret", secure=True)
    values = load_parameters(PATH)
    for text in (repr(values), str(values), f"{values}", repr([values])):
        assert "PODIUM_API_KEY" in text
        assert "hunter2-secret" not in text


# --- the command -------------------------------------------------------------------------------


def test_existing_environment_wins_unless_overwrite(
    moto_ssm: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    put(moto_ssm, f"{PATH}podium-api-key", "from-ssm-secret", secure=True)
    put(moto_ssm, f"{PATH}podium-url", "http://podium.internal")
    monkeypatch.setenv("PODIUM_API_KEY", "from-env")

    code, out, err = run_main(capsys, "--path", PATH, "--format", "json")
    assert code == 0
    assert json.loads(out) == {"PODIUM_URL": "http://podium.internal"}
    assert "PODIUM_API_KEY" in err
    assert "from-ssm-secret" not in err and "from-env" not in err

    code, out, err = run_main(capsys, "--path", PATH, "--format", "json", "--overwrite")
    assert code == 0
    assert json.loads(out) == {
        "PODIUM_API_KEY": "from-ssm-secret",
        "PODIUM_URL": "http://podium.internal",
    }


def test_two_parameters_mapping_to_one_name_is_an_error_naming_both(
    moto_ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    put(moto_ssm, f"{PATH}podium/api-key", "first-secret")
    put(moto_ssm, f"{PATH}ensemble/api_key", "second-secret", secure=True)

    code, out, err = run_main(capsys, "--path", PATH)
    assert code == 2
    assert out == ""
    assert_one_line(err)
    assert f"{PATH}podium/api-key" in err and f"{PATH}ensemble/api_key" in err
    assert "API_KEY" in err
    assert "first-secret" not in err and "second-secret" not in err


def test_nothing_found_exits_2_unless_allow_empty(
    moto_ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, "--path", PATH, "--format", "export")
    assert (code, out) == (2, "")
    assert_one_line(err)
    assert "no parameters found" in err

    code, out, _ = run_main(capsys, "--path", PATH, "--format", "export", "--allow-empty")
    assert (code, out) == (0, "")


def test_path_must_start_with_a_slash(moto_ssm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "--path", "diminuendo/test")
    assert code == 2
    assert_one_line(err)


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["--path", PATH, "--format", "yaml"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_output_file_is_0600_and_round_trips_through_dotenv(
    moto_ssm: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for i, (name, value) in enumerate(TRICKY.items()):
        put(moto_ssm, f"{PATH}{name.lower().replace('_', '-')}", value, secure=i % 2 == 0)
    target = tmp_path / ".env"
    target.write_text("OLD=1\n")
    target.chmod(0o644)

    old_umask = os.umask(0)  # the file must not depend on a careful umask
    try:
        code, out, err = run_main(capsys, "--path", PATH, "--output", str(target))
    finally:
        os.umask(old_umask)

    assert (code, out) == (0, "")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]  # no temporary left behind
    # The gateway's reader must not interpolate: `${PATH}` inside a secret is literal.
    assert dict(dotenv_values(target, interpolate=False)) == TRICKY
    assert not any(value in err for value in TRICKY.values())


def test_export_output_round_trips_through_bash_eval(
    moto_ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in TRICKY.items():
        put(moto_ssm, f"{PATH}{name.lower()}", value, secure=True)

    code, out, _ = run_main(capsys, "--path", PATH, "--format", "export")
    assert code == 0
    script = 'eval "$1"; shift; for name; do printf "%s\\0" "${!name}"; done'
    shell = subprocess.run(
        ["bash", "-c", script, "--", out, *TRICKY],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert shell.stdout.split("\0")[:-1] == list(TRICKY.values())
    assert shell.stderr == ""


def test_json_output(moto_ssm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in TRICKY.items():
        put(moto_ssm, f"{PATH}{name.lower()}", value)

    code, out, _ = run_main(capsys, "--path", PATH, "--format", "json")
    assert code == 0
    assert json.loads(out) == TRICKY


@pytest.mark.parametrize("fmt", ssm.FORMATS)
def test_values_never_reach_stderr_or_logs(
    moto_ssm: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    for name, value in TRICKY.items():
        put(moto_ssm, f"{PATH}{name.lower()}", value, secure=True)
    monkeypatch.setenv("ENSEMBLE_API_KEY", "set-in-env")  # exercises the "kept" report too
    caplog.clear()
    caplog.set_level(logging.DEBUG)  # botocore logs response bodies at DEBUG

    code, out, err = run_main(capsys, "--path", PATH, "--format", fmt)

    assert code == 0
    assert out  # the values are in the requested output…
    assert "ENSEMBLE_API_KEY" in err
    logged = caplog.text
    assert "GetParametersByPath" in logged  # botocore did log, at DEBUG
    for value in TRICKY.values():  # …and nowhere else
        assert value.strip() not in err
        assert value.strip() not in logged
    assert logging.getLogger("botocore.parsers").level == logging.NOTSET  # restored


# --- only known names are exported ------------------------------------------------------------

UNSAFE = {
    "LD_PRELOAD": "/tmp/evil-preload.so",
    "PYTHONPATH": "/tmp/evil-site",
    "PATH": "/tmp/evil-bin",
    "DEV_MODE": "true",
    "DEV_MODE_ALLOW_REMOTE": "true",
    "SOMETHING_ELSE": "value-of-something",
}
SAFE = {
    "PODIUM_API_KEY": "podium-key-value",
    "WS_RATE_LIMIT": "120/10s",
    "AWS_REGION": "eu-west-1",
    "OTEL_SERVICE_NAME": "gateway-eu",
}


@pytest.mark.parametrize("fmt", ssm.FORMATS)
def test_only_settings_and_aws_otel_names_are_exported(
    moto_ssm: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    tmp_path: Path,
) -> None:
    """Whoever can write the parameter store must not choose what the gateway process runs.
    Before the fix every name was exported: `LD_PRELOAD` and `PYTHONPATH` load code into the
    gateway, `PATH` changes what start.sh execs, `DEV_MODE` turns authentication off."""
    for name, value in {**UNSAFE, **SAFE}.items():
        put(moto_ssm, f"{PATH}{name.lower().replace('_', '-')}", value, secure=True)
    for name in SAFE:
        monkeypatch.delenv(name, raising=False)  # else the environment would win
    target = tmp_path / "out"

    code, out, err = run_main(capsys, "--path", PATH, "--format", fmt, "--output", str(target))

    assert (code, out) == (0, "")
    written = target.read_text()
    for name, value in SAFE.items():
        assert name in written and value in written
    for name, value in UNSAFE.items():
        assert f"{name}=" not in written and f'"{name}"' not in written and value not in written
        assert f"ssm-env: skipped {name} from {PATH}: " in err
        assert value not in err
    assert "authentication off" in err.split("skipped DEV_MODE from")[1].splitlines()[0]
    assert err.count("\n") == len(UNSAFE) + 1  # one warning each, then the summary
    assert f"{len(SAFE)} variable(s)" in err


def test_a_path_holding_no_setting_at_all_exits_2_unless_allow_empty(
    moto_ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    put(moto_ssm, f"{PATH}ld-preload", "/tmp/evil.so")
    put(moto_ssm, f"{PATH}dev-mode", "true")

    code, out, err = run_main(capsys, "--path", PATH, "--format", "export")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith("ssm-env: none of the 2 parameter(s) under")
    assert "/tmp/evil.so" not in err

    code, out, _ = run_main(capsys, "--path", PATH, "--format", "export", "--allow-empty")
    assert (code, out) == (0, "")


# --- AWS failures: one line, non-zero, no values -----------------------------------------------


def test_no_credentials(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")

    code, out, err = run_main(capsys, "--path", PATH)
    assert (code, out) == (1, "")
    assert_one_line(err)
    assert "no AWS credentials" in err


def test_no_region(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    code, _, err = run_main(capsys, "--path", PATH)
    assert code == 1
    assert_one_line(err)
    assert "no AWS region" in err


def test_endpoint_unreachable(aws_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    client = boto3.session.Session().client(
        "ssm",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=Config(retries={"total_max_attempts": 1}),
    )

    code, _, err = run_main(capsys, "--path", PATH, client=client)
    assert code == 1
    assert_one_line(err)
    assert "cannot reach the SSM endpoint" in err


@pytest.mark.parametrize(
    ("aws_code", "exit_code", "fragment"),
    [
        ("AccessDeniedException", 1, "access denied reading /diminuendo/test/"),
        ("ThrottlingException", 1, "throttling"),
        ("ValidationException", 2, "rejected the path"),
        ("InternalServerError", 1, "InternalServerError reading /diminuendo/test/"),
    ],
)
def test_aws_errors_give_one_line(
    aws_env: None,
    capsys: pytest.CaptureFixture[str],
    aws_code: str,
    exit_code: int,
    fragment: str,
) -> None:
    client = make_client()
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "get_parameters_by_path",
            service_error_code=aws_code,
            service_message="User: arn:aws:iam::123456789012:user/dev is not\nauthorized",
            http_status_code=400,
        )
        code, out, err = run_main(capsys, "--path", PATH, client=client)
    assert (code, out) == (exit_code, "")
    assert_one_line(err)
    assert fragment in err
