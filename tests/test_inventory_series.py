"""Demand series: weekly / daily sums, purchases and returns apart, partial weeks dropped,
dense zero-filled panels with covariates."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from shoprec.data.schema import Catalog, Interactions
from shoprec.errors import DataError
from shoprec.inventory.series import (
    build_panel,
    calendar_features,
    demand_from_interactions,
    full_periods,
    period_sales,
)


def events() -> Interactions:
    """Two products over three weeks (Mon 2024-01-01 .. Wed 2024-01-24)."""
    rows = [
        ("u1", "a", "2024-01-01 10:00", "buy", 3, 2.0, "UK"),
        ("u2", "a", "2024-01-03 10:00", "buy", 2, 2.0, "FR"),
        ("u1", "a", "2024-01-05 10:00", "return", 1, 2.0, "UK"),
        ("u3", "a", "2024-01-15 10:00", "buy", 4, 2.5, "UK"),
        ("u3", "b", "2024-01-09 10:00", "buy", 1, 10.0, "UK"),
        ("u3", "b", "2024-01-09 11:00", "view", 1, 10.0, "UK"),
        ("u4", "b", "2024-01-24 10:00", "buy", 7, 10.0, "UK"),  # partial last week
    ]
    df = pl.DataFrame(
        rows, schema=["user", "item", "ts", "behavior", "quantity", "price", "domain"], orient="row"
    ).with_columns(pl.col("ts").str.to_datetime().alias("timestamp"))
    return Interactions.from_frame(df.drop("ts"))


def catalog() -> Catalog:
    return Catalog.from_frame(
        pl.DataFrame(
            {
                "item": ["a", "b", "c"],
                "title": ["red mug", "blue mug", "new lamp"],
                "category": ["kitchen", "kitchen", "home"],
            }
        )
    )


def test_full_periods_drop_partial_weeks() -> None:
    weeks = full_periods(dt.date(2010, 12, 1), dt.date(2011, 12, 9), "week")
    assert weeks[0] == dt.date(2010, 12, 6) and weeks[-1] == dt.date(2011, 11, 28)
    assert all(w.weekday() == 0 for w in weeks)
    assert full_periods(dt.date(2024, 1, 1), dt.date(2024, 1, 3), "day")[-1] == dt.date(2024, 1, 3)


def test_weekly_sales_keep_returns_apart_and_drop_other_behaviors() -> None:
    data = demand_from_interactions(events(), catalog())
    weekly = period_sales(data, freq="week")
    assert weekly["period"].max() == dt.date(2024, 1, 15)  # the week of the 22nd is partial
    a = weekly.filter(pl.col("item") == "a").sort("period")
    assert a["units"].to_list() == [5.0, 4.0] and a["returns"].to_list() == [1.0, 0.0]
    b = weekly.filter(pl.col("item") == "b")
    assert b["units"].to_list() == [1.0]  # the view is not a sale, the 24th is cut
    by_market = period_sales(data, by_market=True).filter(pl.col("item") == "a")
    assert sorted(by_market["market"].unique().to_list()) == ["FR", "UK"]
    assert by_market["units"].sum() == 9.0


def test_panel_is_dense_with_first_sale_price_and_unsold_items() -> None:
    data = demand_from_interactions(events(), catalog())
    panel = build_panel(data)
    assert panel.keys["item"].to_list() == ["a", "b", "c"]
    np.testing.assert_array_equal(panel.units, [[5, 0, 4], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(panel.first, [0, 1, 3])  # c never sold: T
    assert panel.price[0, 2] == pytest.approx(2.5)  # revenue / units of that week
    assert panel.price[1, 2] == pytest.approx(10.0)  # carried forward
    assert panel.category.tolist() == [2, 2, 1]  # ids by sorted name, 0 unknown
    assert panel.calendar.shape[1] == 4 and panel.text.shape == (3, 0)
    daily = build_panel(data, freq="day")
    assert daily.units.sum() == 17.0  # every sale, including the 24th's
    per_market = build_panel(data, by_market=True)
    assert per_market.market_names[0] == "UK"  # biggest market first
    assert per_market.n_series == 3  # (a, FR), (a, UK), (b, UK)


def test_calendar_features_are_periodic() -> None:
    cal = calendar_features([dt.date(2023, 1, 2), dt.date(2024, 1, 1)])
    np.testing.assert_allclose(cal[0, :2], cal[1, :2], atol=0.02)


def test_no_timestamps_or_no_buys_are_clear_errors() -> None:
    inter = events()
    no_time = Interactions(
        inter.df.with_columns(pl.lit(None, pl.Datetime("ms")).alias("timestamp"))
    )
    with pytest.raises(DataError, match="timestamps"):
        demand_from_interactions(no_time)
    views = Interactions(inter.df.with_columns(pl.lit("view").alias("behavior")))
    with pytest.raises(DataError, match="buy"):
        demand_from_interactions(views)


def test_simulator_source_knows_launches_and_stock() -> None:
    from shoprec.data.simulate import simulate_shop
    from shoprec.inventory.series import demand_from_simulation

    shop = simulate_shop(n_events=4_000, n_users=200, n_items=40, n_days=70, seed=3)
    data = demand_from_simulation(shop)
    panel = build_panel(data)
    assert data.stock.height == 40 and data.launch is not None
    assert panel.n_periods == 10
    launched = panel.first < panel.n_periods
    # a launch never comes after the first sale
    sold = panel.units.sum(1) > 0
    assert (panel.first[sold] <= panel.units[sold].argmax(1)).all() and launched.any()
