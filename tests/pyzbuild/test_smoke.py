"""The smoke test's own parts: what it gives the pyz's processes and how it judges a turn. It
runs for real in build.sh (tests/integration/test_packaging.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyzbuild.smoke
from pyzbuild.smoke import TURN_TEXT, child_env, gateway_env, streamed_text


def test_shiv_runs_smoke_py_as_a_file_so_it_imports_nothing_from_beside_it() -> None:
    """shiv's SHIV_INTERPRETER execs the file: `pyzbuild` is not importable there, and every
    import must come from the pyz (the standard library, websockets, diminuendo)."""
    tree = ast.parse(Path(pyzbuild.smoke.__file__).read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or "."]
        )
    }
    assert "pyzbuild" not in imported and "." not in imported
    assert {"websockets", "diminuendo"} <= imported


def test_children_run_the_console_entry_with_the_same_extraction_directory() -> None:
    environ = {
        "PATH": "/usr/bin",
        "SHIV_ROOT": "/b/shiv-root.x",
        "SHIV_INTERPRETER": "1",
        "SHIV_FORCE_EXTRACT": "1",
    }
    assert child_env(environ) == {"PATH": "/usr/bin", "SHIV_ROOT": "/b/shiv-root.x"}


def test_the_gateway_binds_loopback_and_uses_every_stand_in(tmp_path: Path) -> None:
    env = gateway_env(24000, {"podium": 24001, "unison": 24003}, tmp_path, WORKERS="2")
    assert env["HOST"] == "127.0.0.1" and env["PORT"] == "24000"
    assert env["DEV_MODE"] == "true" and env["DATA_DIR"] == str(tmp_path)
    assert env["PODIUM_URL"] == "http://127.0.0.1:24001"
    assert env["UNISON_URL"] == "http://127.0.0.1:24003"
    assert env["PODIUM_API_KEY"] == env["UNISON_API_KEY"] == "local-dev-key"
    assert env["WORKERS"] == "2"


def turn_frames(deltas: list[str], final: str) -> list[dict]:
    return [
        {"type": "turn_started"},
        *({"type": "text_delta", "text": d} for d in deltas),
        {"type": "turn_complete", "finalText": final},
    ]


def test_a_turn_whose_deltas_and_final_text_match_counts_its_deltas() -> None:
    deltas = [TURN_TEXT[:10], TURN_TEXT[10:30], TURN_TEXT[30:]]
    assert streamed_text(turn_frames(deltas, TURN_TEXT), TURN_TEXT) == 3


@pytest.mark.parametrize(
    ("deltas", "final"),
    [
        ([TURN_TEXT[:10], TURN_TEXT[11:]], TURN_TEXT),  # a delta lost
        ([TURN_TEXT], TURN_TEXT[:-1]),  # finalText cut short
        ([], TURN_TEXT),  # nothing streamed
    ],
)
def test_a_turn_that_lost_or_changed_text_fails(deltas: list[str], final: str) -> None:
    with pytest.raises(AssertionError):
        streamed_text(turn_frames(deltas, final), TURN_TEXT)
