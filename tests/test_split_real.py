"""Splits on the real datasets leak nothing."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shoprec.data import datasets
from shoprec.data.split import check_no_leakage, cold_item_split, given_split, time_split

pytestmark = pytest.mark.real_data


def test_online_retail_last_month_time_split(real_data: Path) -> None:
    ds = datasets.load("online_retail")
    split = time_split(ds.interactions, test_days=30, valid_days=30)
    check_no_leakage(split)
    assert split.valid is not None
    assert split.train.df["timestamp"].max() < split.valid.df["timestamp"].min()
    assert split.valid.df["timestamp"].max() < split.test.df["timestamp"].min()
    total = len(split.train) + len(split.valid) + len(split.test)
    assert total == len(ds.interactions)


def test_amazon_games_cold_items_absent_from_train(real_data: Path) -> None:
    ds = datasets.load("amazon_games")
    split = cold_item_split(ds.interactions, frac=0.1, seed=0)
    check_no_leakage(split)
    assert split.cold_items is not None
    train_items = split.train.df["item"].unique()
    assert not split.cold_items.is_in(train_items.implode()).any()
    assert set(split.test.df["item"].unique().to_list()) == set(split.cold_items.to_list())
    n_items = ds.interactions.df["item"].n_unique()
    assert abs(len(split.cold_items) - 0.1 * n_items) <= 1


def test_tmall_given_buy_test_not_in_buy_train(real_data: Path) -> None:
    ds = datasets.load("tmall")
    split = given_split(ds)
    buy_test = split.test.of("buy").df.select("user", "item")
    buy_train = split.train.of("buy").df.select("user", "item")
    assert buy_test.join(buy_train, on=["user", "item"], how="inner").height == 0
    assert buy_test.height == 15_449
    assert buy_test["user"].n_unique() == 15_449
    # every test user and item is known from training (the release's own guarantee)
    assert buy_test["user"].is_in(split.train.df["user"].unique().implode()).all()
    assert isinstance(buy_test, pl.DataFrame)
