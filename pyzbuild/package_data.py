"""Every non-Python file of the package must reach the wheel: a file that `[options.package_data]`
in setup.cfg does not name is left out of the wheel without a word, and the pyz would lack it."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path


def missing_package_data(package: Path, wheel_names: Iterable[str]) -> list[str]:
    """The non-Python files under `package` (as `<package name>/<relative path>`, sorted) that
    are not among the wheel's entry names."""
    names = set(wheel_names)
    files = (
        f"{package.name}/{path.relative_to(package).as_posix()}"
        for path in sorted(package.rglob("*"))
        if path.is_file() and path.suffix != ".py"
    )
    return [name for name in files if name not in names]


def check_wheel(package: Path, wheel: Path) -> str | None:
    """None when the wheel holds all of `package`'s data files, else the reason to stop."""
    with zipfile.ZipFile(wheel) as archive:
        missing = missing_package_data(package, archive.namelist())
    if not missing:
        return None
    return (
        "package files missing from the wheel (add them to [options.package_data] in"
        " setup.cfg): " + ", ".join(missing)
    )
