"""A Valkey for the fleet benchmarks: the one named by `--url`, or a valkey-server of their own."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def valkey_url(url: str | None) -> Iterator[str]:
    """`url`, or else a valkey-server started on 127.0.0.1 in a temporary directory for the
    block (`diminuendo.local.valkey`, as the tests use) and stopped after it."""
    if url:
        yield url
        return
    from diminuendo.local.valkey import LocalValkey

    with tempfile.TemporaryDirectory(prefix="valkey-bench-") as data_dir:
        server = LocalValkey(Path(data_dir))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
