"""Packaging: `./build.sh` builds a reproducible zipapp for the interpreter it is given and
smoke-tests it with that interpreter; the Dockerfile, the `.dockerignore`, the supported Python
versions and the configuration examples agree with the code and CI (docs/PACKAGING.md)."""

from __future__ import annotations

import configparser
import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from diminuendo import __version__
from diminuendo.settings import _VARS, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PYZ = ROOT / "dist" / "diminuendo.pyz"
THIS_MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"
PRODUCTION_ENV = ROOT / "config" / "production.env.example"
DEV_ENV = ROOT / "config" / "dev.env.example"
BUILD_TIMEOUT_S = 840

SMOKE_LINES = (
    "reproducible: yes, two builds are byte-identical",
    "smoke: imports ok",
    f"smoke: console entry ok (diminuendo {__version__})",
    "smoke: bad configuration refused with exit 2",
    "smoke: local-stack up",
    "smoke: gateway /health ok",
    "smoke: /metrics ok",
    "smoke: websocket turn ok",
    "smoke: SIGTERM -> exit 0 in",
    "client closed 1001",
    "smoke: WORKERS=2 (spawned workers) healthy, SIGTERM -> exit 0",
    "smoke: stand-ins stopped (exit 0",
    "smoke: all checks passed",
)


# --- Dockerfile --------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def instruction(name: str) -> list[str]:
    return [args for keyword, args in dockerfile() if keyword == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"use ENV KEY=value, got {args!r}"
            env[key] = value
    return env


def expand(text: str, build_args: dict[str, str] | None = None) -> str:
    """`${NAME}` replaced as `docker build` would: `--build-arg`s, else the `ARG NAME=default`."""
    values: dict[str, str] = {}
    for args in instruction("ARG"):
        name, sep, default = args.partition("=")
        if sep:
            values[name] = default
    values.update(build_args or {})
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def copies(build_args: dict[str, str] | None = None) -> dict[str, str]:
    """Image path → build-context path for every COPY."""
    result: dict[str, str] = {}
    for args in instruction("COPY"):
        tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
        tokens = [expand(t, build_args) for t in tokens if not t.startswith("--")]
        *sources, dest = tokens
        for source in sources:
            target = dest + Path(source).name if dest.endswith("/") else dest
            result[target] = source
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def shebang_minor(data: bytes) -> str:
    match = re.match(rb"#!/usr/bin/env python(3\.\d+)\n", data)
    assert match, f"unexpected pyz shebang {data[:60]!r}"
    return match.group(1).decode()


def base_image_minor(build_args: dict[str, str] | None = None) -> str:
    (base,) = instruction("FROM")
    base = expand(base, build_args)
    match = re.fullmatch(r"python:(3\.\d+)(?:\.\d+)?-slim(?:-\w+)?", base)
    assert match, f"base image must be python:3.X-slim…, got {base!r}"
    return match.group(1)


def ci_pythons() -> list[str]:
    """The Python versions `.ci/run` runs the suite on, the first being the default."""
    match = re.search(r"^PYTHONS=\(([^)]*)\)", (ROOT / ".ci" / "run").read_text(), re.M)
    assert match, ".ci/run must list its versions as PYTHONS=(3.X …)"
    return match.group(1).split()


def test_supported_versions_are_the_ones_ci_proves() -> None:
    """setup.cfg's classifiers and python_requires, and the README, say what CI runs."""
    versions = ci_pythons()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    classifiers = cfg["metadata"]["classifiers"]
    assert re.findall(r"Programming Language :: Python :: (3\.\d+)", classifiers) == versions
    lowest = min(versions, key=lambda v: tuple(map(int, v.split("."))))
    assert cfg["options"]["python_requires"] == f">={lowest}"
    supported = f"Python {', '.join(versions[:-1])} or {versions[-1]}"
    assert supported in (ROOT / "README.md").read_text(), f"README must say {supported!r}"


def test_dockerfile_base_image_is_the_python_minor_the_project_targets() -> None:
    assert base_image_minor() == ci_pythons()[0], "the image's default is CI's first Python"
    default_python = re.search(r"DEFAULT_PYTHON=python(3\.\d+)", (ROOT / "build.sh").read_text())
    assert default_python and default_python.group(1) == base_image_minor(), (
        "build.sh's default interpreter (dist/diminuendo.pyz) must match the image's default"
    )


def test_one_build_argument_switches_the_image_python_and_the_pyz_together() -> None:
    for version in ci_pythons():
        build_args = {"PYTHON_VERSION": version}
        assert base_image_minor(build_args) == version
        pyz = copies(build_args)["/app/diminuendo.pyz"]
        assert pyz == f"dist/diminuendo-py{version}.pyz", "what build.sh writes for that Python"
        assert dockerignore_allows(pyz), f"{pyz} is excluded from the build context"


def test_dockerfile_runs_as_a_fixed_non_root_user() -> None:
    users = instruction("USER")
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit() or re.search(rf"--uid \d+ .*{user}", " ".join(instruction("RUN")))


def test_dockerfile_copies_only_the_pyz_and_start_script_and_runs_them() -> None:
    copied = copies()
    default_pyz = f"dist/diminuendo-py{base_image_minor()}.pyz"
    assert sorted(copied.values()) == [default_pyz, "scripts/start.sh"]
    cmd = exec_form(instruction("CMD")[-1])
    assert cmd[0] in copied, f"CMD {cmd[0]} is not a file COPY puts in the image"
    start = ROOT / copied[cmd[0]]
    assert start.is_file() and os.access(start, os.X_OK), f"{start} must be executable"
    env = dockerfile_env()
    # start.sh runs DIMINUENDO_PYZ (default /app/diminuendo.pyz): it must be the copied pyz.
    pyz_path = env.get("DIMINUENDO_PYZ", "/app/diminuendo.pyz")
    assert copied.get(pyz_path) == default_pyz
    assert "/app/diminuendo.pyz" in start.read_text()


def test_dockerfile_shiv_root_and_data_dir_are_writable_by_the_user() -> None:
    env = dockerfile_env()
    runs = " ".join(instruction("RUN"))
    user = instruction("USER")[-1]
    uid = user.split(":")[0]
    for name in ("SHIV_ROOT", "DATA_DIR"):
        assert name in env, f"ENV {name} is not set"
        assert re.search(rf"chown \S*{uid}\S* .*{re.escape(env[name])}", runs), (
            f"{name}={env[name]} must be created and chown'ed to the service user"
        )


def test_dockerfile_exposes_port_and_checks_health() -> None:
    env = dockerfile_env()
    exposed = " ".join(instruction("EXPOSE")).split()
    assert env.get("PORT", "8080") in exposed
    (healthcheck,) = instruction("HEALTHCHECK")
    assert "/health" in healthcheck and not healthcheck.upper().startswith("NONE")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_dockerfile_healthcheck_command_passes_on_200_and_fails_on_503(health_server) -> None:
    port, handler = health_server
    (healthcheck,) = instruction("HEALTHCHECK")
    command = exec_form(healthcheck.partition(" CMD ")[2].strip())
    assert command[0] == "python3"  # slim images have no curl
    argv = [sys.executable, *command[1:]]
    env = {**os.environ, "PORT": str(port)}
    assert subprocess.run(argv, env=env, timeout=10, capture_output=True).returncode == 0
    handler.status = 503  # draining
    assert subprocess.run(argv, env=env, timeout=10, capture_output=True).returncode != 0


def dockerignore_allows(path: str) -> bool:
    """Docker's rules, enough for this file: last matching pattern wins, `!` re-includes, and a
    pattern matching a parent directory matches what is under it."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            included = negate
    return included


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    for needed in copies().values():
        assert dockerignore_allows(needed), f"{needed} is excluded from the build context"
    for secret_or_bulk in (".env", ".venv/bin/python", "data/logs/x.log", "build/site-packages"):
        assert not dockerignore_allows(secret_or_bulk), f"{secret_or_bulk} reaches the context"


# --- configuration examples --------------------------------------------------------------------


def env_lines(path: Path) -> dict[str, tuple[bool, str, str]]:
    """NAME → (active, value, the comment line right above it)."""
    lines = path.read_text().splitlines()
    found: dict[str, tuple[bool, str, str]] = {}
    for index, line in enumerate(lines):
        match = re.fullmatch(r"(#?)([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            comment = lines[index - 1] if index else ""
            assert match.group(2) not in found, f"{match.group(2)} appears twice in {path.name}"
            found[match.group(2)] = (not match.group(1), match.group(3), comment)
    return found


SECRETS = [f.name.upper() for f in fields(Settings) if f.metadata.get("secret")]
# Secrets a production start needs; the others (METRICS_TOKEN, FORWARDED_SECRET) are optional.
REQUIRED_SECRETS = [n for n in SECRETS if n not in ("METRICS_TOKEN", "FORWARDED_SECRET")]
# What SSM would supply; PODIUM_SECRETS_KEY must be a real key (32 bytes, base64url).
SUPPLIED = {
    **{name: "from-ssm" for name in REQUIRED_SECRETS},
    "PODIUM_SECRETS_KEY": "ZnJvbS1zc20tZnJvbS1zc20tZnJvbS1zc20tZnJvbSE=",
}


def test_production_env_example_documents_every_setting() -> None:
    documented = env_lines(PRODUCTION_ENV)
    wanted = [var.name for var in _VARS] + ["SSM_PATH", "SHIV_ROOT"]
    missing = [name for name in wanted if name not in documented]
    assert not missing, f"add to config/production.env.example: {missing}"
    for name in wanted:
        comment = documented[name][2]
        assert comment.startswith(f"# {name} — ") and len(comment) > len(name) + 12, (
            f"{name} needs a one-line comment above it: '# {name} — meaning (default …)'"
        )


def test_production_env_example_holds_no_secret_values() -> None:
    documented = env_lines(PRODUCTION_ENV)
    assert SECRETS, "Settings marks no field secret"
    for name in SECRETS:
        assert documented[name][1] == "", f"{name} must stay empty in the example"


def test_production_env_example_is_valid_once_secrets_are_supplied() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({}, dotenv_path=PRODUCTION_ENV)
    assert sorted(raised.value.problems) == sorted(
        f"{name}: required unless DEV_MODE=true" for name in REQUIRED_SECRETS
    )
    settings = load_settings(SUPPLIED, dotenv_path=PRODUCTION_ENV)
    assert settings.dev_mode is False


def test_production_env_example_defaults_match_the_code() -> None:
    """Every `#NAME=value` line shows the real default: uncommenting it changes nothing."""
    secrets = SUPPLIED
    baseline = load_settings(secrets, dotenv_path=PRODUCTION_ENV)
    by_name = {var.name: var.attr for var in _VARS}
    for name, (active, value, _) in env_lines(PRODUCTION_ENV).items():
        if active or name not in by_name:
            continue
        settings = load_settings({**secrets, name: value}, dotenv_path=PRODUCTION_ENV)
        attr = by_name[name]
        assert getattr(settings, attr) == getattr(baseline, attr) == getattr(Settings(), attr), (
            f"#{name}={value} is not the default"
        )


def test_dev_env_example_is_a_dev_configuration() -> None:
    documented = env_lines(DEV_ENV)
    assert {"DEV_MODE", "LOG_LEVEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"} <= set(documented)
    settings = load_settings({}, dotenv_path=DEV_ENV)
    assert settings.dev_mode is True and settings.host == "127.0.0.1"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_example_is_valid_config() -> None:
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(ROOT / "config" / "haproxy.cfg.example")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(ROOT / "build.sh")], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()


# --- the real build ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_build_sh_builds_a_reproducible_pyz_that_passes_its_smoke_test() -> None:
    """Built for the Python running this test, named by its minor as a bare `pythonX.Y`: the
    default build (PYTHON unset) on the image's default Python, else `PYTHON=python3.X`. Where
    that name is a pyenv shim that refuses (3.13 installed, not selected), build.sh finds the
    interpreter itself, and its smoke test runs the pyz with it, never through the shebang.

    Before the fix: `PYTHON=python3.13 ./build.sh` stopped at once ("pyenv: python3.13: command
    not found"); with a path it built, but the smoke test ran the pyz through its `python3.13`
    shebang, which the shim refuses, and the result overwrote dist/diminuendo.pyz."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHON")}
    default_build = base_image_minor() == THIS_MINOR
    if not default_build:
        env["PYTHON"] = f"python{THIS_MINOR}"
    result = subprocess.run(
        ["bash", str(ROOT / "build.sh"), "--check-reproducible"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    output = result.stdout
    assert result.returncode == 0, output[-6000:]
    for line in SMOKE_LINES:
        assert line in output, f"missing {line!r} in build output:\n{output[-6000:]}"
    assert f"smoke: imports ok (Python {THIS_MINOR}." in output

    pyz = ROOT / "dist" / f"diminuendo-py{THIS_MINOR}.pyz"
    assert pyz.is_file() and os.access(pyz, os.X_OK)
    size = re.search(rf"^pyz: dist/{re.escape(pyz.name)} (\d+) bytes", output, re.M)
    assert size and int(size.group(1)) == pyz.stat().st_size
    if default_build:
        assert DEFAULT_PYZ.samefile(pyz), "the default build is also dist/diminuendo.pyz"
    data = pyz.read_bytes()
    assert shebang_minor(data) == THIS_MINOR, "the shebang names the Python it was built for"

    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
        environment = json.loads(archive.read("environment.json"))
    assert environment["entry_point"] == "diminuendo.cli:main"
    assert environment["reproducible"] is True
    assert environment["build_id"].startswith(f"{__version__}-")
    package_data = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "diminuendo").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    missing = [p for p in package_data if f"site-packages/{p}" not in names]
    assert not missing, f"package files missing from the pyz (setup.cfg package_data): {missing}"
    leftovers = [
        n
        for n in names
        if n.endswith(".pyc") or n.startswith("site-packages/bin/") or "direct_url.json" in n
    ]
    assert not leftovers, leftovers[:10]
