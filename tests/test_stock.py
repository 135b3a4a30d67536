"""Stock arithmetic (shoprec.inventory.stock): numbers checkable by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.special import ndtr, ndtri

from shoprec.inventory.stock import (
    DEFAULT_SIGMA,
    REORDER_COLUMNS,
    InventoryError,
    lead_time_demand,
    reorder_table,
    service_quantity,
    stockout_probability,
)


def _forecast(rows: dict[str, list[tuple[float, float, float]]], **extra) -> pl.DataFrame:
    """item -> [(mean, p50, p90) for horizon 1..H]."""
    out = []
    for item, weeks in rows.items():
        for h, (mean, p50, p90) in enumerate(weeks, start=1):
            out.append({"item": item, "horizon": h, "mean": mean, "p50": p50, "p90": p90})
    frame = pl.DataFrame(out)
    return frame.with_columns(**{k: pl.lit(v) for k, v in extra.items()}) if extra else frame


def test_lead_time_sums_whole_and_prorated_weeks():
    fc = _forecast({"a": [(5.0, 4.0, 9.0), (6.0, 5.0, 10.0), (7.0, 6.0, 11.0), (8.0, 7.0, 12.0)]})
    two = lead_time_demand(fc, 2.0).row(0, named=True)
    assert two["demand_mean_lead"] == pytest.approx(11.0)
    assert two["demand_p50_lead"] == pytest.approx(9.0)
    assert two["demand_p90_lead"] == pytest.approx(19.0)
    assert two["mean_weekly"] == pytest.approx(6.5)  # all four horizons
    # 2.5 weeks: weeks 1, 2 whole and half of week 3.
    half = lead_time_demand(fc, 2.5).row(0, named=True)
    assert half["demand_p50_lead"] == pytest.approx(4 + 5 + 3)
    assert half["demand_p90_lead"] == pytest.approx(9 + 10 + 5.5)


def test_lead_time_uses_latest_origin_and_per_item_lead_times():
    fc = pl.DataFrame(
        {
            "item": ["a", "a", "a", "a", "b", "b"],
            "origin": [1, 1, 2, 2, 2, 2],
            "horizon": [1, 2, 1, 2, 1, 2],
            "mean": [100.0, 100.0, 1.0, 2.0, 3.0, 4.0],
            "p50": [100.0, 100.0, 1.0, 2.0, 3.0, 4.0],
            "p90": [100.0, 100.0, 2.0, 3.0, 5.0, 6.0],
        }
    )
    lt = pl.DataFrame({"item": ["a", "b"], "lead_time_weeks": [2.0, 1.0]})
    got = {r["item"]: r for r in lead_time_demand(fc, lt).iter_rows(named=True)}
    assert got["a"]["demand_p50_lead"] == pytest.approx(3.0)  # origin 1 ignored
    assert got["b"]["demand_p50_lead"] == pytest.approx(3.0)  # one week only
    assert got["b"]["demand_p90_lead"] == pytest.approx(5.0)


def test_p_no_sale_over_lead_time_is_product_of_weeks():
    fc = _forecast({"a": [(1.0, 0.0, 2.0), (1.0, 0.0, 2.0)]}, p_no_sale=0.5)
    row = lead_time_demand(fc, 2.0).row(0, named=True)
    assert row["p_no_sale_lead"] == pytest.approx(0.25)
    assert lead_time_demand(fc, 1.5).row(0, named=True)["p_no_sale_lead"] == pytest.approx(0.5**1.5)


def test_stockout_probability_at_the_quantiles():
    p50, p90 = np.array([8.0, 8.0, 8.0]), np.array([18.0, 18.0, 18.0])
    got = stockout_probability(np.array([8.0, 18.0, 0.0]), p50, p90)
    # Lognormal through median 8 and P90 18: P(D > 8) = 0.5, P(D > 18) = 0.1, P(D > 0) = 1.
    np.testing.assert_allclose(got, [0.5, 0.1, 1.0], atol=1e-12)
    # Between them, by hand: sigma = ln(18/8)/z90, P(D > 12) = 1 - Phi(ln(12/8)/sigma).
    sigma = math.log(18 / 8) / ndtri(0.9)
    want = 1 - ndtr(math.log(1.5) / sigma)
    assert stockout_probability(np.array([12.0]), p50[:1], p90[:1])[0] == pytest.approx(want)


def test_stockout_probability_edge_cases():
    # No demand forecast: never out of stock, even at zero stock.
    assert stockout_probability(np.array([0.0]), np.array([0.0]), np.array([0.0]))[0] == 0.0
    # P50 == P90: all mass at that value.
    got = stockout_probability(np.array([4.9, 5.0, 5.1]), np.full(3, 5.0), np.full(3, 5.0))
    np.testing.assert_array_equal(got, [1.0, 0.0, 0.0])
    # Intermittent: median 0, P(no sale) 0.6 -> zero stock runs out with P(sale) = 0.4 and
    # a stock of P90 units with 0.1.
    p0 = np.array([0.6, 0.6])
    got = stockout_probability(np.array([0.0, 3.0]), np.zeros(2), np.full(2, 3.0), p0)
    np.testing.assert_allclose(got, [0.4, 0.1], atol=1e-12)
    # and its positive part uses the default sigma: P(D > 1) by hand.
    b = (0.9 - 0.6) / 0.4
    mu = math.log(3.0) - DEFAULT_SIGMA * ndtri(b)
    want = 0.4 * (1 - ndtr((0 - mu) / DEFAULT_SIGMA))
    one = stockout_probability(np.array([1.0]), np.zeros(1), np.full(1, 3.0), p0[:1])[0]
    assert one == pytest.approx(want)


def test_hurdle_keeps_the_quantiles():
    # P(no sale) 0.2 with P50 4 and P90 10: the mixture still has P(D > 4) = 0.5, P(D > 10) = 0.1.
    p0 = np.full(2, 0.2)
    got = stockout_probability(np.array([4.0, 10.0]), np.full(2, 4.0), np.full(2, 10.0), p0)
    np.testing.assert_allclose(got, [0.5, 0.1], atol=1e-12)
    q = service_quantity(0.5, np.full(1, 4.0), np.full(1, 10.0), p0[:1])
    assert q[0] == pytest.approx(4.0)
    # A service level at or below P(no sale) needs no stock.
    assert service_quantity(0.15, np.full(1, 4.0), np.full(1, 10.0), p0[:1])[0] == 0.0


def test_service_quantity_is_the_p90_at_90_percent_and_grows_with_level():
    p50, p90 = np.array([8.0]), np.array([18.0])
    assert service_quantity(0.9, p50, p90)[0] == pytest.approx(18.0)
    sigma = math.log(18 / 8) / ndtri(0.9)
    assert service_quantity(0.95, p50, p90)[0] == pytest.approx(8 * math.exp(sigma * ndtri(0.95)))
    with pytest.raises(InventoryError, match="service_level"):
        service_quantity(1.0, p50, p90)


def test_reorder_table_by_hand():
    fc = _forecast(
        {
            "short": [(5.0, 4.0, 9.0)] * 4,  # P50 8, P90 18 over 2 weeks; stock 3
            "fine": [(2.0, 2.0, 4.0)] * 4,  # P50 4, P90 8; stock 20
            "slow": [(0.0, 0.0, 0.0)] * 4,  # no demand; stock 7
            "nostock": [(1.0, 1.0, 2.0)] * 4,  # not in the stock table: left out
        }
    )
    table = reorder_table(fc, {"short": 3, "fine": 20, "slow": 7}, lead_time_weeks=2.0)
    assert table.columns == list(REORDER_COLUMNS)
    assert table["item"].to_list() == ["short", "fine", "slow"]
    rows = {r["item"]: r for r in table.iter_rows(named=True)}
    s = rows["short"]
    assert (s["demand_p50_lead"], s["demand_p90_lead"]) == (8.0, 18.0)
    assert s["weeks_of_cover"] == pytest.approx(3 / 5)
    assert s["reorder_qty"] == 15.0  # P90 18 - stock 3
    assert s["at_risk"] and s["p_stockout"] > 0.5
    f = rows["fine"]
    assert f["weeks_of_cover"] == pytest.approx(10.0)
    assert f["reorder_qty"] == 0.0 and not f["at_risk"]
    assert f["p_stockout"] < 0.1  # stock 20 is above the P90 of 8
    z = rows["slow"]
    assert z["weeks_of_cover"] == math.inf and z["p_stockout"] == 0.0 and z["reorder_qty"] == 0.0


def test_reorder_quantity_rounds_up_to_whole_units():
    fc = _forecast({"a": [(2.0, 2.0, 4.5)]})
    table = reorder_table(fc, {"a": 2}, lead_time_weeks=1.0)
    assert table["reorder_qty"].item() == 3.0  # 4.5 - 2 = 2.5 -> 3 units


def test_reorder_table_per_item_lead_time_with_default():
    fc = _forecast({"a": [(1.0, 1.0, 2.0)] * 3, "b": [(1.0, 1.0, 2.0)] * 3})
    stock = pl.DataFrame({"item": ["a", "b"], "stock": [0, 0], "lead_time_weeks": [3.0, None]})
    rows = {
        r["item"]: r for r in reorder_table(fc, stock, lead_time_weeks=1.0).iter_rows(named=True)
    }
    assert rows["a"]["lead_time_weeks"] == 3.0 and rows["a"]["reorder_qty"] == 6.0
    assert rows["b"]["lead_time_weeks"] == 1.0 and rows["b"]["reorder_qty"] == 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lead_time_weeks": -1.0}, ">= 0"),
        ({"lead_time_weeks": 5.0}, "beyond the forecast's horizon of 4"),
        ({"service_level": 0.0}, "service_level"),
        ({"risk_threshold": 1.5}, "risk_threshold"),
    ],
)
def test_reorder_table_refuses_bad_settings(kwargs, message):
    fc = _forecast({"a": [(1.0, 1.0, 2.0)] * 4})
    with pytest.raises(InventoryError, match=message):
        reorder_table(fc, {"a": 1}, **kwargs)


def test_reorder_table_refuses_bad_tables():
    fc = _forecast({"a": [(1.0, 1.0, 2.0)] * 4})
    with pytest.raises(InventoryError, match="item 'a' has -2"):
        reorder_table(fc, {"a": -2})
    with pytest.raises(InventoryError, match=r"lacks column\(s\) \['p90'\]"):
        reorder_table(fc.drop("p90"), {"a": 1})
    stock = pl.DataFrame({"item": ["a"], "stock": [1], "lead_time_weeks": [9.0]})
    with pytest.raises(InventoryError, match="lead_time_weeks of item 'a'"):
        reorder_table(fc, stock)


def test_daily_forecast_counts_lead_time_and_cover_in_weeks():
    fc = _forecast({"a": [(1.5, 1.0, 2.0)] * 14})  # 14 days ahead
    row = lead_time_demand(fc, 1.0, periods_per_week=7).row(0, named=True)
    assert (row["demand_p50_lead"], row["demand_p90_lead"]) == (7.0, 14.0)
    assert row["mean_weekly"] == pytest.approx(10.5)
    table = reorder_table(fc, {"a": 21}, lead_time_weeks=2.0, periods_per_week=7)
    r = table.row(0, named=True)
    assert r["lead_time_weeks"] == 2.0 and r["demand_p90_lead"] == 28.0
    assert r["weeks_of_cover"] == pytest.approx(2.0) and r["reorder_qty"] == 7.0
    with pytest.raises(InventoryError, match=r"horizon of 2\.0 weeks"):
        reorder_table(fc, {"a": 21}, lead_time_weeks=3.0, periods_per_week=7)
