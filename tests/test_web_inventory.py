"""The merchant view's stock and demand panel in headless Chromium (Playwright): the forecast
chart (inline SVG: history, P50-P90 band), the reorder list and the products at risk, served
from the tiny shop's artifact with the forecast ``shoprec forecast`` wrote for it; and the
message a shop without a forecast sees. Skipped only when /usr/bin/chromium is missing."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving_helpers import API_KEY, serving, tiny_artifact
from shoprec.recommend import RecommenderConfig
from shoprec.serve import ServeConfig, create_app
from test_serve_inventory import tiny_forecast
from test_web import CHROMIUM, LAUNCH_ARGS, _screenshot

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"
    ),
    pytest.mark.usefixtures("one_thread"),  # conftest: one torch thread
]


def _serve(root: Path, db: Path, forecast: Path | None) -> ServeConfig:
    rec = RecommenderConfig(forecast=str(forecast) if forecast else None)
    return ServeConfig(
        tiny_artifact(root), db=db, api_key=API_KEY, private_reads=False, recommender=rec
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _watch(page: object) -> list[str]:
    """Page errors and console errors (a failed request logs one too)."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))  # type: ignore[attr-defined]
    page.on(  # type: ignore[attr-defined]
        "console", lambda m: errors.append(m.text) if m.type == "error" else None
    )
    page.on(  # type: ignore[attr-defined]
        "response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    return errors


def test_merchant_sees_forecast_chart_reorder_list_and_risks(
    browser: object, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    root = tmp_path_factory.getbasetemp()
    config = _serve(root, tmp_path / "events.sqlite", tiny_forecast(root))
    with serving(create_app(config)) as url:
        reorder = _get(f"{url}/inventory/reorder?limit=50")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
        errors = _watch(page)
        page.goto(f"{url}/ui/")
        page.locator("#recs .card").first.wait_for()
        page.click("#tab-merchant")
        page.wait_for_function("document.body.dataset.inventory !== undefined")

        rows = page.locator("#reorder tbody tr[data-item]")
        assert rows.count() == len(reorder["reorder"]) > 0
        assert [r.get_attribute("data-item") for r in rows.all()] == [
            x["item"] for x in reorder["reorder"]
        ]
        qty = [float(r.locator("td.order").inner_text()) for r in rows.all()]
        assert qty == [x["reorder_qty"] for x in reorder["reorder"]] and min(qty) > 0
        risky = page.locator("#at-risk tbody tr[data-item]")
        assert risky.count() == len(reorder["at_risk"]) > 0
        assert "risk" in (risky.first.get_attribute("class") or "")
        assert f"{reorder['to_order']} to reorder" in page.locator("#inventory-status").inner_text()

        # the chart of the first product at risk: the history line has one point per week
        chart = page.locator("#forecast-chart svg.forecast-chart")
        item = page.locator("#forecast-chart").get_attribute("data-item")
        assert item == reorder["at_risk"][0]["item"]
        f = _get(f"{url}/forecast/{item}")
        d = chart.locator("path.history").get_attribute("d") or ""
        assert d.startswith("M") and d.count("L") == len(f["history"]) - 1 >= 4
        band = chart.locator("path.band").get_attribute("d") or ""
        assert band.endswith("Z") and band.count(",") >= 2 * len(f["forecast"]) + 1
        assert chart.locator("circle.fc-point").count() == len(f["forecast"]) == 4
        advice = page.locator("#forecast-advice").inner_text()
        assert "chance of selling out" in advice and "lead time" in advice
        _screenshot(page, "merchant_inventory.png", tmp_path)

        # clicking a row of the reorder list draws that product's forecast
        other = next(r for r in rows.all() if r.get_attribute("data-item") != item)
        target = other.get_attribute("data-item")
        other.click()
        page.wait_for_function(
            f"document.querySelector('#forecast-chart').dataset.item === {json.dumps(target)}"
        )
        assert "selected" in (other.get_attribute("class") or "")
        assert page.locator("#forecast-chart path.history").count() == 1
        assert errors == []
        page.close()


def test_without_a_forecast_the_merchant_view_says_how_to_make_one(
    browser: object, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    config = _serve(tmp_path_factory.getbasetemp(), tmp_path / "events.sqlite", None)
    with serving(create_app(config)) as url:
        page = browser.new_page()  # type: ignore[attr-defined]
        errors = _watch(page)
        page.goto(f"{url}/ui/")
        page.locator("#recs .card").first.wait_for()
        page.click("#tab-merchant")
        page.wait_for_function(
            "document.querySelector('#inventory-status').textContent.includes('shoprec forecast')"
        )
        assert not page.locator("#inventory-body").is_visible()
        page.locator("#new-items tbody tr[data-item]").first.wait_for()  # the rest still works
        assert errors == []  # no request to the inventory endpoints, so no 409 in the console
        page.close()
