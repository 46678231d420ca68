"""The build id: it names the directory the pyz extracts itself to under SHIV_ROOT, so it is the
project's version plus a hash of the content: the same content always reuses one directory, and
any change (a file, its name or its mode) gets a new one."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Hex digits of the content hash in the build id (docs/PACKAGING.md).
BUILD_ID_HASH_CHARS = 20


def tree_digest(root: Path) -> str:
    """sha256 over every file under `root`, in path order: its relative path, its permission
    bits and the sha256 of its bytes."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        if path.is_file():
            mode = oct(path.stat().st_mode & 0o777)
            digest.update(f"{path.relative_to(root).as_posix()}\0{mode}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes, in hex as sha256sum prints it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_id(wheel_name: str, content_digest: str) -> str:
    """`<version>-<first hex digits of the content digest>`, the version read from the wheel's
    file name (`diminuendo-0.3.0-py3-none-any.whl` → `0.3.0`)."""
    version = wheel_name.split("-")[1]
    return f"{version}-{content_digest[:BUILD_ID_HASH_CHARS]}"
