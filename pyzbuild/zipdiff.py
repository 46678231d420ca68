"""What differs between two builds that should be byte-identical: per entry its CRC, external
attributes (mode) and timestamp, and the order of the entries, so a failed reproducibility check
says where to look instead of only that two hashes differ."""

from __future__ import annotations

import zipfile
from pathlib import Path

# What a build must reproduce for one zip entry: content (CRC), mode and timestamp.
Entry = tuple[int, int, tuple[int, ...]]


def zip_entries(path: Path) -> dict[str, Entry]:
    """Entry name → (CRC, external attributes, date_time), in the archive's order."""
    with zipfile.ZipFile(path) as archive:
        return {i.filename: (i.CRC, i.external_attr, i.date_time) for i in archive.infolist()}


def entry_differences(a: dict[str, Entry], b: dict[str, Entry]) -> list[str]:
    """One line per entry that is missing from one side or differs, by name, then one line if
    the two hold the same entries in another order."""
    lines = [
        f"differs: {name} {a.get(name)} {b.get(name)}"
        for name in sorted(a.keys() | b.keys())
        if a.get(name) != b.get(name)
    ]
    if list(a) != list(b):
        lines.append("entry order differs")
    return lines
