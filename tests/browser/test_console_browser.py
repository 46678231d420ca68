"""The dev console in a real browser: Debian's Chromium driven by Playwright against a real dev
gateway. One `demo` turn end to end (create, join, run, answer the question, completion), then a
dropped socket that must resume with `afterSeq`/`epoch` and carry on without a seq reset.

Skips only where `/usr/bin/chromium` or the `playwright` package is absent. Playwright's own
browser downloads are never used (`executable_path` points at the system Chromium). The page runs
under the gateway's real Content-Security-Policy, so waits use locators (no string `eval`), and a
CSP violation would surface as a console error, which fails the test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_TIMEOUT_MS = 15_000
PLACEHOLDER = "\u2013"  # what the page shows before a value arrives
DEMO_ANSWER = "Done: I looked around, updated demo/notes.md (iteration 1) and you answered keep."

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)
async_api = pytest.importorskip(
    "playwright.async_api", reason="playwright not installed (pip install playwright)"
)
expect = async_api.expect
expect.set_options(timeout=STEP_TIMEOUT_MS)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.one_python,
    pytest.mark.timeout(60),
]


def tid(testid: str, extra: str = "") -> str:
    return f'[data-testid="{testid}"]{extra}'


async def event_seqs(page: Any) -> list[int]:
    values = await page.locator(tid("event-log-entry")).evaluate_all(
        "nodes => nodes.map(n => n.dataset.seq).filter(s => s !== '')"
    )
    return [int(v) for v in values]


async def answer_open_question(page: Any, option: str) -> None:
    question = page.locator(tid("question", '[data-status="open"]'))
    await expect(question).to_have_count(1)
    assert "Keep the notes file?" in await question.text_content()
    await question.locator(tid("question-option"), has_text=option).click()


async def test_demo_turn_in_the_console(gateway: Gateway) -> None:
    problems: list[str] = []
    sent: list[dict[str, Any]] = []

    def on_websocket(ws: Any) -> None:
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=20_000
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("websocket", on_websocket)

            # Connect: state, client id, identity.
            assert (await page.goto(f"{gateway.url}/")).status == 200
            await expect(page.locator(tid("conn-state"))).to_have_attribute("data-state", "open")
            await expect(page.locator(tid("identity"))).to_contain_text("dev-user-001")
            await expect(page.locator(tid("client-id"))).not_to_have_text(PLACEHOLDER)

            # Create a demo session; the console joins it.
            name = f"browser-{uuid.uuid4().hex[:8]}"
            await page.select_option(tid("agent-type"), "demo")
            await page.fill(tid("session-name"), name)
            await page.click(tid("create-session"))
            item = page.locator(tid("session-item", "[data-current]"), has_text=name)
            await expect(item).to_have_count(1)
            session_id = await item.get_attribute("data-session-id")
            await expect(page.locator(tid("session-epoch"))).not_to_have_text(PLACEHOLDER)
            await expect(page.locator(tid("current-session"))).to_contain_text(session_id)

            # Run a turn; answer its question with an option button; wait for completion.
            await page.fill(tid("turn-input"), "hello from the browser")
            await page.click(tid("run-turn"))
            await answer_open_question(page, "keep")
            await expect(
                page.locator(tid("turn-status", '[data-status="end_turn"]'))
            ).to_have_count(1)

            # The rendered transcript.
            assert await page.text_content(tid("msg-user")) == "hello from the browser"
            turn = page.locator(tid("msg-assistant"))
            await expect(turn).to_have_count(1)
            assert "".join(await turn.locator(tid("assistant-text")).all_text_contents()) == (
                DEMO_ANSWER
            )
            thinking = await turn.locator(tid("thinking")).text_content()
            assert "Reading the request. Three small steps will do." in thinking
            tools = turn.locator(tid("tool-call"))
            names = await tools.locator(tid("tool-name")).all_text_contents()
            assert names == ["bash", "append_file"]
            bash = tools.nth(0)
            args = await bash.locator(tid("tool-args")).text_content()
            assert '"command": "ls -R /workspace"' in args
            assert await bash.get_attribute("data-status") == "done"
            await expect(bash.locator(tid("tool-result"))).to_have_count(1)
            terminal = await turn.locator(tid("terminal")).text_content()
            assert terminal.startswith("$ ls -R /workspace\n")
            await expect(turn.locator(tid("terminal-exit"))).to_have_text("exit code 0")
            steps = turn.locator(tid("plan-step"))
            await expect(steps).to_have_count(3)
            statuses = await steps.evaluate_all("nodes => nodes.map(n => n.dataset.status)")
            assert statuses == ["done", "done", "done"]
            await expect(turn.locator(tid("file-changed"))).to_contain_text("demo/notes.md")
            await expect(turn.locator(tid("turn-usage"))).to_contain_text("usage:")
            answered = turn.locator(tid("question"))
            await expect(answered).to_have_attribute("data-status", "resolved")
            await expect(answered.locator(tid("question-resolution"))).to_contain_text("q1 = keep")
            await expect(page.locator(tid("session-state"))).to_have_text("ready")

            seqs = await event_seqs(page)
            assert seqs[0] == 1, "a fresh session's stream starts at seq 1"
            assert len(seqs) > 30 and seqs == list(range(1, len(seqs) + 1)), seqs
            await expect(page.locator(tid("error-item"))).to_have_count(0)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

            # Drop the socket: the console reconnects and resumes after the last seq it saw.
            epoch = await page.text_content(tid("session-epoch"))
            last_seq = seqs[-1]
            await page.click(tid("reconnect"))
            snapshots = page.locator(tid("event-log-entry", '[data-type="state_snapshot"]'))
            await expect(snapshots).to_have_count(2)
            await expect(page.locator(tid("conn-state"))).to_have_attribute("data-state", "open")
            joins = [{k: v for k, v in m.items() if k != "id"} for m in sent]
            joins = [m for m in joins if m["type"] == "join_session"]
            assert joins == [
                {"type": "join_session", "sessionId": session_id},
                {
                    "type": "join_session",
                    "sessionId": session_id,
                    "afterSeq": last_seq,
                    "epoch": epoch,
                },
            ]

            # Another turn on the resumed subscription continues the same stream.
            await page.fill(tid("turn-input"), "again")
            await page.click(tid("run-turn"))
            await answer_open_question(page, "discard")
            await expect(
                page.locator(tid("turn-status", '[data-status="end_turn"]'))
            ).to_have_count(2)
            await expect(page.locator(tid("msg-assistant"))).to_have_count(2)
            await expect(page.locator(tid("msg-assistant")).nth(1)).to_contain_text("discard")
            seqs = await event_seqs(page)
            assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] > last_seq + 30, seqs
            await expect(page.locator(tid("session-epoch"))).to_have_text(epoch)
            await expect(page.locator(tid("error-item"))).to_have_count(0)
            await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
        finally:
            await browser.close()
    assert problems == [], problems


async def test_stop_history_and_escaping(gateway: Gateway) -> None:
    """Markup in a message stays text; Stop cancels a running turn; a fresh page that joins an
    existing session rebuilds its transcript from `get_history`."""
    problems: list[str] = []
    markup = '<img src=x onerror="document.title=1"> <b>bold</b>'
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=20_000
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            assert (await page.goto(f"{gateway.url}/")).status == 200
            await expect(page.locator(tid("identity"))).to_contain_text("dev-user-001")

            async def create(agent: str) -> str:
                name = f"{agent}-{uuid.uuid4().hex[:8]}"
                await page.select_option(tid("agent-type"), agent)
                await page.fill(tid("session-name"), name)
                await page.click(tid("create-session"))
                current = page.locator(tid("session-item", "[data-current]"), has_text=name)
                await expect(current).to_have_count(1)
                await expect(page.locator(tid("session-epoch"))).not_to_have_text(PLACEHOLDER)
                return name

            echo = await create("echo")
            await page.fill(tid("turn-input"), markup)
            await page.click(tid("run-turn"))
            await expect(page.locator(tid("turn-status"))).to_have_attribute(
                "data-status", "end_turn"
            )
            await expect(page.locator(tid("assistant-text"))).to_have_text(markup)
            await expect(page.locator(tid("msg-user"))).to_have_text(markup)
            await expect(
                page.locator(f"{tid('transcript')} img, {tid('transcript')} b")
            ).to_have_count(0)

            await create("slow")
            await page.fill(tid("turn-input"), '{"deltas": 2000, "interval_ms": 10}')
            await page.click(tid("run-turn"))
            await expect(page.locator(tid("assistant-text"))).to_contain_text("d3 ")
            await expect(page.locator(tid("stop-turn"))).to_be_enabled()
            await page.click(tid("stop-turn"))
            status = page.locator(tid("turn-status"))
            await expect(status).to_have_attribute("data-status", "cancelled")
            await expect(page.locator(tid("stop-turn"))).to_be_disabled()

            await page.reload()
            await expect(page.locator(tid("identity"))).to_contain_text("dev-user-001")
            item = page.locator(tid("session-item"), has_text=echo)
            await item.locator(tid("join-session")).click()
            await expect(page.locator(tid("msg-user"))).to_have_text(markup)
            history = page.locator(tid("msg-assistant", '[data-source="history"]'))
            await expect(history.locator(tid("assistant-text"))).to_have_text(markup)
            await expect(page.locator(tid("error-item"))).to_have_count(0)
            assert await page.title() == "Diminuendo dev console"
        finally:
            await browser.close()
    assert problems == [], problems


async def test_gateway_restart_rebuilds_from_history(start_gateway) -> None:
    """§7 recipe: after a restart the epoch differs, the snapshot says `gap`, and the console
    rebuilds the transcript from `get_history` and goes on live in the new epoch."""
    gw = start_gateway()
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=20_000
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            assert (await page.goto(f"{gw.url}/")).status == 200
            await expect(page.locator(tid("identity"))).to_contain_text("dev-user-001")
            await page.select_option(tid("agent-type"), "echo")
            await page.click(tid("create-session"))
            epoch = page.locator(tid("session-epoch"))
            await expect(epoch).not_to_have_text(PLACEHOLDER)
            first_epoch = await epoch.text_content()
            await page.fill(tid("turn-input"), "before the restart")
            await page.click(tid("run-turn"))
            await expect(page.locator(tid("turn-status"))).to_have_attribute(
                "data-status", "end_turn"
            )

            await asyncio.to_thread(gw.stop)
            await expect(page.locator(tid("conn-state"))).to_have_attribute("data-state", "closed")
            await asyncio.to_thread(gw.start)
            await expect(epoch).not_to_have_text(first_epoch)
            await expect(page.locator(tid("conn-state"))).to_have_attribute("data-state", "open")
            await expect(page.locator(tid("transcript"))).to_contain_text("rebuilt from history")
            await expect(page.locator(tid("msg-user"))).to_have_text("before the restart")
            history = page.locator(tid("msg-assistant", '[data-source="history"]'))
            await expect(history).to_have_text("before the restart")

            await page.fill(tid("turn-input"), "after the restart")
            await page.click(tid("run-turn"))
            live = page.locator(tid("turn-status", '[data-status="end_turn"]'))
            await expect(live).to_have_count(1)
            await expect(page.locator(tid("msg-user"))).to_have_text(
                ["before the restart", "after the restart"]
            )
            await expect(page.locator(tid("error-item"))).to_have_count(0)
        finally:
            await browser.close()
