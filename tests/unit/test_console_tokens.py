"""The dev console's token source (PROTOCOL.md §3): it authenticates when the gateway requires
a token and answers `auth_expiring` with a fresh one, on the same socket.

`console.js` runs in Node (no browser needed) inside a `vm` context with a minimal DOM and a
fake WebSocket that records what the page sends; `handle()` is fed the gateway's frames.
Skips where `node` is not installed.

Before the fix: the console never sent `authenticate` (a token-requiring gateway only got an
error line), ignored `auth_expiring`, and a second `authenticated` re-listed and re-joined.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CONSOLE_JS = (
    Path(__file__).resolve().parents[2] / "diminuendo" / "gateway" / "console" / "console.js"
)
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

HARNESS = r"""
const vm = require("vm");
const fs = require("fs");
const [script, scenario] = process.argv.slice(2);

function element() {
  const node = {
    children: [], dataset: {}, attributes: {}, textContent: "", value: "",
    scrollTop: 0, clientHeight: 0, scrollHeight: 0,
    append(...items) { node.children.push(...items); },
    addEventListener() {}, remove() {}, querySelectorAll() { return []; },
    setAttribute(name, value) { node.attributes[name] = value; }, before() {}, after() {},
  };
  Object.defineProperty(node, "firstChild", { get: () => node.children[0] });
  return node;
}
const elements = {};
class FakeWebSocket {
  constructor() { this.readyState = 1; this.sent = []; }
  send(data) { this.sent.push(JSON.parse(data)); }
  close() {}
}
FakeWebSocket.OPEN = 1;
const storage = {};
const context = vm.createContext({
  console, Date, JSON, Math, Map, Promise, Object, String,
  WebSocket: FakeWebSocket,
  location: { protocol: "http:", host: "127.0.0.1" },
  document: {
    querySelector: (selector) => (elements[selector] ??= element()),
    createElement: () => element(),
    addEventListener() {},
  },
  sessionStorage: { getItem: (key) => storage[key] ?? null },
  setInterval() {}, setTimeout() {}, clearTimeout() {},
});
const exposed = "\nglobalThis.__page = { state, handle };";
vm.runInContext(fs.readFileSync(script, "utf8") + exposed, context);
const { state, handle } = context.__page;
state.ws = new FakeWebSocket();

const identity = { userId: "auth0|alice", role: "developer", tenantId: "acme" };
const steps = {
  "function-source": async () => {
    let calls = 0;
    context.diminuendoToken = async () => `fresh-${++calls}`;
    handle({ type: "welcome", protocolVersion: 1, requiresAuth: true });
    await new Promise((resolve) => setImmediate(resolve));
    handle({ type: "authenticated", identity });
    state.session = { id: "ses_1", epoch: "e", lastSeq: 3 };
    handle({ type: "auth_expiring", expiresAt: Date.now() + 60000 });
    await new Promise((resolve) => setImmediate(resolve));
    handle({ type: "authenticated", identity });
  },
  "storage-source": async () => {
    storage["diminuendo.token"] = "stored";
    handle({ type: "auth_expiring", expiresAt: Date.now() + 60000 });
    await new Promise((resolve) => setImmediate(resolve));
  },
  "no-source": async () => {
    handle({ type: "auth_expiring", expiresAt: Date.now() + 60000 });
    await new Promise((resolve) => setImmediate(resolve));
  },
};
steps[scenario]().then(() => {
  const items = elements['[data-testid="errors"]']?.children ?? [];
  const errors = items.map((li) => li.attributes["data-code"]);
  process.stdout.write(JSON.stringify({ sent: state.ws.sent, errors }));
});
"""


def run(scenario: str, tmp_path: Path) -> dict[str, Any]:
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    done = subprocess.run(
        [str(NODE), str(harness), str(CONSOLE_JS), scenario],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_token_function_is_asked_at_welcome_and_on_auth_expiring(tmp_path: Path) -> None:
    result = run("function-source", tmp_path)
    sent = [(m["type"], m.get("token")) for m in result["sent"]]
    # welcome → authenticate; the first `authenticated` lists sessions; auth_expiring → a fresh
    # token; the refresh's `authenticated` neither lists nor re-joins (the socket stays).
    assert sent == [
        ("authenticate", "fresh-1"),
        ("list_sessions", None),
        ("authenticate", "fresh-2"),
    ], sent
    assert result["errors"] == []


def test_session_storage_is_the_fallback_source(tmp_path: Path) -> None:
    result = run("storage-source", tmp_path)
    assert [(m["type"], m["token"]) for m in result["sent"]] == [("authenticate", "stored")]


def test_without_a_source_the_console_says_so_and_sends_nothing(tmp_path: Path) -> None:
    result = run("no-source", tmp_path)
    assert result["sent"] == [] and result["errors"] == ["AUTH"]
