"""scripts/python.sh: how bootstrap.sh, build.sh and bench/run-all read `PYTHON`.

The machine under test is a PATH built for each case: a pyenv-style shim that refuses (what pyenv
does for an installed but unselected version) and a `pyenv` that knows where that version lives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"
# The interpreter itself, not a venv's: python.sh reports sys.executable.
REAL = Path(sys.executable).resolve()


def sh(script: str, path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in bash with python.sh sourced and PATH = `path` plus the basic tools."""
    return subprocess.run(
        ["bash", "-c", f'source "{ROOT}/scripts/python.sh"; {script}'],
        env={"PATH": f"{path}:/usr/bin:/bin", "HOME": str(path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def refusing_shim(tmp_path: Path) -> Path:
    """`pythonX.Y` on PATH refuses; `pyenv prefix X.Y` names a prefix whose bin has the real one."""
    bin_dir = tmp_path / "shims"
    bin_dir.mkdir()
    executable(
        bin_dir / f"python{MINOR}",
        f"#!/bin/sh\necho 'pyenv: python{MINOR}: command not found' >&2\nexit 127\n",
    )
    prefix = tmp_path / "versions" / MINOR
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / f"python{MINOR}").symlink_to(REAL)
    executable(
        bin_dir / "pyenv",
        f'#!/bin/sh\n[ "$1 $2" = "prefix {MINOR}" ] && echo "{prefix}" && exit 0\nexit 1\n',
    )
    return bin_dir


def test_a_shim_that_refuses_is_looked_through_with_pyenv(refusing_shim: Path) -> None:
    for spelling in (f"python{MINOR}", MINOR, str(refusing_shim / f"python{MINOR}")):
        done = sh(f'resolve_python "{spelling}"', refusing_shim)
        assert done.returncode == 0, done.stderr
        resolved = Path(done.stdout.strip())
        assert resolved.name == f"python{MINOR}" and resolved.resolve() == REAL, spelling


def test_a_name_that_runs_is_resolved_to_the_interpreter_itself(tmp_path: Path) -> None:
    (tmp_path / f"python{MINOR}").symlink_to(REAL)
    done = sh(f"resolve_python python{MINOR}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == REAL


def test_an_interpreter_that_is_nowhere_is_a_clear_error(tmp_path: Path) -> None:
    done = sh("resolve_python python3.99", tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "no working Python interpreter python3.99" in done.stderr


def test_the_venv_is_per_interpreter(tmp_path: Path) -> None:
    default = sh(f'project_venv /repo "$(python_minor "{REAL}")"', tmp_path)
    chosen = sh(f'project_venv /repo "$(python_minor "{REAL}")"', tmp_path, PYTHON="x")
    assert default.stdout.strip() == "/repo/.venv"
    assert chosen.stdout.strip() == f"/repo/.venv-{MINOR}"


def test_older_pythons_are_refused(tmp_path: Path) -> None:
    older = sorted(
        Path(os.environ.get("PYENV_ROOT", "/nonexistent")).glob("versions/3.10*/bin/python3.10")
    )
    if not older:
        pytest.skip("no Python 3.10 installed to try")
    done = sh(f'python_minor "{older[-1]}"', tmp_path)
    assert done.returncode != 0 and done.stdout == ""
    assert "Python 3.11+ is required" in done.stderr
