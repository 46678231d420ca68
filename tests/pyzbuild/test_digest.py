"""The build id: the version and a hash of what the pyz holds (names, modes, bytes)."""

from __future__ import annotations

import shutil
from pathlib import Path

from pyzbuild.digest import build_id, tree_digest


def tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("a = 1\n")
    (root / "pkg" / "b.txt").write_text("b\n")
    (root / "pkg" / "a.py").chmod(0o644)
    (root / "pkg" / "b.txt").chmod(0o644)
    return root


def test_the_same_content_at_another_path_has_the_same_digest(tmp_path: Path) -> None:
    first = tree(tmp_path / "one")
    second = tmp_path / "elsewhere" / "two"
    shutil.copytree(first, second)
    assert tree_digest(first) == tree_digest(second)


def test_content_name_and_mode_each_change_the_digest(tmp_path: Path) -> None:
    root = tree(tmp_path / "site")
    seen = {tree_digest(root)}
    (root / "pkg" / "a.py").write_text("a = 2\n")
    seen.add(tree_digest(root))
    (root / "pkg" / "b.txt").rename(root / "pkg" / "c.txt")
    seen.add(tree_digest(root))
    (root / "pkg" / "c.txt").chmod(0o755)
    seen.add(tree_digest(root))
    assert len(seen) == 4


def test_build_id_is_the_wheel_version_and_twenty_hex_digits() -> None:
    digest = "0123456789abcdef" * 4
    assert build_id("diminuendo-0.3.0-py3-none-any.whl", digest) == "0.3.0-0123456789abcdef0123"
