"""A clean copy of what the wheel is made of, so no stale `build/lib`, `__pycache__` or bytecode of
the work tree can reach the artifact, and building writes nothing into the work tree."""

from __future__ import annotations

import shutil
from pathlib import Path

# What setuptools reads to build the wheel; the optional ones only where the tree has them.
WHEEL_INPUTS = ("diminuendo", "setup.cfg", "pyproject.toml", "README.md")
OPTIONAL_WHEEL_INPUTS = ("setup.py", "MANIFEST.in", "LICENSE")
LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def copy_sources(root: Path, dest: Path) -> list[str]:
    """Copy the wheel's inputs from `root` into `dest` (modes and times kept, caches left out);
    the names copied."""
    names = [*WHEEL_INPUTS, *(n for n in OPTIONAL_WHEEL_INPUTS if (root / n).exists())]
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, dest / name, symlinks=True, ignore=LEFT_OUT)
        else:
            shutil.copy2(source, dest / name)
    return names
