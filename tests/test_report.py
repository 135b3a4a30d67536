"""The HTML report: one self-contained file, one inline SVG per plot, checked in Chromium.

The browser test is skipped when /usr/bin/chromium is missing (``apt-get install chromium``);
set SHOPREC_SCREENSHOTS to a folder to keep its screenshot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from shoprec.evaluate.fairness import exposure_summary
from shoprec.evaluate.metrics import csr_from_pairs
from shoprec.evaluate.protocols import evaluate_slices, full_ranking
from shoprec.evaluate.report import (
    Report,
    coverage_curve,
    popularity_percentile_curve,
    reliability,
    render_html,
    write_report,
)

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL = '<script>alert("x")</script> & <b>'
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//"""
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _full_report() -> Report:
    """A report with every part: five plots (slices, curves, calibration, coverage, exposure)."""
    rng = np.random.default_rng(0)
    u, i = 120, 80
    scores = rng.random((u, i))
    relevant = csr_from_pairs(np.arange(u).repeat(2), rng.integers(0, i, 2 * u), u)

    def fn(users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return scores[users]

    ours = full_ranking(fn, u, i, relevant, ks=(10,)).with_ci(n_boot=100)
    peer = full_ranking(lambda us, it: -scores[us], u, i, relevant, ks=(10,))
    warm = np.arange(u) < 80
    slices = evaluate_slices(ours, {"warm users": warm, f"cold {EVIL}": ~warm}, n_boot=100)
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "valid/buy/auc": 0.7 + 0.01 * e - 0.001 * e * e,
            "valid/buy/ndcg@10": 0.1 + 0.01 * e,
        }
        for e in range(1, 9)
    ]
    p = rng.random(1000)
    popularity = rng.pareto(1.5, i)
    recs = {
        "ours": np.argsort(-scores, axis=1)[:, :10],
        "popularity": np.tile(np.argsort(-popularity)[:10], (u, 1)),
    }
    groups = rng.integers(0, 5, i)
    names = [f"cat {EVIL} {j}" for j in range(5)]
    exposure = {
        name: exposure_summary(lists, popularity, (10,), groups, names, "category")
        for name, lists in recs.items()
    }
    return Report.from_results(
        f"Report {EVIL}",
        {"ours (mmoe)": ours, f"peer {EVIL}": peer},
        ours=["ours (mmoe)"],
        slices=slices,
        subtitle=f"dataset synthetic, commit {EVIL}",
        history=history,
        calibration={"buy": (rng.random(1000) < p, p), "click": (rng.random(1000) < p**2, p)},
        recommendations=recs,
        popularity=popularity,
        exposure=exposure,
        trials=[{"lr": 0.001, "dim": 32, "ndcg@10": 0.1}, {"lr": 0.01, "dim": 64, "ndcg@10": 0.2}],
        trials_metric="ndcg@10",
        notes=[f"note {EVIL}", "second paragraph"],
    )


@pytest.fixture(scope="module")
def full_report_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    report = _full_report()
    path = write_report(tmp_path_factory.mktemp("report") / "sub" / "report.html", report)
    return report, path


def test_report_file_is_self_contained_with_one_svg_per_plot(
    full_report_file: tuple[Report, Path],
) -> None:
    report, path = full_report_file
    assert path.exists() and path.suffix == ".html"
    text = path.read_text(encoding="utf-8")
    assert report.n_plots == 5
    assert len(re.findall(r"<svg\b", text)) == 5
    assert text.count("<figure>") == 5
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "@import" not in text and "@font-face" not in text
    # Escaped in the title, subtitle, table rows, slice labels (SVG text) and notes.
    assert "<title>Report &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in text
    assert text.count("&lt;script&gt;") >= 5
    # Text stays text in the SVGs (svg.fonttype none): axis titles are searchable.
    for label in (
        "epoch",
        "observed rate",
        "catalog coverage@k",
        "ndcg@10 by slice",
        "exposure by popularity decile",
        "training events",
    ):
        assert f">{label}<" in text
    # The metrics table highlights our row; the best trial row is marked.
    assert '<tr class="ours">' in text and '<tr class="best">' in text
    assert "[" in text and 'class="ci"' in text  # intervals shown


def test_parts_render_only_when_given(tmp_path: Path) -> None:
    only_table = Report("t", metrics={"a": {"hr@10": 0.5, "users": 3}, "b": {"hr@10": 0.25}})
    text = write_report(tmp_path / "a.html", only_table).read_text()
    assert "<svg" not in text and only_table.n_plots == 0
    assert '<td class="bestval">0.5000</td>' in text  # the best of the column in bold
    assert "Learning curves" not in text and "Calibration" not in text
    curves = Report("t", history=[{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1}])
    assert len(re.findall(r"<svg\b", render_html(curves))) == 1 == curves.n_plots
    with pytest.raises(ValueError, match="popularity"):
        render_html(Report("t", recommendations={"a": np.zeros((2, 3), dtype=int)}))


def test_plot_numbers() -> None:
    mean_p, observed, count = reliability(np.array([0, 1, 1, 0]), np.array([0.1, 0.2, 0.8, 1.0]))
    assert count.tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    assert observed[[1, 2, 8, 9]].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert mean_p[9] == 1.0 and np.isnan(mean_p[0])
    lists = [np.array([0, 1, 2]), np.array([0]), np.array([3, 0])]  # ragged lists
    assert coverage_curve(lists, 5).tolist() == [0.4, 0.6, 0.8]
    pop = np.array([10.0, 5.0, 1.0, 1.0, 0.0])  # percentiles 90, 70, 40, 40, 10
    curve = popularity_percentile_curve(lists, pop)
    assert curve.tolist() == pytest.approx([(90 + 90 + 40) / 3, (220 + 70 + 90) / 5, 420 / 6])


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"
)
def test_report_renders_in_chromium(full_report_file: tuple[Report, Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    report, path = full_report_file
    outside: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "request",
                lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url),
            )
            page.goto(path.as_uri())
            svgs = page.locator("main figure > svg")
            assert svgs.count() == report.n_plots == 5
            for k in range(svgs.count()):
                box = svgs.nth(k).bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 100
                assert box["width"] <= 1280  # scaled to the page, no sideways scrolling
            assert page.evaluate("document.querySelectorAll('script').length") == 0
            assert page.title().startswith('Report <script>alert("x")</script>')
            assert page.locator("tr.ours").count() == 1
            folder = Path(os.environ.get("SHOPREC_SCREENSHOTS", tmp_path))
            folder.mkdir(parents=True, exist_ok=True)
            shot = folder / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert errors == [] and outside == []
