"""Remove from an installed site-packages what depends on the build machine or directory, so two
builds of one tree give the same bytes: console scripts whose shebangs hold the build venv's path
(`bin/`), `direct_url.json` (the build directory's path) and the RECORD lines naming them, any
bytecode, and file modes that follow the umask."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def dropped_record_entry(line: str) -> bool:
    """True for a RECORD line naming a file that normalising removes (or one outside the tree)."""
    name = line.split(",", 1)[0]
    return (
        name.startswith(("bin/", "../"))
        or name.endswith("/direct_url.json")
        or "__pycache__/" in name
    )


def normalised_mode(mode: int, is_dir: bool) -> int:
    """0755 for directories and anything executable by someone, else 0644: umask-proof."""
    return 0o755 if is_dir or mode & 0o111 else 0o644


def normalise_site_packages(site: Path) -> None:
    """Normalise `site` in place (see the module docstring)."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    for path in site.rglob("*.pyc"):
        path.unlink()
    for path in site.glob("*.dist-info/direct_url.json"):
        path.unlink()
    for record in site.glob("*.dist-info/RECORD"):
        lines = record.read_text(encoding="utf-8").splitlines()
        kept = "".join(f"{line}\n" for line in lines if not dropped_record_entry(line))
        record.write_text(kept, encoding="utf-8")
    for path in site.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, normalised_mode(path.stat().st_mode, path.is_dir()))
