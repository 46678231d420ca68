"""A data file that setup.cfg's package_data does not name stops the build, by name."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pyzbuild.package_data import check_wheel, missing_package_data


def package(root: Path) -> Path:
    pkg = root / "diminuendo"
    (pkg / "gateway" / "console").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "py.typed").write_text("")
    (pkg / "gateway" / "console" / "app.js").write_text("")
    (pkg / "gateway" / "console" / "index.html").write_text("")
    return pkg


def test_python_files_are_not_package_data(tmp_path: Path) -> None:
    pkg = package(tmp_path)
    wheel_names = ["diminuendo/py.typed", "diminuendo/gateway/console/app.js"]
    assert missing_package_data(pkg, wheel_names) == ["diminuendo/gateway/console/index.html"]


def test_a_wheel_without_a_data_file_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    pkg = package(tmp_path / "src")
    wheel = tmp_path / "diminuendo-0.3.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("diminuendo/__init__.py", "diminuendo/py.typed"):
            zf.writestr(name, "")
    problem = check_wheel(pkg, wheel)
    assert problem is not None
    assert "[options.package_data] in setup.cfg" in problem
    assert problem.endswith(
        ": diminuendo/gateway/console/app.js, diminuendo/gateway/console/index.html"
    )
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("diminuendo/gateway/console/app.js", "")
        zf.writestr("diminuendo/gateway/console/index.html", "")
    assert check_wheel(pkg, wheel) is None
