"""The smoke test's SHIV_ROOT is fresh, and one where executables cannot run is refused plainly."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyzbuild import shiv_root
from pyzbuild.shiv_root import NoExecError, fresh_shiv_root


def test_a_fresh_empty_directory_under_the_parent(tmp_path: Path) -> None:
    first, second = fresh_shiv_root(tmp_path), fresh_shiv_root(tmp_path)
    assert first != second
    for root in (first, second):
        assert root.parent == tmp_path and root.is_dir() and not any(root.iterdir())


def test_a_directory_where_the_probe_cannot_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `execve` answers on a noexec mount, stood in for by an interpreter that is not there.
    monkeypatch.setattr(shiv_root, "PROBE", "#!/nonexistent/sh\nexit 0\n")
    with pytest.raises(NoExecError, match="does not allow executables"):
        fresh_shiv_root(tmp_path)
