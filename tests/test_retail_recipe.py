"""Tests for the repeat-purchase retail recipe (:mod:`shoprec.recipes.retail`) on tiny events."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from shoprec.models import build_model
from shoprec.recipes import retail
from shoprec.train.loop import TrainConfig, fit, predict

T0 = datetime(2011, 1, 1)
CUT = T0 + timedelta(days=30)  # features before, labels in [CUT, END)
END = T0 + timedelta(days=60)


def _ev(user: str, item: str, day: float, behavior: str = "buy", qty: int = 1) -> dict:
    return {
        "user": user,
        "item": item,
        "timestamp": T0 + timedelta(days=day),
        "behavior": behavior,
        "quantity": qty,
        "price": 1.0,
        "domain": "UK" if user != "u3" else "France",
    }


EVENTS = pl.DataFrame(
    [
        _ev("u1", "a", 1, qty=2),
        _ev("u1", "a", 10, qty=4),
        _ev("u1", "b", 20, qty=1),
        _ev("u1", "b", 25, "return", 1),
        _ev("u2", "a", 5, qty=10),
        _ev("u2", "c", 28, qty=3),
        # the label window
        _ev("u1", "a", 31, qty=6),
        _ev("u1", "a", 40, qty=6),
        _ev("u1", "d", 35, qty=1),
        _ev("u1", "d", 34, "return", 1),  # before the window's purchase: not a return of it
        _ev("u2", "c", 32, qty=2),
        _ev("u2", "c", 45, "return", 2),  # after it: a return
        _ev("u3", "e", 33, qty=1),  # a new user
        _ev("u1", "c", 70, qty=1),  # after the window: ignored
    ],
    schema_overrides={"timestamp": pl.Datetime("ms")},
)
CATALOG = pl.DataFrame(
    {"item": list("abcdefgh"), "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]}
)
CFG = retail.RetailConfig(n_negatives=3, max_history=2, embedding_dim=4)


def test_snapshot_reads_only_the_past() -> None:
    snap = retail.snapshot(EVENTS, CUT, CATALOG, CFG)
    assert set(snap.users["user"]) == {"u1", "u2"}
    assert snap.items.height == CATALOG.height  # every catalog item, sold or not
    pairs = {(r["user"], r["item"]): r for r in snap.pairs.iter_rows(named=True)}
    assert set(pairs) == {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c")}
    assert pairs["u1", "a"]["ui_log_orders"] == pytest.approx(np.log1p(2))
    assert pairs["u1", "b"]["ui_returned"] == 1.0 and pairs["u1", "a"]["ui_returned"] == 0.0
    assert pairs["u1", "a"]["ui_log_qty"] == pytest.approx(np.mean(np.log1p([2, 4])))
    # recency: u2 bought c 2 days before the cut
    assert pairs["u2", "c"]["ui_recency"] == pytest.approx(np.exp(-2 / CFG.recency_days))
    hist = dict(zip(snap.users["user"], snap.users["history"], strict=True))
    assert hist["u1"].to_list() == ["a", "b"]  # oldest first, by last purchase
    assert hist["u2"].to_list() == ["a", "c"]
    never = snap.items.filter(pl.col("item") == "h").row(0, named=True)
    assert never["i_log_buyers"] == 0.0 and never["i_log_age"] == 0.0
    a = snap.items.filter(pl.col("item") == "a").row(0, named=True)
    assert a["i_log_buyers"] == pytest.approx(np.log1p(2))
    # the events after the cut change nothing
    again = retail.snapshot(EVENTS.filter(pl.col("timestamp") < CUT), CUT, CATALOG, CFG)
    assert again.pairs.equals(snap.pairs) and again.items.equals(snap.items)


def test_window_labels() -> None:
    lab = retail.window_labels(EVENTS, CUT, END)
    rows = {(r["user"], r["item"]): r for r in lab.iter_rows(named=True)}
    assert set(rows) == {("u1", "a"), ("u1", "d"), ("u2", "c"), ("u3", "e")}
    assert rows["u1", "a"]["quantity"] == 12.0
    assert rows["u1", "d"]["return"] == 0  # returned before it was bought in the window
    assert rows["u2", "c"]["return"] == 1
    assert all(r["buy"] == 1 for r in rows.values())


def test_window_samples_negatives_and_features() -> None:
    rows, snap = retail.window_samples(EVENTS, CUT, END, CATALOG, CFG, seed=0)
    pos = rows.filter(pl.col("buy") == 1)
    neg = rows.filter(pl.col("buy") == 0)
    assert pos.height == 4
    assert not rows.select("user", "item").is_duplicated().any()
    # u1's past item b was not bought again: a history negative; u2's a likewise
    keys = set(zip(neg["user"], neg["item"], strict=True))
    assert {("u1", "b"), ("u2", "a")} <= keys
    # uniform negatives are never items the user bought before or in the window
    past = set(zip(snap.pairs["user"], snap.pairs["item"], strict=True))
    uniform = keys - past
    assert all(k not in set(zip(pos["user"], pos["item"], strict=True)) for k in uniform)
    assert 0 < len(uniform) <= 3 * 3  # at most n_negatives per buyer (3 buyers)
    assert neg["quantity"].sum() == 0 and neg["return"].sum() == 0
    # features come from before the window: u1 bought d only in the window
    d = rows.filter((pl.col("user") == "u1") & (pl.col("item") == "d")).row(0, named=True)
    assert d["ui_log_orders"] == 0.0
    # the new user gets their country from the window's events and zero history features
    u3 = rows.filter(pl.col("user") == "u3").row(0, named=True)
    assert u3["country"] == "France" and u3["u_log_orders"] == 0.0
    assert rows.null_count().select(pl.all().sum()).row(0) == (0,) * rows.width


@pytest.fixture
def encoded() -> tuple[retail.RetailEncoder, list, retail.SequenceData]:
    windows = [retail.window_samples(EVENTS, CUT, END, CATALOG, CFG, seed=0)]
    enc = retail.RetailEncoder(CFG).fit(windows)
    return enc, windows, enc.transform(windows)


def test_encoder_gathers_history_per_batch(encoded) -> None:
    enc, windows, data = encoded
    rows, snap = windows[0]
    specs = {f.name: f for f in enc.feature_specs()}
    assert specs["history"].embedding_of == "item"
    assert specs["history"].vocab_size == specs["item"].vocab_size
    batch = next(data.batches(len(data)))
    assert batch["history"].shape == (len(data), CFG.max_history)
    table = enc.history_table(snap, rows["user"])
    assert torch.equal(batch["history"], table)
    u1 = table[rows["user"].to_list().index("u1")]
    assert u1.tolist() == enc.encoder_.ids("item").encode(["a", "b"]).tolist()  # left-padded
    u3 = table[rows["user"].to_list().index("u3")]
    assert u3.tolist() == [0, 0]
    shuffled = next(data.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert shuffled["history"].shape == (4, CFG.max_history)
    sub = data.subset(torch.tensor([0, 2]))
    assert torch.equal(next(sub.batches(2))["history"], table[[0, 2]])


def test_score_users_matches_rows_and_corrects_sampling(encoded) -> None:
    enc, windows, data = encoded
    rows, snap = windows[0]
    torch.manual_seed(0)
    model = build_model("mmoe", enc.feature_specs(), retail.task_specs(CFG), n_experts=2)
    users = ["u1", "u2", "u3"]
    items = CATALOG["item"].sort()
    raw = enc.score_users(model, snap, users, items, country_events=EVENTS, correct_sampling=False)
    assert raw["buy"].shape == (3, 8) and set(raw) == {"buy", "return", "quantity"}
    preds = predict(model, data)
    for k, (u, i) in enumerate(zip(rows["user"], rows["item"], strict=True)):
        assert raw["buy"][users.index(u), items.to_list().index(i)] == pytest.approx(
            float(preds["buy"][k]), abs=1e-6
        )
    fixed = enc.score_users(model, snap, users, items, country_events=EVENTS)
    # u1 bought a and b before: unchanged; every other item is scaled by its inclusion rate
    past = [0, 1]
    np.testing.assert_allclose(fixed["buy"][0, past], raw["buy"][0, past], rtol=1e-6)
    p, r = raw["buy"][0, 2:].astype(np.float64), retail.inclusion_rates(snap, CFG)[2:]
    np.testing.assert_allclose(fixed["buy"][0, 2:], p * r / (p * r + 1 - p), rtol=1e-5)
    np.testing.assert_allclose(fixed["return"], raw["return"])


def test_negative_draws_follow_their_distribution() -> None:
    snap = retail.snapshot(EVENTS, CUT, CATALOG, CFG)
    q = retail.negative_distribution(snap, CFG)
    assert q.sum() == pytest.approx(1.0)
    assert q[2] > q[7]  # c has a recent buyer, h none
    uniform = retail.negative_distribution(snap, retail.RetailConfig(popular_negatives=0.0))
    np.testing.assert_allclose(uniform, 1 / 8)
    r = retail.inclusion_rates(snap, CFG)
    np.testing.assert_allclose(r, 1 - (1 - q) ** CFG.n_negatives)
    # empirical inclusion of a never-bought item in one buyer's draws matches the rate
    cfg = retail.RetailConfig(n_negatives=3, history_negatives=False)
    hits = np.zeros(8)
    for seed in range(300):
        rows, _ = retail.window_samples(EVENTS, CUT, END, CATALOG, cfg, seed=seed, snap=snap)
        got = rows.filter((pl.col("user") == "u3") & (pl.col("buy") == 0))["item"].to_list()
        hits[[CATALOG["item"].to_list().index(i) for i in got]] += 1
    np.testing.assert_allclose(hits[np.r_[0:4, 5:8]] / 300, r[np.r_[0:4, 5:8]], atol=0.1)


def test_masked_tasks_train_and_validate(encoded) -> None:
    enc, _, data = encoded
    torch.manual_seed(0)
    tasks = retail.task_specs(retail.RetailConfig(quantity_loss="poisson"))
    assert [t.weight_key for t in tasks] == [None, "buy", "buy"]
    model = build_model("ple", enc.feature_specs(), tasks, n_levels=1)
    res = fit(
        model,
        data,
        config=TrainConfig(epochs=2, batch_size=8, progress=False),
        evaluator=lambda m: retail.task_scores(m, data),
    )
    assert {"buy/auc", "return/auc", "quantity/r2_log1p", "mean"} <= set(res.best_scores)
    assert np.isfinite(res.best_scores["mean"])
    # a masked row's label does not matter
    batch = next(data.batches(len(data)))
    out = model(batch)
    noisy = dict(batch, quantity=torch.where(batch["buy"] > 0, batch["quantity"], 1e6))
    assert torch.equal(
        model.task_losses(out, batch)["quantity"], model.task_losses(out, noisy)["quantity"]
    )


def test_baselines() -> None:
    snap = retail.snapshot(EVENTS, CUT, CATALOG, CFG)
    items = CATALOG["item"]
    pop = retail.popularity_scores(snap, items)
    assert pop.argmax() == 0  # a: two buyers
    recent = retail.popularity_scores(snap, items, recent=True)
    assert recent[2] > recent[7]  # c bought 2 days before the cut, h never
    s = retail.repeat_scores(snap, ["u1", "u9"], items, recent)
    assert list(np.argsort(-s[0])[:2]) == [0, 1]  # u1's past items, a (2 orders) first
    assert s[0, 0] > s[0, 1] > s[0, 2:].max()
    np.testing.assert_array_equal(
        np.argsort(-s[1], kind="stable"), np.argsort(-recent, kind="stable")
    )
    rows, _ = retail.window_samples(EVENTS, CUT, END, CATALOG, CFG)
    q = retail.mean_quantity(rows, pl.DataFrame({"item": ["a", "zzz"]}), "item")
    assert q.tolist() == [12.0, pytest.approx(rows.filter(pl.col("buy") == 1)["quantity"].mean())]
    g = retail.mean_quantity(rows, pl.DataFrame({"item": ["a"]}), "item", log_scale=True)
    assert g[0] == pytest.approx(12.0)
    rate = retail.item_return_rate(snap, pl.DataFrame({"item": ["b", "a"]}))
    assert rate[0] > rate[1]


def test_snapshot_keeps_the_shop_wide_rates() -> None:
    snap = retail.snapshot(EVENTS, CUT, CATALOG, CFG)
    buys = EVENTS.filter((pl.col("timestamp") < CUT) & (pl.col("behavior") == "buy"))
    assert snap.global_log_qty == pytest.approx(np.log1p(buys["quantity"].to_numpy()).mean())
    assert snap.global_return_rate == pytest.approx(1 / 5)  # one return, five buy lines
    # given rates replace the computed ones (a few users' events, live updates)
    only_u1 = retail.snapshot(
        EVENTS.filter(pl.col("user") == "u1"), CUT, CATALOG, CFG, global_rates=(0.5, 0.25)
    )
    assert (only_u1.global_log_qty, only_u1.global_return_rate) == (0.5, 0.25)
    u1 = snap.users.filter(pl.col("user") == "u1")
    assert only_u1.users.filter(pl.col("user") == "u1")["u_return_rate"].item() == pytest.approx(
        (1 + CFG.return_prior * 0.25) / (3 + CFG.return_prior)
    )
    assert u1["u_return_rate"].item() == pytest.approx((1 + CFG.return_prior * 0.2) / (3 + 20))


def test_live_events_update_only_their_users() -> None:
    snap = retail.snapshot(EVENTS, CUT, CATALOG, CFG)
    past = EVENTS.filter(pl.col("timestamp") < CUT).select(retail.PAST_COLUMNS)
    live = pl.DataFrame(
        {
            "user": ["u1", "u9", "u1", "u2"],
            "item": ["d", "a", "b", "a"],
            "behavior": ["buy", "buy", "return", "view"],
            "quantity": [3, None, 1, 1],
            "domain": ["Germany", "Germany", None, None],
        }
    )
    new = retail.with_live_events(snap, past, live, CFG)
    pairs = {(r["user"], r["item"]): r for r in new.pairs.iter_rows(named=True)}
    d = pairs["u1", "d"]
    assert d["ui_log_orders"] == pytest.approx(np.log1p(1))
    assert d["ui_log_qty"] == pytest.approx(np.log1p(3))
    assert d["ui_recency"] == pytest.approx(1.0, abs=1e-6)
    assert pairs["u1", "b"]["ui_returned"] == 1.0
    users = {r["user"]: r for r in new.users.iter_rows(named=True)}
    assert users["u1"]["history"] == ["b", "d"]  # max_history 2, the live buy last
    assert users["u1"]["u_log_orders"] == pytest.approx(np.log1p(4))
    assert users["u1"]["country"] == "UK"  # the snapshot's country wins over the event's
    assert users["u9"]["country"] == "Germany" and users["u9"]["history"] == ["a"]
    assert pairs["u9", "a"]["ui_log_qty"] == pytest.approx(np.log1p(1))  # null quantity: 1
    # a view changes nothing; u2 keeps every feature; items and shop-wide rates stay
    for table, key in ((new.users, ["user"]), (new.pairs, ["user", "item"])):
        old = (snap.users if table is new.users else snap.pairs).filter(pl.col("user") == "u2")
        assert table.filter(pl.col("user") == "u2").sort(key).equals(old.sort(key))
    assert new.items.equals(snap.items) and new.cutoff == snap.cutoff
    assert new.global_return_rate == snap.global_return_rate
    views = live.filter(pl.col("behavior") == "view")
    assert retail.with_live_events(snap, past, views, CFG) is snap


def test_encoder_state_round_trip(encoded) -> None:
    enc, windows, data = encoded
    again = retail.RetailEncoder.from_dict(enc.to_dict())
    assert again.cfg == enc.cfg
    redo = again.transform(windows)
    for k, v in data.columns.items():
        assert torch.equal(redo.columns[k], v), k
    with pytest.raises(ValueError, match="retail encoder"):
        retail.RetailEncoder.from_dict({"format": "other"})


def test_pair_batch_is_what_score_users_scores(encoded) -> None:
    enc, windows, _ = encoded
    _, snap = windows[0]
    torch.manual_seed(0)
    model = build_model("mmoe", enc.feature_specs(), retail.task_specs(CFG), n_experts=2)
    users, items = ["u2", "u1", "u2"], ["c", "a", "h"]
    batch = enc.pair_batch(snap, users, items)
    assert batch["history"].shape == (9, CFG.max_history)
    raw = enc.score_users(model, snap, users, items, correct_sampling=False, batch_rows=4)
    np.testing.assert_allclose(
        model.predict(batch)["buy"].numpy().reshape(3, 3), raw["buy"], rtol=1e-6
    )
    np.testing.assert_array_equal(raw["buy"][0], raw["buy"][2])  # a repeated user
    empty = enc.score_users(model, snap, [], items)
    assert empty["buy"].shape == (0, 3)
