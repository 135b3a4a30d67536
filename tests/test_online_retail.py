"""Tests for the UCI Online Retail loader.

The first group builds a tiny file in ``tmp_path`` that holds one line per data-quality case
and always runs; the second reads the real files (skipped when ``SHOPREC_DATA`` is absent)
and pins the exact counts observed, so a change in the cleaning rules shows up here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from shoprec.data.datasets import online_retail
from shoprec.data.schema import Dataset
from shoprec.errors import DatasetNotFoundError

T0 = datetime(2011, 3, 1, 10, 0)


def _line(
    desc: str | None,
    qty: int,
    minutes: int,
    price: float,
    customer: float | None,
    country: str = "United Kingdom",
) -> dict[str, object]:
    return {
        "Description": desc,
        "Quantity": qty,
        "InvoiceDate": T0 + timedelta(minutes=minutes),
        "UnitPrice": price,
        "CustomerID": customer,
        "Country": country,
    }


TINY_LINES = [
    _line("WHITE MUG ", 6, 0, 2.0, 1.0),  # kept (trailing space stripped)
    _line(" WHITE  MUG", 3, 5, 2.5, 2.0, "France"),  # kept, same item as the first
    _line("WHITE MUG", 2, 6, 2.5, None),  # guest
    _line("POSTAGE", 1, 7, 18.0, 1.0),  # non-product
    _line(None, 5, 8, 0.0, None),  # missing description
    _line("RED MUG", 4, 9, 0.0, 1.0),  # zero price
    _line("BIG JAR", 100, 10, 1.0, 3.0),  # cancelled pair ...
    _line("BIG JAR", -100, 20, 1.0, 3.0),  # ... 10 minutes later
    _line("WHITE MUG", -6, 3 * 24 * 60, 2.0, 1.0),  # a real return, 3 days later: kept
    _line("BOX", 5, 30, 3.0, 4.0),  # one purchase ...
    _line("BOX", -5, 31, 3.0, 4.0),  # ... cancelled: pair
    _line("BOX", -5, 32, 3.0, 4.0),  # ... a second cancellation has no purchase left: kept
]


@pytest.fixture
def tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "online_retail"
    folder.mkdir()
    frame = pl.DataFrame(
        TINY_LINES,
        schema={
            "Description": pl.String,
            "Quantity": pl.Int32,
            "InvoiceDate": pl.Datetime("ns"),
            "UnitPrice": pl.Float64,
            "CustomerID": pl.Float64,
            "Country": pl.String,
        },
    )
    frame.write_parquet(folder / online_retail.FILE)
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    return folder


def test_tiny_file_each_rule(tiny_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=online_retail.__name__):
        ds = online_retail.load()
    df = ds.interactions.df
    assert ds.raw_rows == len(TINY_LINES)
    assert ds.dropped.to_dict() == {
        "missing_description": 1,
        "guest": 1,
        "non_product": 1,
        "non_positive_price": 1,
        "cancelled_order_pair": 4,
    }
    assert len(df) + ds.dropped.total == ds.raw_rows
    assert df.select("user", "item", "behavior", "quantity").rows() == [
        ("1", "WHITE MUG", "buy", 6),
        ("2", "WHITE MUG", "buy", 3),
        ("1", "WHITE MUG", "return", 6),
        ("4", "BOX", "return", 5),
    ]
    assert df["domain"].to_list() == [
        "United Kingdom",
        "France",
        "United Kingdom",
        "United Kingdom",
    ]
    assert ds.catalog is not None
    assert ds.catalog.df.select("item", "title", "price").rows() == [
        ("BOX", "BOX", 3.0),
        ("WHITE MUG", "WHITE MUG", 2.0),
    ]
    dropped_lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped_lines) == len(ds.dropped.counts)
    assert any("cancelled_order_pair" in line for line in dropped_lines)


def test_tiny_file_guests_and_countries(tiny_data: Path) -> None:
    with_guests = online_retail.load(include_guests=True)
    guests = with_guests.interactions.df.filter(pl.col("user").str.starts_with("guest:"))
    assert guests["user"].to_list() == ["guest:United Kingdom:2011-03-01 10:06"]
    assert "guest" not in with_guests.dropped.counts

    france = online_retail.load(countries=["France"])
    assert france.interactions.df["domain"].unique().to_list() == ["France"]
    assert france.dropped.counts["country_not_selected"] == 3
    assert len(france.interactions) + france.dropped.total == france.raw_rows

    with pytest.raises(ValueError, match="unknown countries"):
        online_retail.load(countries=["Atlantis"])


def test_missing_folder_names_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"archive\.ics\.uci\.edu"):
        online_retail.load()


# ---- the real files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail(real_data: Path) -> Dataset:
    return online_retail.load()


@pytest.fixture(scope="module")
def retail_codes(real_data: Path) -> Dataset:
    return online_retail.load_with_codes()


@pytest.mark.real_data
def test_counts(retail: Dataset) -> None:
    df = retail.interactions.df
    assert retail.raw_rows == 541_909
    assert retail.dropped.to_dict() == {
        "missing_description": 1_454,
        "guest": 133_626,
        "non_product": 2_019,
        "non_positive_price": 33,
        "cancelled_order_pair": 1_260,
    }
    assert len(df) == 403_517
    assert len(df) + retail.dropped.total == retail.raw_rows
    assert dict(df["behavior"].value_counts().iter_rows()) == {"buy": 395_611, "return": 7_906}
    assert df["user"].n_unique() == 4_361
    assert df["item"].n_unique() == 3_865
    assert df["domain"].n_unique() == 37  # Hong Kong has only guest lines


@pytest.mark.real_data
def test_values_are_clean(retail: Dataset) -> None:
    df = retail.interactions.df
    assert df["user"].null_count() == 0
    assert df["item"].null_count() == 0
    assert df["timestamp"].null_count() == 0
    assert set(df["behavior"].unique()) <= {"buy", "return"}
    assert df["quantity"].min() > 0
    assert df["price"].min() > 0
    assert df["user"].str.contains(r"^\d+$").all()  # "17850", not "17850.0"
    assert not df["item"].str.contains(r"^\s|\s$|\s\s").any()
    assert not df["item"].is_in(list(online_retail.NON_PRODUCT_DESCRIPTIONS)).any()
    assert df["quantity"].max() < 10_000  # both huge cancelled orders are gone
    assert df.filter(pl.col("quantity").is_in([80_995, 74_215])).height == 0
    birdie = df.filter(pl.col("item") == "PAPER CRAFT , LITTLE BIRDIE")
    assert birdie.height == 0
    # a return months after the purchase is a real return and is kept
    flannel = df.filter(pl.col("user") == "15749", pl.col("item").str.starts_with("FAIRY CAKE"))
    assert flannel["behavior"].to_list() == ["buy", "return", "buy"]


@pytest.mark.real_data
def test_catalog_covers_items(retail: Dataset) -> None:
    assert retail.catalog is not None
    cat = retail.catalog.df
    assert cat.height == 3_865
    assert set(cat["item"]) == set(retail.interactions.df["item"])
    assert (cat["title"] == cat["item"]).all()
    assert cat["price"].null_count() == 0
    assert cat["price"].min() > 0
    assert cat["category"].null_count() == cat.height
    heart = cat.filter(pl.col("item") == "WHITE HANGING HEART T-LIGHT HOLDER")
    assert heart["price"].to_list() == [2.95]
    assert retail.meta["source"] == online_retail.SOURCE


@pytest.mark.real_data
def test_guests_and_countries(real_data: Path) -> None:
    ds = online_retail.load(include_guests=True)
    df = ds.interactions.df
    assert len(df) == 535_100
    assert len(df) + ds.dropped.total == 541_909
    assert "guest" not in ds.dropped.counts
    assert df["domain"].n_unique() == 38
    assert df["user"].null_count() == 0

    two = online_retail.load(countries=["Germany", "France"])
    assert set(two.interactions.df["domain"].unique()) == {"Germany", "France"}
    assert len(two.interactions) == 17_209
    assert len(two.interactions) + two.dropped.total == 541_909


@pytest.mark.real_data
def test_codes_file(retail_codes: Dataset) -> None:
    df = retail_codes.interactions.df
    assert retail_codes.raw_rows == 240_007
    assert retail_codes.dropped.to_dict() == {
        "missing_description": 901,
        "guest": 66_324,
        "non_product": 857,
        "non_positive_price": 13,
        "cancelled_order_pair": 516,
    }
    assert len(df) + retail_codes.dropped.total == retail_codes.raw_rows
    assert dict(df["behavior"].value_counts().iter_rows()) == {"buy": 167_710, "return": 3_686}
    cancelled = df["invoice"].str.starts_with("C")
    assert (cancelled == (df["behavior"] == "return")).all()
    assert df["timestamp"].min() == datetime(2010, 12, 1, 8, 26)
    assert df["timestamp"].max() == datetime(2011, 6, 26, 10, 59)
    assert df["quantity"].max() < 10_000  # the +74,215 / -74,215 jar order is gone
    assert df["item"].str.to_uppercase().equals(df["item"])  # 85123a and 85123A are one
    assert retail_codes.catalog is not None
    cat = retail_codes.catalog.df
    assert set(cat["item"]) == set(df["item"])
    assert cat.filter(pl.col("item") == "85123A")["title"].to_list() == [
        "WHITE HANGING HEART T-LIGHT HOLDER"
    ]
