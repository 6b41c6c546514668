"""The memory inspector page in a real headless browser: Debian's chromium driven by Playwright (never a
downloaded browser), against the app over real HTTP, on real LoCoMo text."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from llm_server import must_not_skip
from shared_data import LOCOMO, require

from app.client import MemoryClient, PolicyRegistration, ReplayQuestion, ReplayRequest
from app.tokens import make_token_counter
from trainer.corpus.locomo import load_locomo

CHROMIUM = os.environ.get("MEMALPHA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} missing: apt-get install chromium (scripts/test.sh does)"
        if must_not_skip():
            pytest.fail(message)
        pytest.skip(f"SKIPPING THE BROWSER TEST: {message}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def _locomo_chunks(count: int) -> list[str]:
    conversation = load_locomo(require(LOCOMO))[0]
    return conversation.chunks(256, make_token_counter(None))[:count]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_inspector_shows_memory_logs_replays_and_retries_for_admins(
    live_api: Any, browser: Any, scripted_llm: Any, tmp_path: Path
) -> None:
    admin_key, reader_key = live_api.key("acme", admin=True), live_api.key("acme")
    chunks = _locomo_chunks(3)
    with MemoryClient(live_api.url, admin_key) as memory:
        assert memory.ingest("caroline", chunks).complete
        manual = memory.insert_item("caroline", "semantic", "Caroline is researching adoption agencies.")
        # a session whose last chunk failed: imported with its chunk log, the failed chunk keeps its error
        exported = memory.export_session("caroline", include_chunks=True).model_dump(mode="json")
        exported["chunks"][-1] |= {"status": "failed", "error": "policy backend timed out", "attempts": 3}
        memory.import_session("melanie", exported)
        assert memory.get_session("melanie").chunks.get("failed") == 1

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{live_api.url}/inspector")
    page.get_by_role("alert").wait_for()  # no key yet: the API's 401 is shown
    assert "401" in page.get_by_role("alert").inner_text()
    page.fill("#key", admin_key)
    page.click("#key-form button")
    sessions = page.get_by_test_id("sessions")
    sessions.wait_for()
    assert page.get_by_test_id("who").inner_text() == "tenant acme (admin)"
    assert {"caroline", "melanie"} <= set(sessions.locator("tbody tr td:first-child").all_inner_texts())

    page.click("text=caroline")
    page.get_by_test_id("session-title").wait_for()
    semantic = page.get_by_test_id("semantic").inner_text()
    assert manual.memory_id in semantic and "adoption agencies" in semantic
    assert page.get_by_test_id("episodic").locator("tbody tr").count() >= 1
    operations = page.get_by_test_id("operations").inner_text()
    assert "policy" in operations and "user" in operations and "extractive" in operations
    assert page.get_by_test_id("chunks").locator(".status-done").count() == 3

    page.fill("input[name=q]", "support group")
    page.click("form.search button")
    hits = page.get_by_test_id("search-hits")
    hits.wait_for()
    assert "support group" in hits.inner_text().lower()
    shot = tmp_path / "inspector.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MEMALPHA_UPDATE_SCREENSHOTS"):  # refresh the README's picture on purpose only
        shutil.copyfile(shot, DOCS / "inspector.png")

    # a replay under another policy (the scripted LLM stores each chunk verbatim): the page shows its diff
    with MemoryClient(live_api.url, admin_key) as memory:
        manifest = {"backend": "openai", "base_url": scripted_llm.url, "model": scripted_llm.model}
        memory.register_policy(PolicyRegistration(name="echo-llm", base_model="echo", manifest=manifest))
        question = ReplayQuestion(question="When did Caroline go to the LGBTQ support group?")
        replayed = memory.replay(
            "caroline", ReplayRequest(policy="echo-llm", questions=[question]), timeout=120
        )
        assert replayed.status == "done" and replayed.report is not None
    page.reload()
    diff = page.get_by_test_id(f"replay-{replayed.id}")
    diff.wait_for()
    rows = diff.get_by_test_id("replay-diff")
    assert rows.locator("tr.only-replay").count() == len(replayed.report.diff.only_replay) == 3
    assert rows.locator("tr.only-live").count() == len(replayed.report.diff.only_live) > 0
    assert chunks[0][:60] in rows.locator("tr.only-replay").first.inner_text()
    assert "support group" in diff.get_by_test_id("replay-answers").inner_text()
    page.locator("#replays").scroll_into_view_if_needed()
    replay_shot = tmp_path / "inspector-replay.png"
    diff.screenshot(path=str(replay_shot))
    if os.environ.get("MEMALPHA_UPDATE_SCREENSHOTS"):
        shutil.copyfile(replay_shot, DOCS / "inspector-replay.png")

    # the failed chunk: its error, and a retry button for an admin that unblocks the session
    page.goto(f"{live_api.url}/inspector#/sessions/melanie")
    failed = page.get_by_test_id("chunks").locator("tr.status-row-failed")
    failed.wait_for()
    assert "policy backend timed out" in failed.inner_text()
    page.get_by_test_id("retry-3").click()
    page.wait_for_function("() => !document.querySelector('tr.status-row-failed')")
    with MemoryClient(live_api.url, admin_key) as memory:
        assert memory.settle("melanie", timeout=60).chunks.get("done") == 3

    # a non-admin key of the tenant sees the same memory and no retry button; another tenant sees nothing
    with MemoryClient(live_api.url, admin_key) as memory:
        exported["chunks"][-1] |= {"status": "failed"}
        memory.import_session("failed-again", exported)
    reader = browser.new_page()
    reader.goto(f"{live_api.url}/inspector")
    reader.fill("#key", reader_key)
    reader.click("#key-form button")
    reader.get_by_test_id("sessions").wait_for()
    assert reader.get_by_test_id("who").inner_text() == "tenant acme"
    reader.goto(f"{live_api.url}/inspector#/sessions/failed-again")
    reader.get_by_test_id("chunks").locator("tr.status-row-failed").wait_for()
    assert reader.locator("[data-testid^=retry-]").count() == 0

    stranger = browser.new_page()
    stranger.goto(f"{live_api.url}/inspector")
    stranger.fill("#key", live_api.key("umbrella"))
    stranger.click("#key-form button")
    stranger.get_by_text("No sessions yet.").wait_for()
    stranger.goto(f"{live_api.url}/inspector#/sessions/caroline")
    stranger.get_by_role("alert").wait_for()
    assert "404" in stranger.get_by_role("alert").inner_text()
    assert "Caroline" not in stranger.locator("main").inner_text()
