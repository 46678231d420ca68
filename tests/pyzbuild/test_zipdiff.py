"""What differs between two builds: entries by name, then their order."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pyzbuild.zipdiff import entry_differences, zip_entries

STAMP = (2026, 1, 1, 0, 0, 0)


def archive(path: Path, entries: list[tuple[str, bytes, tuple[int, ...]]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, date_time in entries:
            zf.writestr(zipfile.ZipInfo(name, date_time), data)
    return path


def test_identical_archives_have_no_differences(tmp_path: Path) -> None:
    entries = [("a.py", b"a", STAMP), ("b.py", b"b", STAMP)]
    first = zip_entries(archive(tmp_path / "1.zip", entries))
    second = zip_entries(archive(tmp_path / "2.zip", entries))
    assert entry_differences(first, second) == []


def test_content_timestamp_and_missing_entries_are_named(tmp_path: Path) -> None:
    first = zip_entries(
        archive(
            tmp_path / "1.zip", [("a.py", b"a", STAMP), ("b.py", b"b", STAMP), ("c.py", b"", STAMP)]
        )
    )
    second = zip_entries(
        archive(tmp_path / "2.zip", [("a.py", b"A", STAMP), ("b.py", b"b", (2026, 1, 2, 0, 0, 0))])
    )
    lines = entry_differences(first, second)
    assert [line.split()[1] for line in lines[:3]] == ["a.py", "b.py", "c.py"]
    assert lines[2].endswith(" None"), "c.py is missing from the second build"


def test_the_same_entries_in_another_order_are_reported(tmp_path: Path) -> None:
    entries = [("a.py", b"a", STAMP), ("b.py", b"b", STAMP)]
    first = zip_entries(archive(tmp_path / "1.zip", entries))
    second = zip_entries(archive(tmp_path / "2.zip", entries[::-1]))
    assert entry_differences(first, second) == ["entry order differs"]
