"""The generic loader for a shop's own CSV/Parquet logs, and its errors on bad input."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shoprec.data.datasets.custom import FileSpec, load_config, load_files
from shoprec.errors import DataError

COLUMNS = {"user": "cust", "item": "sku", "timestamp": "ts", "behavior": "event", "quantity": "qty"}
BEHAVIORS = {"pageview": "view", "addtocart": "cart", "transaction": "buy"}
GOOD = (
    "cust,sku,ts,event,qty\n"
    "1,a,2024-01-01 10:00:00,pageview,1\n"
    "1,a,2024-01-01 10:05:00,addtocart,1\n"
    "2,b,2024-01-02 11:00:00,transaction,2\n"
)


def write(tmp_path: Path, text: str, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def spec(path: Path, **kw: object) -> FileSpec:
    return FileSpec(path, columns=kw.pop("columns", COLUMNS), behaviors=BEHAVIORS, **kw)  # type: ignore[arg-type]


def test_good_csv_maps_columns_and_behaviors(tmp_path: Path) -> None:
    ds = load_files(spec(write(tmp_path, GOOD)))
    df = ds.interactions.df
    assert df.columns[:7] == [
        "user",
        "item",
        "timestamp",
        "behavior",
        "quantity",
        "price",
        "domain",
    ]
    assert df["behavior"].to_list() == ["view", "cart", "buy"]
    assert df["quantity"].to_list() == [1, 1, 2]
    assert df["timestamp"].dtype == pl.Datetime("ms")
    assert df["domain"].unique().to_list() == ["default"]


def test_parquet_and_epoch_seconds(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pl.DataFrame({"u": [1, 2], "i": ["x", "y"], "t": [1_700_000_000, 1_700_000_060]}).write_parquet(
        path
    )
    ds = load_files(FileSpec(path, columns={"user": "u", "item": "i", "timestamp": "t"}))
    df = ds.interactions.df
    assert df["user"].to_list() == ["1", "2"]
    assert df["behavior"].to_list() == ["buy", "buy"]  # the default behavior
    assert str(df["timestamp"][0]) == "2023-11-14 22:13:20"


@pytest.mark.parametrize(
    ("text", "column", "row", "words"),
    [
        ("cust,ts,event,qty\n1,2024-01-01,pageview,1\n", "sku", None, "no such column"),
        (GOOD + "3,c,yesterday,pageview,1\n", "ts", 3, "unparseable timestamp"),
        (GOOD + "3,c,2024-01-03 00:00:00,pageview,two\n", "qty", 3, "expected Int64"),
        (GOOD + "3,c,2024-01-03 00:00:00,pageview,1.5\n", "qty", 3, "expected Int64"),
        (GOOD + ",c,2024-01-03 00:00:00,pageview,1\n", "cust", 3, "empty user id"),
        (GOOD + "3,c,2024-01-03 00:00:00,wishlist,1\n", "event", 3, "unknown behavior"),
    ],
)
def test_bad_input_names_file_column_and_row(
    tmp_path: Path, text: str, column: str, row: int | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_files(spec(path), on_bad_rows="refuse")
    err = info.value
    assert err.file == str(path)
    assert err.column == column
    assert err.row == row
    assert words in str(err)
    assert str(path) in str(err)


def test_empty_id_is_dropped_and_counted_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + ",c,2024-01-03 00:00:00,pageview,1\n")
    ds = load_files(spec(path))
    assert len(ds.interactions) == 3
    assert ds.dropped.to_dict() == {"empty user id": 1}
    assert ds.raw_rows == 4


def test_missing_required_column_without_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "user,when\n1,2024-01-01\n")
    with pytest.raises(DataError) as info:
        load_files(FileSpec(path))
    assert info.value.column == "item"
    assert "required events column 'item' is missing" in str(info.value)
    assert "['user', 'when']" in str(info.value)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = write(tmp_path, "", "empty.csv")
    with pytest.raises(DataError, match="empty"):
        load_files(spec(empty))
    header = write(tmp_path, "cust,sku\n", "header.csv")
    with pytest.raises(DataError, match="no data rows"):
        load_files(spec(header))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_files(spec(tmp_path / "nope.csv"))


def test_yaml_config_with_catalog_and_users(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    write(tmp_path, "sku,name,price\na,Red mug,3.5\nb,Blue cup,4\n", "products.csv")
    write(tmp_path, "cust,age\n1,30\n2,41\n", "users.csv")
    cfg = tmp_path / "shop.yaml"
    cfg.write_text(
        "name: myshop\n"
        "events:\n  path: events.csv\n"
        "  columns: {user: cust, item: sku, timestamp: ts, behavior: event, quantity: qty}\n"
        "  behaviors: {pageview: view, addtocart: cart, transaction: buy}\n"
        "catalog:\n  path: products.csv\n  columns: {item: sku, title: name}\n"
        "users:\n  path: users.csv\n  columns: {user: cust}\n"
    )
    ds = load_config(cfg)
    assert ds.name == "myshop"
    assert len(ds.interactions) == 3
    assert ds.catalog is not None and ds.catalog.df["title"].to_list() == ["Red mug", "Blue cup"]
    assert ds.catalog.df["price"].to_list() == [3.5, 4.0]
    assert ds.users is not None and ds.users.attributes == ["age"]


def test_bad_catalog_price_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "sku,price\na,3.5\nb,cheap\n", "products.csv")
    write(tmp_path, GOOD)
    with pytest.raises(DataError) as info:
        load_files(
            spec(tmp_path / "events.csv"),
            catalog=FileSpec(tmp_path / "products.csv", columns={"item": "sku"}),
        )
    assert info.value.column == "price" and info.value.row == 1
