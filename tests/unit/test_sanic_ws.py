"""The adapter below Sanic's public API (diminuendo.sanic_ws): the Sanic and websockets releases
it supports are setup.cfg's pins, the installed ones are among them, and every private attribute
it reads is on the real classes — an upgrade that moves one fails here and at start-up, naming
the attribute."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import sanic
import websockets
from packaging.requirements import Requirement
from sanic.server.protocols.base_protocol import SanicProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol

from diminuendo import sanic_ws

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def pinned() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    lines = config["options"]["install_requires"].splitlines()
    requirements = [
        Requirement(line) for line in lines if line.strip() and not line.startswith("#")
    ]
    return {r.name: str(r.specifier) for r in requirements if r.name in ("sanic", "websockets")}


def test_the_supported_versions_are_setup_cfgs_pins() -> None:
    """Widening a pin in setup.cfg must come with a look at `_INTERNALS` (and this table)."""
    normalized = {name: ",".join(sorted(spec.split(","))) for name, spec in pinned().items()}
    expected = {n: ",".join(sorted(s.split(","))) for n, s in sanic_ws.SUPPORTED_VERSIONS.items()}
    assert normalized == expected


@pytest.mark.parametrize(("package", "version"), [("sanic", sanic), ("websockets", websockets)])
def test_the_installed_release_is_a_supported_one(package: str, version: Any) -> None:
    specifier = Requirement(f"{package}{sanic_ws.SUPPORTED_VERSIONS[package]}").specifier
    assert specifier.contains(version.__version__), (package, version.__version__)


def test_every_internal_the_adapter_reads_is_on_the_real_classes() -> None:
    sanic_ws.check_internals()


def test_a_moved_class_attribute_fails_loudly_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(SanicProtocol, "_can_write")  # a release renamed Sanic's write event
    with pytest.raises(RuntimeError, match=r"SanicProtocol\._can_write") as raised:
        sanic_ws.check_internals()
    assert f"sanic {sanic.__version__}" in str(raised.value)


def test_a_moved_instance_attribute_fails_loudly_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """`conn_mutex` is set in `__init__`: the check looks at a real instance, not the class."""
    original = WebsocketImplProtocol.__init__

    def without_mutex(self: WebsocketImplProtocol, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self.conn_mutex

    monkeypatch.setattr(WebsocketImplProtocol, "__init__", without_mutex)
    with pytest.raises(RuntimeError, match=r"WebsocketImplProtocol\.conn_mutex"):
        sanic_ws.check_internals()
