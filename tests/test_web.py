"""The web page, end to end in headless Debian Chromium driven by Playwright.

Skipped only when /usr/bin/chromium is missing (``apt-get install chromium``); no browser is
downloaded. Set SHOPREC_SCREENSHOTS to a folder to keep the screenshots.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving_helpers import API_KEY, serving, tiny_artifact
from shoprec.serve import ServeConfig, create_app

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"
    ),
    pytest.mark.usefixtures("one_thread"),  # conftest: one torch thread
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    artifact = tiny_artifact(tmp_path_factory.getbasetemp())
    db = tmp_path_factory.mktemp("web") / "events.sqlite"
    # the page lists shoppers and their histories before a key is typed: reads opened
    config = ServeConfig(artifact, db=db, api_key=API_KEY, private_reads=False)
    with serving(create_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def _screenshot(page: object, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SHOPREC_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def test_shopper_sends_events_and_the_list_changes(
    browser: object, base_url: str, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base_url}/")  # redirects to /ui/
    cards = page.locator("#recs .card")
    cards.first.wait_for()
    assert cards.count() == 9
    assert page.locator("#history li").count() > 0  # a known shopper's training history
    first = cards.first
    assert first.locator("svg.chart rect").count() == 6  # track + bar for view, cart, buy
    assert first.locator(".why").inner_text().startswith("Recommended")
    assert "mmoe" in page.locator("#model-info").inner_text()

    # without the key, an event is refused with a readable message
    first.locator("button[data-behavior=cart]").click()
    page.wait_for_function("document.querySelector('#message').textContent.includes('API key')")

    page.fill("#api-key", API_KEY)
    top = first.get_attribute("data-item")
    loaded = page.evaluate("document.body.dataset.loaded")
    first.locator("button[data-behavior=buy]").click()
    page.wait_for_function(f"document.body.dataset.loaded !== '{loaded}'")
    assert top not in [c.get_attribute("data-item") for c in cards.all()]
    live = page.locator("#history li[data-source=session]")
    assert live.first.get_attribute("data-item") == top
    assert "Sent buy" in page.locator("#message").inner_text()
    assert page.locator("#recs .card.fresh").count() >= 1  # the item that moved in is marked
    _screenshot(page, "shopper.png", tmp_path)

    # a new shopper gets a cold-start list and an empty history
    page.click("#new-shopper")
    page.wait_for_function("document.querySelector('#user-status').textContent.includes('New')")
    assert page.locator("#recs .card").count() == 9
    assert "Nothing yet" in page.locator("#history").inner_text()
    assert errors == []
    page.close()


def test_merchant_view_shows_new_items_and_their_reach(
    browser: object, base_url: str, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base_url}/ui/")
    page.locator("#recs .card").first.wait_for()
    page.click("#tab-merchant")
    rows = page.locator("#new-items tbody tr[data-item]")
    rows.first.wait_for()
    assert rows.count() > 0
    reach = [int(r.locator(".reach-count").inner_text()) for r in rows.all()]
    assert reach == sorted(reach, reverse=True)
    assert rows.first.locator("button.user-chip").count() == 3
    _screenshot(page, "merchant.png", tmp_path)

    # clicking a shopper of the audience opens their page
    chip = rows.first.locator("button.user-chip").first
    user = chip.inner_text()
    chip.click()
    page.wait_for_function(f"document.querySelector('#rec-title').textContent.endsWith('{user}')")
    assert page.locator("#view-shopper").is_visible()
    assert errors == []
    page.close()
