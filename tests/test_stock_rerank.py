"""Stock-aware recommendations: the forecast and live stock move items, the fusion reads
``stock``, ``weeks_of_cover`` and ``p_stockout``, and explanations say when stock moved one.

The scorer is :class:`FakeScorer` (fixed qualities, ``tests/serving_helpers.py``) and the
forecast a synthetic table written in ``tmp_path``: every item sells P50 2 / P90 4 units a
week, so the risk of running out is a function of the stock alone (checked against
:func:`shoprec.inventory.stock.stockout_probability`).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from serving_helpers import fake_artifact
from shoprec.artifact import Artifact
from shoprec.inventory.stock import (
    InventoryError,
    StockSignals,
    load_forecast,
    stockout_probability,
)
from shoprec.recommend import Recommender, RecommenderConfig, Retrieval, SessionLog
from shoprec.recommend.fusion import EPS
from shoprec.recommend.rerank import stock_adjustment

HORIZON = 4


def write_forecast(folder: Path, items: list[str], stock: dict[str, float] | None = None) -> Path:
    """A forecast folder as ``shoprec forecast`` writes it: P50 2, P90 4, mean 2.2 a week."""
    folder.mkdir(parents=True, exist_ok=True)
    origin = dt.date(2024, 1, 1)
    n = len(items)
    fc = pl.DataFrame(
        {
            "item": np.repeat(items, HORIZON),
            "origin": [origin] * (n * HORIZON),
            "horizon": np.tile(np.arange(1, HORIZON + 1), n),
            "week": [origin + dt.timedelta(weeks=h) for h in list(range(HORIZON)) * n],
            "mean": 2.2,
            "p50": 2.0,
            "p90": 4.0,
            "p_no_sale": 0.05,
            "returns": 0.1,
            "trend": "flat",
        }
    )
    fc.write_parquet(folder / "forecast.parquet")
    if stock is not None:
        pl.DataFrame({"item": list(stock), "stock": list(stock.values())}).write_parquet(
            folder / "reorder.parquet"
        )
    return folder


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return Artifact.load(fake_artifact(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def forecast_dir(art: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_forecast(tmp_path_factory.mktemp("fc"), art.items["item"].to_list())


def make(art: Artifact, **config: object) -> Recommender:
    retrieval = Retrieval.load(art.directory, art.items, art.seen)
    return Recommender(art, retrieval, RecommenderConfig(**config), sessions=SessionLog())


def plenty(rec: Recommender) -> None:
    """Every item 1000 units: no risk of running out anywhere."""
    rec.set_stock(dict.fromkeys(rec.items, 1000))


USER = "u1"


def test_an_item_that_will_run_out_is_pushed_down(art: Artifact, forecast_dir: Path) -> None:
    rec = make(art, forecast=str(forecast_dir), diversity=0.0, new_item_slots=0)
    plenty(rec)
    before = rec.recommend(USER, k=10)
    assert all(abs(r.stock_adjustment) < 1e-3 for r in before)
    top = before[0].item
    rec.set_stock({top: 1})  # live, as PUT /admin/stock does
    after = rec.recommend(USER, k=10)
    moved = {r.item: r for r in after}
    # P(demand over 2 weeks > 1) under P50 4 / P90 8 with P(no sale) 0.05^2
    p = stockout_probability(np.array([1.0]), np.array([4.0]), np.array([8.0]), np.array([0.0025]))
    assert p[0] > 0.9
    if top in moved:
        assert moved[top].rank > 1
        assert moved[top].stock_adjustment == pytest.approx(math.log1p(-min(p[0], 0.99)))
    assert after[0].item != top
    # the others kept their order
    rest = [r.item for r in before if r.item != top]
    assert [r.item for r in after if r.item != top][:8] == rest[:8]
    exp = rec.explain(USER, top)
    assert "Moved down for stock" in exp.sentence
    assert exp.inventory is not None and exp.inventory["stock"] == 1.0
    assert exp.inventory["p_stockout"] == pytest.approx(p[0])
    # the stock term is one of the contributions, and they still sum exactly
    assert any(t.name == "inventory" for t in exp.tasks)
    total = sum(t.contribution for t in exp.tasks)
    assert total == pytest.approx(exp.log_score - exp.reference_log_score, abs=1e-9)


def test_penalty_zero_or_no_forecast_changes_nothing(art: Artifact, forecast_dir: Path) -> None:
    off = make(art, forecast=str(forecast_dir), stockout_penalty=0.0, new_item_slots=0)
    plain = make(art, new_item_slots=0)
    assert plain.forecast is None  # the fake artifact has no forecast folder
    for r in (off, plain):
        r.set_stock(dict.fromkeys(r.items[:50], 1))
    a = [(r.item, r.score) for r in off.recommend(USER, k=10)]
    b = [(r.item, r.score) for r in plain.recommend(USER, k=10)]
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b])
    assert "stock" not in plain.explain(USER, a[0][0]).sentence


def test_overstock_is_pushed_up_gently(art: Artifact, forecast_dir: Path) -> None:
    rec = make(
        art, forecast=str(forecast_dir), overstock_boost=0.5, overstock_weeks=10.0,
        diversity=0.0, new_item_slots=0,
    )  # fmt: skip
    plenty(rec)  # 1000 units / 2.2 a week: far above 20 weeks of cover, everyone boosted
    rec.set_stock(dict.fromkeys(rec.items, 22))  # 10 weeks of cover: no boost
    base = rec.recommend(USER, k=10)
    assert all(abs(r.stock_adjustment) < 0.2 for r in base)
    tenth = base[-1].item
    rec.set_stock({tenth: 44})  # 20 weeks of cover: the whole boost
    after = {r.item: r for r in rec.recommend(USER, k=10)}
    assert after[tenth].stock_adjustment == pytest.approx(0.5, abs=1e-3)
    assert after[tenth].rank < 10
    assert "Moved up for stock" in rec.explain(USER, tenth).sentence


def test_fusion_reads_stock_variables(art: Artifact, forecast_dir: Path) -> None:
    rec = make(art, forecast=str(forecast_dir), stockout_penalty=0.0, new_item_slots=0)
    plenty(rec)
    items = rec.items
    rec.set_stock({items[0]: 1, items[1]: 0})
    f = rec.resolve_fusion("buy * (1-p_stockout)^2 * weeks_of_cover^0.1 * stock^0.5")
    assert f.formula() == "buy * weeks_of_cover^0.1 * stock^0.5 * (1-p_stockout)^2"
    positions = np.array([0, 2])
    _, terms = rec.score(USER, positions, f, None)
    state = rec.stock_state(positions)
    assert state["stock"].tolist() == [1.0, 1000.0]
    np.testing.assert_allclose(terms["stock"], 0.5 * np.log([1.0, 1000.0]))
    np.testing.assert_allclose(terms["weeks_of_cover"], 0.1 * np.log([1 / 2.2, 1000 / 2.2]))
    p_out = np.clip(state["p_stockout"], EPS, 1 - EPS)  # the fusion's clip of (1-p) factors
    np.testing.assert_allclose(terms["p_stockout"], 2 * np.log1p(-p_out))
    assert terms["p_stockout"][0] < -1.0 and terms["p_stockout"][1] > -1e-6
    ranked = rec.recommend(USER, k=5, fusion="buy * (1-p_stockout)^4")
    assert items[0] not in [r.item for r in ranked]
    exp = rec.explain(USER, items[2], fusion="buy * stock^0.5")
    assert {t.name for t in exp.tasks} >= {"buy", "stock"}
    with pytest.raises(ValueError, match="unknown task"):
        rec.resolve_fusion("buy * stocks")


def test_items_without_stock_or_forecast_are_neutral(art: Artifact, tmp_path: Path) -> None:
    items = art.items["item"].to_list()
    folder = write_forecast(tmp_path / "fc", items[:10])  # a forecast for ten items only
    rec = make(art, forecast=str(folder))
    state = rec.stock_state(np.array([0, 50]))
    assert not math.isnan(state["p_stockout"][0]) and math.isnan(state["p_stockout"][1])
    assert rec.stock_term(np.array([50]))[0] == 0.0
    values = rec.item_values(np.array([50]))
    assert values["p_stockout"][0] == 0.0 and values["weeks_of_cover"][0] == 1.0


def test_reorder_stock_fills_unknown_catalog_stock(art: Artifact, tmp_path: Path) -> None:
    items = art.items["item"].to_list()
    folder = write_forecast(tmp_path / "fc", items, stock={items[0]: 7, items[1]: 9})
    signals = StockSignals(load_forecast(folder), items, lead_time_weeks=1.0)
    assert signals.forecast_stock[:2].tolist() == [7.0, 9.0]
    assert np.isnan(signals.forecast_stock[2])
    rec = make(art, forecast=str(folder))
    known = int(art.items["stock"][0])  # the simulated catalog knows its stock
    assert rec.catalog.stock[0] == known
    rec.catalog.stock[1] = -1  # pretend the catalog does not know item 1's stock
    rec.load_forecast(folder)
    assert rec.catalog.stock[1] == 9 and rec.stock_overrides[items[1]] == 9


def test_reorder_list_made_without_stock_leaves_stock_unknown(
    art: Artifact, tmp_path: Path
) -> None:
    """``shoprec forecast`` on a shop with no stock assumes 0 on hand for its reorder list;
    the recommender must not read those zeros as "out of stock" (it would filter everything)."""
    items = art.items["item"].to_list()
    folder = write_forecast(tmp_path / "fc", items, stock=dict.fromkeys(items, 0.0))
    (folder / "forecast.json").write_text('{"stock_source": "none (0 assumed)"}')
    signals = StockSignals(load_forecast(folder), items, lead_time_weeks=1.0)
    assert np.isnan(signals.forecast_stock).all()
    rec = make(art, forecast=str(folder))
    rec.catalog.stock[:] = -1  # a catalog without stock
    rec.load_forecast(folder)
    assert (rec.catalog.stock < 0).all() and not rec.stock_overrides
    assert len(rec.recommend(rec.known_users[0], k=10)) == 10


def test_bad_forecast_settings(art: Artifact, tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"forecast\.parquet is missing"):
        make(art, forecast=str(tmp_path / "nowhere"))
    folder = write_forecast(tmp_path / "fc", art.items["item"].to_list()[:5])
    with pytest.raises(InventoryError, match="beyond the forecast's horizon of 4"):
        make(art, forecast=str(folder), lead_time_weeks=6.0)


def test_stock_adjustment_caps_the_penalty() -> None:
    t = stock_adjustment(
        np.array([1.0, 0.0]), np.array([0.0, 5.0]),
        stockout_penalty=2.0, overstock_weeks=4.0, overstock_boost=0.3,
    )  # fmt: skip
    np.testing.assert_allclose(t, [2.0 * math.log(0.01), 0.3 * 0.25])


def test_merchant_audience_scores_with_a_stock_fusion(art: Artifact, forecast_dir: Path) -> None:
    rec = make(art, forecast=str(forecast_dir), fusion="buy * (1-p_stockout)^2")
    plenty(rec)
    item = rec.items[0]
    members = rec.audience(item, k=3)
    assert len(members) == 3
    # at 1000 units the risk is nil: the fused score is p(buy) itself
    for m in members:
        assert m.score == pytest.approx(m.predictions["buy"], rel=1e-6)
