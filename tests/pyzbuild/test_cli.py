"""`python -m pyzbuild`: what build.sh sees of a step, its exit status and its one-line reason."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from pyzbuild.__main__ import main


def pyz(path: Path, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("site-packages/a.py", (2026, 1, 1, 0, 0, 0)), data)
    return path


def test_compare_passes_byte_identical_builds(tmp_path: Path) -> None:
    assert (
        main(["compare", str(pyz(tmp_path / "1.pyz", b"a")), str(pyz(tmp_path / "2.pyz", b"a"))])
        == 0
    )


def test_compare_fails_differing_builds_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = pyz(tmp_path / "1.pyz", b"a"), pyz(tmp_path / "2.pyz", b"b")
    assert main(["compare", str(first), str(second)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("  sha256 ")
    assert "  differs: site-packages/a.py " in err


def test_build_id_prints_version_and_content_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.py").write_text("a = 1\n")
    assert (
        main(["build-id", "wheels/diminuendo-1.2.3-py3-none-any.whl", str(tmp_path / "site")]) == 0
    )
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("1.2.3-") and len(printed) == len("1.2.3-") + 20


def test_check_wheel_fails_with_the_reason_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "diminuendo").mkdir()
    (tmp_path / "diminuendo" / "py.typed").write_text("")
    wheel = tmp_path / "diminuendo-0.3.0-py3-none-any.whl"
    zipfile.ZipFile(wheel, "w").close()
    assert main(["check-wheel", str(tmp_path / "diminuendo"), str(wheel)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("build.sh: package files missing from the wheel")
    assert err.count("\n") == 1 and "diminuendo/py.typed" in err
