"""The wheel is built from a clean copy: the package and its build files, no caches."""

from __future__ import annotations

from pathlib import Path

from pyzbuild.sources import copy_sources


def test_the_copy_holds_the_wheel_inputs_without_caches_or_anything_else(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "diminuendo" / "__pycache__").mkdir(parents=True)
    (root / "diminuendo" / "__init__.py").write_text("")
    (root / "diminuendo" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"")
    (root / "diminuendo" / "old.pyc").write_bytes(b"")
    (root / "diminuendo" / "old.pyo").write_bytes(b"")
    (root / "diminuendo" / "run.sh").write_text("#!/bin/sh\n")
    (root / "diminuendo" / "run.sh").chmod(0o755)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", ".env"):
        (root / name).write_text(name)
    (root / "build" / "lib").mkdir(parents=True)

    names = copy_sources(root, tmp_path / "src")

    assert names == ["diminuendo", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"]
    copied = sorted(
        p.relative_to(tmp_path / "src").as_posix() for p in (tmp_path / "src").rglob("*")
    )
    assert copied == [
        "LICENSE",
        "README.md",
        "diminuendo",
        "diminuendo/__init__.py",
        "diminuendo/run.sh",
        "pyproject.toml",
        "setup.cfg",
    ]
    assert (tmp_path / "src" / "diminuendo" / "run.sh").stat().st_mode & 0o777 == 0o755
