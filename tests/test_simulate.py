"""Tests for the simulated shop: determinism, schema, funnel order and the planted signals."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from shoprec.data.schema import Behavior, Catalog, Interactions, Users
from shoprec.data.simulate import (
    STAGES,
    SimConfig,
    SimTruth,
    SimulatedShop,
    id_index,
    simulate_shop,
)

SMALL = SimConfig(n_users=300, n_items=120, n_events=4_000, n_days=30, seed=3)


@pytest.fixture(scope="module")
def shop() -> SimulatedShop:
    return simulate_shop(n_users=1_000, n_items=400, n_events=60_000, n_days=60, seed=7)


@pytest.fixture(scope="module")
def events(shop: SimulatedShop) -> pl.DataFrame:
    return shop.dataset.interactions.df


def _pairs(df: pl.DataFrame, behavior: str) -> pl.DataFrame:
    return df.filter(pl.col("behavior") == behavior).select("user", "item").unique()


def _frames(s: SimulatedShop) -> list[pl.DataFrame]:
    ds = s.dataset
    assert ds.catalog is not None and ds.users is not None
    return [ds.interactions.df, ds.catalog.df, ds.users.df, s.demand]


# --------------------------------------------------------------------------- basics


def test_same_seed_same_frames_different_seed_different() -> None:
    a, b = simulate_shop(SMALL), simulate_shop(SMALL)
    for fa, fb in zip(_frames(a), _frames(b), strict=True):
        assert_frame_equal(fa, fb)
    np.testing.assert_array_equal(a.truth.item_factors, b.truth.item_factors)
    np.testing.assert_array_equal(a.truth.stage_coef, b.truth.stage_coef)
    c = simulate_shop(SMALL, seed=4)
    assert not a.dataset.interactions.df.equals(c.dataset.interactions.df)
    assert not np.allclose(a.truth.user_taste, c.truth.user_taste)


def test_overrides_and_validation() -> None:
    s = simulate_shop(SMALL, n_markets=4)
    assert s.config.n_markets == 4 and s.config.n_users == SMALL.n_users
    assert set(s.dataset.interactions.df["domain"].unique()) <= set(s.config.markets)
    with pytest.raises(ValueError, match="n_markets"):
        SimConfig(n_markets=1)
    with pytest.raises(ValueError, match="click_rate"):
        SimConfig(click_rate=1.5)


def test_canonical_schema(shop: SimulatedShop, events: pl.DataFrame) -> None:
    ds = shop.dataset
    assert ds.name == "simulated"
    assert_frame_equal(Interactions.from_frame(events).df, events)
    assert ds.catalog is not None and ds.users is not None
    assert_frame_equal(Catalog.from_frame(ds.catalog.df).df, ds.catalog.df)
    assert_frame_equal(Users.from_frame(ds.users.df).df, ds.users.df)
    assert ds.catalog.df.columns[:6] == ["item", "title", "category", "brand", "price", "stock"]
    assert {"age_band", "gender", "home_market", "second_market"} <= set(ds.users.attributes)
    assert events.null_count().sum_horizontal().item() == 0
    assert set(events["behavior"].unique()) == {"view", "click", "favorite", "cart", "buy",
                                                "return"}  # fmt: skip
    assert events["user"].str.contains(r"^u\d+$").all()
    assert events["item"].str.contains(r"^i\d+$").all()
    assert events["user"].is_in(ds.users.df["user"].implode()).all()
    assert events["item"].is_in(ds.catalog.df["item"].implode()).all()
    assert (events["quantity"] >= 1).all()
    start = dt.datetime(2024, 1, 1)
    assert events["timestamp"].min() >= start
    assert events["timestamp"].max() < start + dt.timedelta(days=60)
    assert events["timestamp"].is_sorted()
    # prices in events are the catalog prices
    joined = events.join(ds.catalog.df.select("item", pl.col("price").alias("p")), on="item")
    assert (joined["price"] == joined["p"]).all()


@pytest.mark.parametrize(
    ("n_events", "impressions"), [(3_000, False), (25_000, False), (20_000, True)]
)
def test_n_events_lands_within_tolerance(n_events: int, impressions: bool) -> None:
    s = simulate_shop(SMALL, n_events=n_events, impressions=impressions, seed=11)
    height = len(s.dataset.interactions)
    assert abs(height - n_events) / n_events < 0.1
    has_impressions = (s.dataset.interactions.df["behavior"] == "impression").any()
    assert has_impressions == impressions


def test_save_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = simulate_shop(SMALL)
    b = SimulatedShop.load(a.save(tmp_path / "shop"))
    for fa, fb in zip(_frames(a), _frames(b), strict=True):
        assert_frame_equal(fa, fb)
    assert b.config == a.config
    t = SimTruth.load(tmp_path / "shop" / "truth")
    np.testing.assert_array_equal(t.item_markets, a.truth.item_markets)
    np.testing.assert_array_equal(t.stage_coef, a.truth.stage_coef)
    assert t.vocabulary == a.truth.vocabulary and t.affinity_std == a.truth.affinity_std


# --------------------------------------------------------------------------- funnel


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("click", "view"),
        ("favorite", "click"),
        ("cart", "click"),
        ("buy", "cart"),
        ("return", "buy"),
    ],
)
def test_every_event_has_its_parent_before_it(
    events: pl.DataFrame, child: str, parent: str
) -> None:
    keys = ["user", "item", "domain"]
    c = events.filter(pl.col("behavior") == child).select(*keys, "timestamp")
    p = events.filter(pl.col("behavior") == parent).select(
        *keys, "timestamp", pl.col("timestamp").alias("parent_ts")
    )
    assert c.height > 0
    j = c.join_asof(p, on="timestamp", by=keys, strategy="backward", check_sortedness=False)
    assert j["parent_ts"].null_count() == 0
    # never more children than parents of a pair
    counts = (
        events.filter(pl.col("behavior").is_in([child, parent]))
        .group_by(keys)
        .agg(
            (pl.col("behavior") == child).sum().alias("c"),
            (pl.col("behavior") == parent).sum().alias("p"),
        )
    )
    assert (counts["c"] <= counts["p"]).all()


def test_returns_do_not_exceed_purchases(events: pl.DataFrame) -> None:
    q = (
        events.filter(pl.col("behavior").is_in(["buy", "return"]))
        .group_by("user", "item")
        .agg(
            pl.col("quantity").filter(pl.col("behavior") == "buy").sum().alias("bought"),
            pl.col("quantity").filter(pl.col("behavior") == "return").sum().alias("returned"),
        )
    )
    assert (q["returned"] <= q["bought"]).all()


def test_stage_rates_near_configured_base_rates(shop: SimulatedShop, events: pl.DataFrame) -> None:
    n = events["behavior"].value_counts()
    count = dict(zip(n["behavior"], n["count"], strict=True))
    cfg = shop.config
    assert count["click"] / count["view"] == pytest.approx(cfg.click_rate, abs=0.03)
    assert count["cart"] / count["click"] == pytest.approx(cfg.cart_rate, abs=0.03)
    assert count["favorite"] / count["click"] == pytest.approx(cfg.favorite_rate, abs=0.02)
    # buys lose a few to stockouts, returns a few to the end of the range
    assert count["buy"] / count["cart"] == pytest.approx(cfg.buy_rate, abs=0.06)
    assert 0.03 < count["return"] / count["buy"] <= cfg.return_rate + 0.03


def test_truth_probabilities_match_observed_click_rate(
    shop: SimulatedShop, events: pl.DataFrame
) -> None:
    views = events.filter(pl.col("behavior") == "view")
    markets = views["domain"].str.slice(len("market_")).cast(pl.Int64).to_numpy()
    p = shop.truth.stage_probability(
        "click", id_index(views["user"]), id_index(views["item"]), markets
    )
    observed = (events["behavior"] == "click").sum() / views.height
    assert p.mean() == pytest.approx(observed, abs=0.02)
    assert list(shop.truth.stages) == list(STAGES)


# --------------------------------------------------------------------------- planted signals


def test_affinity_drives_clicks_and_buys(shop: SimulatedShop, events: pl.DataFrame) -> None:
    viewed = _pairs(events, "view")
    for stage in ("click", "buy"):
        done = _pairs(events, stage).with_columns(pl.lit(1).alias("y"))
        d = viewed.join(done, on=["user", "item"], how="left").with_columns(
            pl.col("y").fill_null(0)
        )
        aff = shop.truth.affinity(id_index(d["user"]), id_index(d["item"]))
        r = np.corrcoef(aff, d["y"].to_numpy())[0, 1]
        assert r > 0.1, (stage, r)
    # exposure itself leans toward liked items
    rng = np.random.default_rng(0)
    u = rng.integers(0, shop.config.n_users, 5_000)
    i = rng.integers(0, shop.config.n_items, 5_000)
    seen = shop.truth.affinity(id_index(viewed["user"]), id_index(viewed["item"]))
    assert seen.mean() > shop.truth.affinity(u, i).mean() + 0.3


def test_buy_rate_falls_with_price(events: pl.DataFrame) -> None:
    carts = _pairs(events, "cart")
    bought = _pairs(events, "buy").with_columns(pl.lit(1).alias("y"))
    d = (
        carts.join(bought, on=["user", "item"], how="left")
        .with_columns(pl.col("y").fill_null(0))
        .join(events.select("item", "price").unique(), on="item")
    )
    lo, hi = d["price"].quantile(1 / 3), d["price"].quantile(2 / 3)
    low = d.filter(pl.col("price") <= lo)["y"].mean()
    high = d.filter(pl.col("price") >= hi)["y"].mean()
    assert low > high + 0.1, (low, high)


def test_returns_follow_mismatch(shop: SimulatedShop, events: pl.DataFrame) -> None:
    bought, returned = _pairs(events, "buy"), _pairs(events, "return")
    t = shop.truth
    m_buy = t.mismatch(id_index(bought["user"]), id_index(bought["item"])).mean()
    m_ret = t.mismatch(id_index(returned["user"]), id_index(returned["item"])).mean()
    assert m_ret > m_buy + 0.2


def test_item_factors_predictable_from_catalog_content() -> None:
    s = simulate_shop(n_items=3_000, n_users=200, n_events=2_000, n_days=20, seed=5)
    assert s.dataset.catalog is not None
    cat = s.dataset.catalog.df
    words = cat["title"].str.to_lowercase().str.split(" ")
    tokens = pl.DataFrame({"row": np.arange(cat.height), "w": words}).explode("w")
    vocab = {w: k for k, w in enumerate(tokens["w"].unique().sort())}
    cats = {c: k for k, c in enumerate(cat["category"].unique().sort())}
    x = np.zeros((cat.height, len(vocab) + len(cats) + 2))
    x[tokens["row"].to_numpy(), [vocab[w] for w in tokens["w"]]] = 1.0  # brand is a word too
    x[np.arange(cat.height), len(vocab) + np.array([cats[c] for c in cat["category"]])] = 1.0
    x[:, -2] = np.log(cat["price"].to_numpy())
    x[:, -1] = 1.0
    y = s.truth.item_factors[id_index(cat["item"])].astype(np.float64)
    train, test = np.arange(cat.height) < 2_000, np.arange(cat.height) >= 2_000
    a = x[train]
    coef = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ y[train])
    resid = y[test] - x[test] @ coef
    r2 = 1.0 - (resid**2).sum() / ((y[test] - y[test].mean(axis=0)) ** 2).sum()
    assert r2 > 0.7, r2
    # and the title words tell the category apart: each category noun belongs to one category
    nouns = cat.select("category", pl.col("title").str.split(" ").list.last().alias("noun"))
    assert nouns.group_by("noun").agg(pl.col("category").n_unique())["category"].max() == 1


def test_user_attributes_carry_taste(shop: SimulatedShop) -> None:
    t = shop.truth
    x = np.concatenate(
        [
            np.eye(len(t.age_bands))[t.user_age_band],
            np.eye(len(t.genders))[t.user_gender],
            np.eye(len(t.markets))[t.user_home_market],
        ],
        axis=1,
    )
    y = t.user_taste.astype(np.float64)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1.0 - ((y - x @ coef) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()
    assert r2 > 0.1, r2


def test_new_items_have_no_events_before_launch(shop: SimulatedShop, events: pl.DataFrame) -> None:
    t = shop.truth
    launch = pl.DataFrame(
        {
            "item": [f"i{k}" for k in range(shop.config.n_items)],
            "launch": [
                dt.datetime(2024, 1, 1) + dt.timedelta(days=int(d)) for d in t.item_launch_day
            ],
        }
    )
    j = events.join(launch, on="item")
    assert (j["timestamp"] >= j["launch"]).all()
    new = j.filter(pl.col("launch") > dt.datetime(2024, 1, 1))
    assert new["item"].n_unique() >= 10  # new items do get events after launch
    first_new_day = int(shop.config.n_days * (1 - shop.config.new_item_window))
    assert t.item_launch_day[t.item_launch_day > 0].min() >= first_new_day


def test_markets_share_users_and_items(shop: SimulatedShop, events: pl.DataFrame) -> None:
    per_user = events.group_by("user").agg(pl.col("domain").n_unique().alias("n"))
    per_item = events.group_by("item").agg(pl.col("domain").n_unique().alias("n"))
    assert (per_user["n"] >= 2).sum() > 10
    assert (per_item["n"] >= 2).sum() > 10
    sizes = events.group_by("domain").len().sort("len", descending=True)
    assert sizes["domain"][0] == "market_0"
    # users only shop in their home market and (if any) their second market
    assert shop.dataset.users is not None
    j = events.select("user", "domain").unique().join(shop.dataset.users.df, on="user")
    ok = (pl.col("domain") == pl.col("home_market")) | (pl.col("domain") == pl.col("second_market"))
    assert j.select(ok.all()).item()
    # items only sell where they are sold
    t = shop.truth
    m = events.select("item", "domain").unique()
    allowed = t.item_markets[
        m["domain"].str.slice(len("market_")).cast(pl.Int64).to_numpy(), id_index(m["item"])
    ]
    assert allowed.all()


# --------------------------------------------------------------------------- demand and stock


def test_demand_matches_bought_quantity_and_stock_is_sane(
    shop: SimulatedShop, events: pl.DataFrame
) -> None:
    demand = shop.demand
    assert demand.columns == ["item", "date", "demand", "lost_sales", "stock", "stockout"]
    bought = (
        events.filter(pl.col("behavior") == Behavior.BUY.value)
        .group_by("item", pl.col("timestamp").dt.date().alias("date"))
        .agg(pl.col("quantity").sum().alias("q"))
    )
    j = demand.join(bought, on=["item", "date"], how="left").with_columns(pl.col("q").fill_null(0))
    assert j.height == demand.height
    assert (j["demand"] == j["q"]).all()
    assert demand["demand"].sum() == bought["q"].sum()
    assert (demand["stock"] >= 0).all() and (demand["lost_sales"] >= 0).all()
    assert (demand["demand"] <= demand["stock"]).all()  # never sell what is not there
    assert demand["lost_sales"].sum() > 0  # the planning error does cause stockouts
    assert shop.dataset.catalog is not None
    assert (shop.dataset.catalog.df["stock"] >= 0).all()
    # one row per item and day from its launch
    expected = int((shop.config.n_days - shop.truth.item_launch_day).sum())
    assert demand.height == expected
    assert demand.select(pl.struct("item", "date").is_unique().all()).item()


def test_traffic_has_weekly_seasonality(events: pl.DataFrame) -> None:
    views = events.filter(pl.col("behavior") == "view")
    by_dow = dict(views.group_by(pl.col("timestamp").dt.weekday()).len().iter_rows())
    assert by_dow[7] > 1.2 * by_dow[3]  # Sunday peak, Wednesday trough


# --------------------------------------------------------------------------- written in chunks


def test_write_shop_in_chunks_gives_the_same_shop(tmp_path) -> None:
    import pyarrow.parquet as pq

    from shoprec.data.simulate import summarize_written, write_shop

    cfg = SimConfig(n_users=300, n_items=120, n_events=20_000, n_days=30, n_markets=4, seed=3)
    whole = simulate_shop(cfg)
    out = write_shop(tmp_path / "shop", cfg, chunk_events=3_000)
    meta = pq.ParquetFile(out / "interactions.parquet").metadata
    assert meta.num_row_groups >= 6  # written piece by piece, not as one table
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 3_000
    back = SimulatedShop.load(out)
    key = ["timestamp", "user", "item", "behavior", "quantity"]
    assert_frame_equal(
        back.dataset.interactions.df.sort(key), whole.dataset.interactions.df.sort(key)
    )
    for a, b in zip(_frames(back)[1:], _frames(whole)[1:], strict=True):
        assert_frame_equal(a, b)
    summary = summarize_written(out)
    assert summary["events"] == whole.dataset.interactions.df.height
    assert len(summary["events_per_domain"]) == 4
    with pytest.raises(ValueError, match="chunk_events"):
        write_shop(tmp_path / "bad", cfg, chunk_events=0)


# --------------------------------------------------------------------------- taste overlap


def _cross_market_correlation(truth: SimTruth, n: int = 20_000) -> float:
    rng = np.random.default_rng(0)
    u = rng.integers(0, len(truth.user_taste), n)
    i = rng.integers(0, len(truth.item_factors), n)
    return float(np.corrcoef(truth.affinity(u, i, 0), truth.affinity(u, i, 1))[0, 1])


def test_taste_overlap_sets_the_cross_market_affinity_correlation(tmp_path) -> None:
    cfg = SimConfig(n_users=600, n_items=300, n_events=6_000, n_days=30, n_markets=2, seed=5)
    corr = {}
    for rho in (0.0, 0.5, 0.9, 1.0):
        s = simulate_shop(cfg, taste_overlap=rho, popularity_overlap=0.0)
        corr[rho] = _cross_market_correlation(s.truth)
        if rho == 1.0:  # the default: one taste space, the world as before the knob
            assert s.truth.market_user_taste is None and s.truth.market_item_factors is None
    # documented: the correlation of a pair's affinity between markets is rho (up to the
    # scatter of one finite world, ~0.1)
    assert abs(corr[0.0]) < 0.15
    assert 0.35 < corr[0.5] < 0.65
    assert 0.8 < corr[0.9] < 0.97
    assert corr[1.0] == pytest.approx(1.0)
    # and the events follow each market's own affinity: at overlap 0 what is clicked in
    # market_1 is liked there, not (beyond chance) in market_0
    s = simulate_shop(cfg, taste_overlap=0.0)
    clicks = s.dataset.interactions.df.filter(
        (pl.col("behavior") == "click") & (pl.col("domain") == "market_1")
    )
    u, i = id_index(clicks["user"]), id_index(clicks["item"])
    assert s.truth.affinity(u, i, 1).mean() > s.truth.affinity(u, i, 0).mean() + 0.5
    # the per-market parts survive save/load
    back = SimulatedShop.load(s.save(tmp_path / "shop"))
    np.testing.assert_array_equal(back.truth.affinity(u, i, 1), s.truth.affinity(u, i, 1))


def test_popularity_overlap_sets_the_cross_market_popularity_correlation() -> None:
    cfg = SimConfig(n_users=300, n_items=2_000, n_events=3_000, n_days=30, n_markets=2, seed=1)
    for q, lo, hi in ((0.0, -0.1, 0.1), (0.5, 0.4, 0.6)):
        pop = simulate_shop(cfg, popularity_overlap=q).truth.market_item_popularity
        assert pop is not None
        assert lo < np.corrcoef(np.log(pop[0]), np.log(pop[1]))[0, 1] < hi
    assert simulate_shop(cfg).truth.market_item_popularity is None
    with pytest.raises(ValueError, match="taste_overlap"):
        SimConfig(taste_overlap=1.5)
