"""The smoke test's SHIV_ROOT: where the pyz extracts itself. Compiled extensions are `dlopen`ed
from there, so on a `noexec` mount (a hardened /tmp) every compiled import fails with "failed to
map segment from shared object"; a probe script says so plainly before the pyz runs."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

PROBE = "#!/bin/sh\nexit 0\n"


class NoExecError(RuntimeError):
    """The directory does not allow executables."""


def fresh_shiv_root(parent: Path) -> Path:
    """A new, empty directory under `parent` in which executables run."""
    root = Path(tempfile.mkdtemp(prefix="shiv-root.", dir=parent))
    probe = root / "exec-probe"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    try:
        subprocess.run([probe], check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NoExecError(f"SHIV_ROOT {root} does not allow executables (noexec mount)") from exc
    finally:
        probe.unlink()
    return root
