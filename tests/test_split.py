"""Splitters: exact boundaries, stable per-user order, no leakage, seeded cold splits."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from shoprec.data.schema import Dataset, Interactions
from shoprec.data.split import (
    LeakageError,
    Split,
    check_no_leakage,
    cold_item_split,
    cold_user_split,
    given_split,
    leave_last_out,
    random_split,
    time_split,
)
from shoprec.errors import DataError

T0 = datetime(2024, 1, 1)


def _inter(rows: list[tuple], cols: tuple[str, ...] = ("user", "item", "behavior", "timestamp")):
    return Interactions.from_frame(pl.DataFrame(rows, schema=list(cols), orient="row"))


def _synthetic(n_users: int = 60, n_items: int = 40, n: int = 3000, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    behaviors = np.array(["view", "click", "cart", "buy"])
    df = pl.DataFrame(
        {
            "user": [f"u{i}" for i in rng.integers(0, n_users, n)],
            "item": [f"i{i}" for i in rng.integers(0, n_items, n)],
            "behavior": behaviors[rng.integers(0, 4, n)],
            "timestamp": [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 24 * 60, n)],
            "domain": np.where(rng.random(n) < 0.5, "books", "toys"),
        }
    )
    return Interactions.from_frame(df)


def _keys(df: pl.DataFrame) -> set[tuple]:
    return set(df.select("user", "item", "behavior", "timestamp").iter_rows())


# --------------------------------------------------------------------------- time_split


def test_time_split_boundaries_are_exact() -> None:
    times = [T0 + timedelta(days=d) for d in range(10)]
    inter = _inter([(f"u{d % 3}", f"i{d}", "view", t) for d, t in enumerate(times)])
    split = time_split(inter, test_start=T0 + timedelta(days=8), valid_start=T0 + timedelta(days=6))
    assert split.train.df["timestamp"].to_list() == times[:6]
    assert split.valid is not None
    assert split.valid.df["timestamp"].to_list() == times[6:8]  # valid_start itself is valid
    assert split.test.df["timestamp"].to_list() == times[8:]  # test_start itself is test
    check_no_leakage(split)
    assert split.summary()["test"]["rows"] == 2


def test_time_split_trailing_days() -> None:
    times = [T0 + timedelta(days=d) for d in range(10)]  # last event at day 9
    inter = _inter([("u", f"i{d}", "view", t) for d, t in enumerate(times)])
    split = time_split(inter, test_days=2, valid_days=3)
    assert split.test_start == T0 + timedelta(days=7)
    assert split.valid_start == T0 + timedelta(days=4)
    assert len(split.test) == 3 and len(split.valid) == 3 and len(split.train) == 4  # type: ignore[arg-type]
    no_valid = time_split(inter, test_start="2024-01-09")
    assert no_valid.valid is None and len(no_valid.test) == 2


def test_time_split_without_timestamps_is_a_clear_error() -> None:
    inter = _inter([("u", "a", "view"), ("u", "b", "view")], ("user", "item", "behavior"))
    with pytest.raises(DataError, match="timestamp"):
        time_split(inter, test_days=1)


def test_time_split_partial_null_timestamps() -> None:
    inter = _inter(
        [
            ("u", "a", "view", T0),
            ("u", "b", "view", None),
            ("u", "c", "view", T0 + timedelta(days=5)),
        ]
    )
    with pytest.raises(DataError, match="no timestamp"):
        time_split(inter, test_days=1)
    split = time_split(inter, test_days=1, null_timestamps="train")
    assert split.train.df["item"].to_list() == ["a", "b"]
    split = time_split(inter, test_days=1, null_timestamps="drop")
    assert split.train.df["item"].to_list() == ["a"] and split.dropped == 1


# --------------------------------------------------------------------------- leave_last_out


def test_leave_last_out_picks_last_by_time_and_is_stable() -> None:
    rows = [
        ("u1", "late", "buy", T0 + timedelta(days=5)),  # latest event, first row
        ("u1", "early", "buy", T0),
        ("u1", "tie_a", "buy", T0 + timedelta(days=3)),  # ties: row order decides
        ("u1", "tie_b", "buy", T0 + timedelta(days=3)),
        ("u2", "x", "buy", T0),
        ("u2", "y", "buy", T0 + timedelta(days=1)),
    ]
    inter = _inter(rows)
    split = leave_last_out(inter, n_test=1, n_valid=1, min_history=1)
    assert split.test.df.select("user", "item").rows() == [("u1", "late")]
    assert split.valid is not None
    assert split.valid.df.select("user", "item").rows() == [("u1", "tie_b")]
    # u2 has 2 events: holding out 2 would leave no history, so u2 stays wholly in train
    assert split.train.df.select("user", "item").rows() == [
        ("u1", "early"),
        ("u1", "tie_a"),
        ("u2", "x"),
        ("u2", "y"),
    ]
    check_no_leakage(split)
    # ties follow row order: swapping the two tied rows swaps which one is held out
    swapped = _inter([rows[0], rows[1], rows[3], rows[2], *rows[4:]])
    again = leave_last_out(swapped, n_test=1, n_valid=1)
    assert again.valid.df["item"].to_list() == ["tie_a"]  # type: ignore[union-attr]
    # and the result does not depend on where other users' rows sit
    moved = _inter([*rows[4:], *rows[:4]])
    assert leave_last_out(moved).valid.df["item"].to_list() == ["tie_b"]  # type: ignore[union-attr]


def test_leave_last_out_behavior_and_future() -> None:
    rows = [
        ("u", "a", "view", T0),
        ("u", "b", "buy", T0 + timedelta(days=1)),
        ("u", "c", "view", T0 + timedelta(days=2)),
        ("u", "d", "buy", T0 + timedelta(days=3)),
        ("u", "e", "view", T0 + timedelta(days=4)),  # after the test buy: future
    ]
    inter = _inter(rows)
    split = leave_last_out(inter, behavior="buy", n_valid=1)
    assert split.test.df["item"].to_list() == ["d"]
    assert split.valid.df["item"].to_list() == ["b"]  # type: ignore[union-attr]
    assert split.train.df["item"].to_list() == ["a", "c"]
    assert split.dropped == 1
    kept = leave_last_out(inter, behavior="buy", n_valid=0, future="train")
    assert kept.valid is None
    assert kept.train.df["item"].to_list() == ["a", "b", "c", "e"]


def test_leave_last_out_without_timestamps_uses_row_order() -> None:
    inter = _inter(
        [("u", "a", "view"), ("v", "z", "view"), ("u", "b", "view"), ("u", "c", "view")],
        ("user", "item", "behavior"),
    )
    split = leave_last_out(inter, n_valid=1, min_history=1)
    assert split.test.df["item"].to_list() == ["c"]
    assert split.valid.df["item"].to_list() == ["b"]  # type: ignore[union-attr]
    assert split.train.df["item"].to_list() == ["a", "z"]


def test_leave_last_out_min_history() -> None:
    inter = _inter([("u", "a", "buy", T0), ("u", "b", "buy", T0 + timedelta(days=1))])
    with pytest.raises(DataError, match="no test events"):
        leave_last_out(inter, n_valid=0, min_history=2)
    split = leave_last_out(inter, n_valid=0, min_history=1)
    assert split.test.df["item"].to_list() == ["b"]


def test_no_test_interaction_in_train() -> None:
    inter = _synthetic()
    for split in (
        leave_last_out(inter, behavior="buy"),
        leave_last_out(inter, n_test=2, n_valid=2),
        time_split(inter, test_days=10, valid_days=10),
        random_split(inter, (0.7, 0.15, 0.15), seed=3),
    ):
        check_no_leakage(split)
        assert not (_keys(split.test.df) & _keys(split.train.df))
        total = sum(len(p) for p in split.parts().values()) + split.dropped
        assert total == len(inter)


def test_duplicate_of_held_out_event_is_removed_from_train() -> None:
    rows = [("u", "a", "view", T0), ("u", "b", "buy", T0 + timedelta(days=1))] * 2
    split = leave_last_out(_inter(rows), n_valid=0)
    assert split.test.df["item"].to_list() == ["b"]
    assert split.train.df["item"].to_list() == ["a", "a"]
    check_no_leakage(split)


def test_check_no_leakage_catches_leaks() -> None:
    inter = _synthetic()
    split = time_split(inter, test_days=10)
    leaky = Split(
        Interactions(pl.concat([split.train.df, split.test.df.head(3)])), None, split.test
    )
    with pytest.raises(LeakageError, match="3 test events also appear in train"):
        check_no_leakage(leaky)
    cold = cold_item_split(inter, frac=0.2)
    bad = Split(inter, None, cold.test, kind="cold_item", cold_items=cold.cold_items)
    with pytest.raises(LeakageError, match="cold"):
        check_no_leakage(bad)


# --------------------------------------------------------------------------- cold splits


def test_cold_items_absent_from_train_and_present_in_test() -> None:
    inter = _synthetic()
    split = cold_item_split(inter, frac=0.2, seed=7, valid_frac=0.1)
    check_no_leakage(split)
    cold = set(split.cold_items.to_list())  # type: ignore[union-attr]
    assert len(cold) == 12  # 20% + 10% of 40 items
    train_items = set(split.train.df["item"].to_list())
    test_items = set(split.test.df["item"].to_list())
    valid_items = set(split.valid.df["item"].to_list())  # type: ignore[union-attr]
    assert not train_items & cold
    assert len(test_items) == 8 and len(valid_items) == 4
    assert test_items | valid_items == cold and not test_items & valid_items
    # every event of a held-out item is in test/valid
    n_cold = inter.df.filter(pl.col("item").is_in(list(cold))).height
    assert len(split.test) + len(split.valid) == n_cold  # type: ignore[arg-type]


def test_cold_splits_are_deterministic_by_seed() -> None:
    inter = _synthetic()
    a = cold_item_split(inter, frac=0.25, seed=1)
    b = cold_item_split(inter, frac=0.25, seed=1)
    c = cold_item_split(inter, frac=0.25, seed=2)
    assert a.test.df.equals(b.test.df) and a.train.df.equals(b.train.df)
    assert a.cold_items.to_list() != c.cold_items.to_list()  # type: ignore[union-attr]
    # row order does not matter, only the seed and the set of items
    shuffled = Interactions(inter.df.sample(fraction=1.0, shuffle=True, seed=5))
    d = cold_item_split(shuffled, frac=0.25, seed=1)
    assert d.cold_items.to_list() == a.cold_items.to_list()  # type: ignore[union-attr]
    u1 = cold_user_split(inter, frac=0.3, seed=4)
    u2 = cold_user_split(inter, frac=0.3, seed=4)
    assert u1.test.df.equals(u2.test.df)
    r1, r2 = random_split(inter, seed=9), random_split(inter, seed=9)
    assert r1.test.df.equals(r2.test.df)
    assert not r1.test.df.equals(random_split(inter, seed=10).test.df)


def test_cold_users_absent_from_train() -> None:
    inter = _synthetic()
    split = cold_user_split(inter, frac=0.2, seed=0)
    check_no_leakage(split)
    cold = set(split.cold_users.to_list())  # type: ignore[union-attr]
    assert len(cold) == 12
    assert not set(split.train.df["user"].to_list()) & cold
    assert set(split.test.df["user"].to_list()) == cold


def test_cold_users_in_domain_keep_other_domain_history() -> None:
    inter = _synthetic()
    split = cold_user_split(inter, frac=0.25, seed=3, domain="books")
    check_no_leakage(split)
    assert split.cold_domain == "books"
    cold = split.cold_users.to_list()  # type: ignore[union-attr]
    assert split.test.df["domain"].unique().to_list() == ["books"]
    assert set(split.test.df["user"].to_list()) == set(cold)
    train_cold = split.train.df.filter(pl.col("user").is_in(cold))
    assert train_cold.height > 0
    assert train_cold["domain"].unique().to_list() == ["toys"]  # their other-domain history
    expected = inter.df.filter(pl.col("user").is_in(cold) & (pl.col("domain") == "toys")).height
    assert train_cold.height == expected
    with pytest.raises(DataError, match="garden"):
        cold_user_split(inter, domain="garden")


# --------------------------------------------------------------------------- given


def test_given_split() -> None:
    train = _inter([("u", "a", "buy", T0)])
    test = _inter([("u", "b", "buy", T0 + timedelta(days=1))])
    split = given_split(Dataset("toy", train, test=test))
    assert split.kind == "given" and split.valid is None and split.test is test
    with pytest.raises(DataError, match="ships no test"):
        given_split(Dataset("toy", train))
