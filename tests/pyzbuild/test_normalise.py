"""Normalising site-packages removes what depends on the build machine, directory or umask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyzbuild.digest import tree_digest
from pyzbuild.normalise import dropped_record_entry, normalise_site_packages, normalised_mode

RECORD_KEPT = ["pkg/__init__.py,sha256=abc,10", "pkg-1.0.dist-info/METADATA,sha256=def,20"]
RECORD_DROPPED = [
    "bin/tool,sha256=ghi,30",
    "../../bin/tool,,",
    "pkg-1.0.dist-info/direct_url.json,sha256=jkl,40",
    "pkg/__pycache__/__init__.cpython-311.pyc,,",
]


def installed_site(site: Path, umask: int) -> Path:
    """A site-packages as `pip install --target` leaves it, written under `umask`."""
    old = os.umask(umask)
    try:
        (site / "bin").mkdir(parents=True)
        (site / "bin" / "tool").write_text(f"#!{site}/venv/bin/python\n")
        (site / "pkg" / "__pycache__").mkdir(parents=True)
        (site / "pkg" / "__init__.py").write_text("x = 1\n")
        (site / "pkg" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
        (site / "pkg" / "stray.pyc").write_bytes(b"\0")
        (site / "pkg" / "run.sh").write_text("#!/bin/sh\n")
        (site / "pkg" / "run.sh").chmod(0o777 & ~umask)
        info = site / "pkg-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Name: pkg\n")
        (info / "direct_url.json").write_text(f'{{"url": "file://{site}"}}')
        (info / "RECORD").write_text("\n".join(RECORD_KEPT + RECORD_DROPPED) + "\n")
    finally:
        os.umask(old)
    return site


@pytest.mark.parametrize("line", RECORD_DROPPED)
def test_record_lines_of_removed_files_are_dropped(line: str) -> None:
    assert dropped_record_entry(line)


@pytest.mark.parametrize("line", RECORD_KEPT)
def test_record_lines_of_kept_files_stay(line: str) -> None:
    assert not dropped_record_entry(line)


@pytest.mark.parametrize(
    ("mode", "is_dir", "expected"),
    [(0o600, False, 0o644), (0o666, False, 0o644), (0o700, False, 0o755), (0o700, True, 0o755)],
)
def test_modes_are_0644_or_0755_whatever_the_umask(mode: int, is_dir: bool, expected: int) -> None:
    assert normalised_mode(mode, is_dir) == expected


def test_normalising_removes_machine_traces_and_fixes_modes(tmp_path: Path) -> None:
    site = installed_site(tmp_path / "site", umask=0o077)
    normalise_site_packages(site)
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert files == [
        "pkg-1.0.dist-info/METADATA",
        "pkg-1.0.dist-info/RECORD",
        "pkg/__init__.py",
        "pkg/run.sh",
    ]
    record = (site / "pkg-1.0.dist-info" / "RECORD").read_text()
    assert record == "".join(f"{line}\n" for line in RECORD_KEPT)
    assert (site / "pkg" / "__init__.py").stat().st_mode & 0o777 == 0o644
    assert (site / "pkg" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (site / "pkg").stat().st_mode & 0o777 == 0o755


def test_two_installs_at_other_paths_and_umasks_normalise_to_one_content(tmp_path: Path) -> None:
    first = installed_site(tmp_path / "one" / "site", umask=0o022)
    second = installed_site(tmp_path / "two" / "deeper" / "site", umask=0o077)
    assert tree_digest(first) != tree_digest(second)
    normalise_site_packages(first)
    normalise_site_packages(second)
    assert tree_digest(first) == tree_digest(second)
