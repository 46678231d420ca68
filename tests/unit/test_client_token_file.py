"""`diminuendo client --token-file`: the file is read again every time a token is needed, so a
refresher can replace it under a long-running command (PROTOCOL.md §3)."""

from __future__ import annotations

from pathlib import Path

from diminuendo.client.cli import make_parser, token_source


def test_token_file_is_read_on_every_call_and_wins_over_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    source = token_source(
        make_parser().parse_args(["--token", "t", "--token-file", str(path), "list"])
    )
    assert callable(source) and source() == "first"
    path.write_text("second")
    assert source() == "second"


def test_without_a_file_the_token_string_is_used() -> None:
    assert token_source(make_parser().parse_args(["--token", "t", "list"])) == "t"
