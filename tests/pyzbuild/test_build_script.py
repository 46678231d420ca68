"""build.sh stays bash that runs commands: its Python lives in pyzbuild/, where ruff and pytest
see it (issue 15), not in heredocs or `-c` strings that no linter or test reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyzbuild.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
BUILD_SH = (ROOT / "build.sh").read_text()


def test_build_sh_is_at_most_150_lines() -> None:
    assert len(BUILD_SH.splitlines()) <= 150


def test_build_sh_holds_no_python_source() -> None:
    assert "<<" not in BUILD_SH, "a heredoc: put its Python in pyzbuild/"
    inline = re.findall(r"""(?:python|\$vpy|\$python)"? -c ['"]([^'"]*)""", BUILD_SH)
    assert all(len(code) < 60 for code in inline), f"Python in a -c string: {inline}"


@pytest.mark.parametrize("step", sorted(set(re.findall(r"\bpyzbuild ([a-z-]+) ", BUILD_SH))))
def test_every_pyzbuild_step_build_sh_runs_exists(step: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main([step, "--help"])
    assert exited.value.code == 0, f"build.sh runs `python -m pyzbuild {step}`, which is unknown"
