"""A corpus of malformed input files: each one is refused with the one-paragraph error that
names the file, the column and the first bad row, or its bad rows are dropped and counted
under their reason, per the one policy (``on_bad_rows``, README "What the loaders accept").

Files are generated in ``tmp_path`` from the tables below; a few cases are bytes that a
table of rows cannot hold (BOM, CRLF, Latin-1, semicolons).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shoprec.data.datasets import online_retail
from shoprec.data.datasets.custom import FileSpec, load_config, load_files
from shoprec.data.datasets.releases import load_behavior_lines
from shoprec.data.schema import (
    HASH_CHARS,
    Catalog,
    Dataset,
    Interactions,
    RowChecks,
    hash_id,
    hash_user_ids,
)
from shoprec.errors import DataError
from shoprec.recommend.catalog import Catalog as ServedCatalog
from shoprec.recommend.fusion import Fusion

HEADER = "user,item,timestamp,behavior,quantity,price"
GOOD_ROWS = [
    "u1,a,2024-01-01 10:00:00,view,1,2.5",
    "u1,a,2024-01-01 10:05:00,buy,1,2.5",
    "u2,b,2024-01-02 11:00:00,cart,2,4.0",
    "u2,b,2024-01-02 11:10:00,buy,2,4.0",
    "u3,c,2024-01-03 09:00:00,view,1,1.0",
]
LONG = "x" * 1000


def events_text(*extra: str, at: int | None = None) -> str:
    """The good rows with ``extra`` rows inserted at position ``at`` (default: the end)."""
    rows = list(GOOD_ROWS)
    pos = len(rows) if at is None else at
    rows[pos:pos] = list(extra)
    return "\n".join([HEADER, *rows]) + "\n"


# ------------------------------------------------------------- rows that read but are wrong


@dataclass(frozen=True)
class BadRow:
    """An events / catalog / users file with one kind of bad row.

    ``reason`` is the key counted in ``Dataset.dropped`` under ``on_bad_rows: drop``;
    ``column`` and ``row`` are what the error names under ``on_bad_rows: refuse``.
    """

    name: str
    events: str
    reason: str
    count: int
    column: str | None
    row: int
    catalog: str | None = None
    users: str | None = None
    bad_file: str = "events.csv"
    kept_events: int | None = None  # events left after dropping (default: 5)
    value: object = None


BAD_ROWS: list[BadRow] = [
    BadRow("nan_price", events_text("u4,d,2024-01-04 10:00:00,buy,1,nan"), "price is NaN", 1,
           "price", 5),
    BadRow("nan_price_spelled_NaN", events_text("u4,d,2024-01-04 10:00:00,buy,1,NaN", at=1),
           "price is NaN", 1, "price", 1),
    BadRow("inf_price", events_text("u4,d,2024-01-04 10:00:00,buy,1,inf"),
           "price is infinite", 1, "price", 5),
    BadRow("overflowing_price", events_text("u4,d,2024-01-04 10:00:00,buy,1,1e400"),
           "price is infinite", 1, "price", 5),
    BadRow("negative_price", events_text("u4,d,2024-01-04 10:00:00,buy,1,-3.5",
                                         "u5,d,2024-01-04 10:01:00,buy,1,-1"),
           "price is negative", 2, "price", 5, value=-3.5),
    BadRow("negative_quantity_on_a_buy", events_text("u4,d,2024-01-04 10:00:00,buy,-2,3.0"),
           "quantity is negative on a non-return event", 1, "quantity", 5, value=-2),
    BadRow("zero_quantity", events_text("u4,d,2024-01-04 10:00:00,cart,0,3.0", at=2),
           "quantity is zero", 1, "quantity", 2, value=0),
    BadRow("missing_quantity", events_text("u4,d,2024-01-04 10:00:00,cart,,3.0"),
           "quantity is missing", 1, "quantity", 5),
    BadRow("duplicate_row", events_text(GOOD_ROWS[3]),
           "duplicate row (every column equal to an earlier row's)", 1, None, 5),
    BadRow("duplicate_rows_thrice", events_text(GOOD_ROWS[0], GOOD_ROWS[0]),
           "duplicate row (every column equal to an earlier row's)", 2, None, 5),
    BadRow("1000_char_user_id", events_text(f"{LONG},d,2024-01-04 10:00:00,buy,1,3.0"),
           "user id longer than 256 characters", 1, "user", 5),
    BadRow("1000_char_item_id", events_text(f"u4,{LONG},2024-01-04 10:00:00,buy,1,3.0", at=0),
           "item id longer than 256 characters", 1, "item", 0),
    BadRow("empty_user_id", events_text(",d,2024-01-04 10:00:00,buy,1,3.0"),
           "empty user id", 1, "user", 5),
    BadRow("blank_item_id", events_text('u4,"   ",2024-01-04 10:00:00,buy,1,3.0'),
           "empty item id", 1, "item", 5),
    BadRow("year_3000", events_text("u4,d,3000-01-04 10:00:00,buy,1,3.0"),
           "timestamp on or after 2100-01-01", 1, "timestamp", 5),
    BadRow("before_1970", events_text("u4,d,1969-12-31 23:00:00,buy,1,3.0", at=3),
           "timestamp before 1970-01-01", 1, "timestamp", 3),
    BadRow("catalog_nan_price", events_text(), "catalog: price is NaN", 1, "price", 1,
           catalog="item,title,price\na,Mug,2.5\nb,Cup,nan\nc,Jar,1.0\n",
           bad_file="catalog.csv"),
    BadRow("catalog_inf_price", events_text(), "catalog: price is infinite", 1, "price", 2,
           catalog="item,title,price\na,Mug,2.5\nb,Cup,4\nc,Jar,inf\n", bad_file="catalog.csv"),
    BadRow("catalog_negative_stock", events_text(), "catalog: stock is negative", 1, "stock", 0,
           catalog="item,stock\na,-4\nb,3\nc,0\n", bad_file="catalog.csv"),
    BadRow("catalog_duplicate_row", events_text(), "catalog: duplicate row", 1, None, 2,
           catalog="item,title,price\na,Mug,2.5\nb,Cup,4\nb,Cup,4\nc,Jar,1\n",
           bad_file="catalog.csv"),
    BadRow("users_empty_id", events_text(), "users: empty user id", 1, "user", 1,
           users="user,age\nu1,30\n,41\nu2,22\n", bad_file="users.csv"),
    BadRow("users_duplicate_row", events_text(), "users: duplicate row", 1, None, 2,
           users="user,age\nu1,30\nu2,22\nu2,22\n", bad_file="users.csv"),
]  # fmt: skip


def write_case(tmp_path: Path, case: BadRow) -> dict[str, FileSpec | None]:
    files: dict[str, FileSpec | None] = {"catalog": None, "users": None}
    (tmp_path / "events.csv").write_text(case.events)
    files["events"] = FileSpec(tmp_path / "events.csv")
    for kind in ("catalog", "users"):
        text = getattr(case, kind)
        if text is not None:
            (tmp_path / f"{kind}.csv").write_text(text)
            files[kind] = FileSpec(tmp_path / f"{kind}.csv")
    return files


def load(files: dict[str, FileSpec | None], on_bad_rows: str) -> Dataset:
    events = files["events"]
    assert events is not None
    return load_files(
        events, catalog=files["catalog"], users=files["users"], on_bad_rows=on_bad_rows
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("case", BAD_ROWS, ids=[c.name for c in BAD_ROWS])
def test_bad_rows_are_dropped_and_counted(
    tmp_path: Path, case: BadRow, caplog: pytest.LogCaptureFixture
) -> None:
    files = write_case(tmp_path, case)
    with caplog.at_level(logging.WARNING, logger="shoprec.data.schema"):
        ds = load(files, "drop")
    assert ds.dropped.to_dict() == {case.reason: case.count}
    warned = [r.getMessage() for r in caplog.records if case.reason in r.getMessage()]
    assert len(warned) == 1 and f"row {case.row}" in warned[0]
    assert case.bad_file in warned[0]
    if case.bad_file == "events.csv":
        assert len(ds.interactions) == (case.kept_events or 5)
        assert ds.raw_rows == len(ds.interactions) + case.count
    df = ds.interactions.df
    assert df["price"].drop_nulls().is_finite().all()
    assert (df["price"].drop_nulls() >= 0).all() and (df["quantity"] >= 1).all()
    assert df["user"].str.len_chars().max() <= 256  # type: ignore[operator]
    assert not df.filter(pl.col("timestamp").is_not_null()).is_duplicated().any()
    if ds.catalog is not None:
        price = ds.catalog.df["price"].drop_nulls()
        assert price.is_finite().all() and (price >= 0).all()
        assert (ds.catalog.df["stock"].drop_nulls() >= 0).all()
        if case.column in ("price", "stock"):  # the product stays, its bad value cleared
            assert ds.catalog.df[case.column].null_count() == 1


@pytest.mark.parametrize("case", BAD_ROWS, ids=[c.name for c in BAD_ROWS])
def test_bad_rows_are_refused_naming_file_column_and_row(tmp_path: Path, case: BadRow) -> None:
    files = write_case(tmp_path, case)
    with pytest.raises(DataError) as info:
        load(files, "refuse")
    err, text = info.value, str(info.value)
    assert err.file == str(tmp_path / case.bad_file) and err.file in text
    assert err.column == case.column
    if case.column is not None:
        assert f"column '{case.column}'" in text
    assert err.row == case.row
    assert f"first bad row {case.row} " in text and f"line {case.row + 2} of the file" in text
    assert case.reason in text and f"{case.count} row(s) like this" in text
    assert "on_bad_rows: drop" in text
    assert "\n" not in text  # one paragraph
    if case.value is not None:
        assert err.value == case.value
    if "1000" in case.name:
        assert "(1000 characters)" in text and len(text) < 600  # the id shown cut


# ------------------------------------------------------------- files that are refused


@dataclass(frozen=True)
class Refused:
    """A file that cannot be read as asked: refused under either policy."""

    name: str
    content: bytes
    words: str
    column: str | None = None
    row: int | None = None
    spec: dict[str, object] = field(default_factory=dict)
    file: str = "events.csv"


def _mixed_deep() -> bytes:
    rows = [f"u{i % 7},i{i % 11},2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:00,view,1,2.0"
            for i in range(800)]  # fmt: skip
    rows[613] = "u1,i1,01/02/2024 10:00,view,1,2.0"
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def _mixed_first_row_odd() -> bytes:
    rows = [f"u1,i{i},2024-02-{1 + i:02d}T10:00:00,view,1,2.0" for i in range(20)]
    rows.insert(0, "u1,i0,Feb 1 2024 10:00,view,1,2.0")
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def _text(*rows: str) -> bytes:
    return events_text(*rows).encode()


REFUSED: list[Refused] = [
    Refused("mixed_timestamp_formats_bad_row_deep", _mixed_deep(), "mixed formats",
            "timestamp", 613),
    Refused("mixed_timestamp_formats_first_row_odd", _mixed_first_row_odd(), "mixed formats",
            "timestamp", 0),
    Refused("unparseable_timestamp", _text("u4,d,yesterday,buy,1,3.0"),
            "unparseable timestamp", "timestamp", 5),
    Refused("timestamp_nan_among_epochs",
            b"user,item,timestamp\nu1,a,1700000000\nu2,b,nan\nu3,c,1700000100\n",
            "unparseable timestamp", "timestamp", 1),
    Refused("unparseable_price", _text("u4,d,2024-01-04 10:00:00,buy,1,cheap"),
            "expected Float64", "price", 5),
    Refused("fractional_quantity", _text("u4,d,2024-01-04 10:00:00,buy,1.5,3.0"),
            "expected Int64", "quantity", 5),
    Refused("quantity_too_large_for_int64", _text("u4,d,2024-01-04 10:00:00,buy,1e30,3.0"),
            "expected Int64", "quantity", 5),
    Refused("unknown_behavior", _text("u4,d,2024-01-04 10:00:00,wishlist,1,3.0"),
            "unknown behavior", "behavior", 5),
    Refused("non_utf8", (HEADER + "\nu1,caf\xe9,2024-01-01 10:00:00,buy,1,2.0\n").encode("latin-1"),
            "invalid utf-8"),
    Refused("header_only", (HEADER + "\n").encode(), "no data rows"),
    Refused("empty_file", b"", "the file is empty"),
    Refused("missing_item_column", b"user,timestamp\nu1,2024-01-01\n",
            "required events column 'item' is missing", "item"),
    Refused("wrong_delimiter", _text().replace(b",", b";"),
            "the file seems separated by ';'", "user"),
    Refused("mapped_column_absent", _text(), "the file has no such column", "sku",
            spec={"columns": {"item": "sku"}}),
    Refused("ragged_line", _text("u4,d,2024-01-04 10:00:00,buy,1,3.0,extra,fields"),
            "cannot be read as csv"),
    Refused("catalog_conflicting_rows", b"item,price\na,2.5\nb,4\na,3.0\n",
            "duplicate item id in catalog", "item", 2, file="catalog.csv"),
    Refused("users_conflicting_rows", b"user,age\nu1,30\nu1,31\n", "duplicate user id",
            "user", 1, file="users.csv"),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
@pytest.mark.parametrize("on_bad_rows", ["drop", "refuse"])
def test_unreadable_files_are_refused(tmp_path: Path, case: Refused, on_bad_rows: str) -> None:
    files: dict[str, FileSpec | None] = {"catalog": None, "users": None}
    files["events"] = FileSpec(tmp_path / "events.csv", **case.spec)  # type: ignore[arg-type]
    if case.file == "events.csv":
        (tmp_path / "events.csv").write_bytes(case.content)
    else:
        (tmp_path / "events.csv").write_text(events_text())
        (tmp_path / case.file).write_bytes(case.content)
        files[case.file.split(".")[0]] = FileSpec(tmp_path / case.file)
    with pytest.raises(DataError) as info:
        load(files, on_bad_rows)
    err, text = info.value, str(info.value)
    assert err.file == str(tmp_path / case.file) and err.file in text
    assert case.words.lower() in text.lower()
    assert err.column == case.column
    if case.column is not None:
        assert f"column '{case.column}'" in text
    assert err.row == case.row
    if case.row is not None:
        assert f"first bad row {case.row} " in text


def test_a_file_of_only_bad_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "\nu1,a,2024-01-01 10:00:00,buy,0,1.0\nu2,b,3000-01-01,buy,1,nan\n")
    with pytest.raises(DataError) as info:
        load_files(FileSpec(path))
    text = str(info.value)
    assert str(path) in text and "every data row was dropped" in text
    assert "'quantity is zero': 1" in text and "'price is NaN': 1" in text


# ------------------------------------------------------------- read right, nothing dropped


def test_bom_crlf_and_quoted_commas_are_read(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    text = HEADER + "\r\n" + 'u1,"mug, red",2024-01-01 10:00:00,buy,1,2.5\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    ds = load_files(FileSpec(path), on_bad_rows="refuse")
    assert ds.interactions.df["user"].to_list() == ["u1"]  # the header's BOM is not in 'user'
    assert ds.interactions.df["item"].to_list() == ["mug, red"]
    assert ds.dropped.total == 0


def test_negative_quantity_on_a_return_is_its_size(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(events_text("u1,a,2024-01-05 10:00:00,return,-1,2.5"))
    ds = load_files(FileSpec(path), on_bad_rows="refuse")
    returns = ds.interactions.of("return").df
    assert returns["quantity"].to_list() == [1] and ds.dropped.total == 0


def test_time_zones_are_read_as_utc(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user,item,timestamp\nu1,a,2024-01-01T10:00:00+02:00\nu2,b,2024-01-01T09:00:00Z\n"
    )
    ds = load_files(FileSpec(path), on_bad_rows="refuse")
    expected = [datetime(2024, 1, 1, 8), datetime(2024, 1, 1, 9)]
    assert ds.interactions.df["timestamp"].to_list() == expected


def test_epoch_milliseconds_with_one_bad_value_are_not_misread(tmp_path: Path) -> None:
    """The unit is taken from the typical value, so one year-3000 value in seconds does not
    turn every other (seconds) value into milliseconds of January 1970."""
    path = tmp_path / "events.csv"
    path.write_text("user,item,timestamp\nu1,a,1700000000\nu2,b,32503680000\nu3,c,1700000100\n")
    ds = load_files(FileSpec(path))
    assert ds.dropped.to_dict() == {"timestamp on or after 2100-01-01": 1}
    assert ds.interactions.df["timestamp"].dt.year().to_list() == [2023, 2023]


def test_data_yaml_sets_the_policy(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(events_text("u4,d,2024-01-04 10:00:00,buy,1,nan"))
    cfg = tmp_path / "shop.yaml"
    cfg.write_text("events: {path: events.csv}\non_bad_rows: refuse\n")
    with pytest.raises(DataError, match="price is NaN"):
        load_config(cfg)
    assert load_config(cfg, on_bad_rows="drop").dropped.to_dict() == {"price is NaN": 1}
    cfg.write_text("events: {path: events.csv}\non_bad_rows: maybe\n")
    with pytest.raises(DataError, match="drop or refuse"):
        load_config(cfg)


# ------------------------------------------------------------- built-in layouts


def test_release_id_too_long_for_an_integer_is_refused(tmp_path: Path) -> None:
    (tmp_path / "buy.txt").write_text("0 1 2\n1 2\n2 " + "9" * 1000 + "\n")
    with pytest.raises(DataError) as info:
        load_behavior_lines({"buy": "buy.txt"}, root=tmp_path)
    text = str(info.value)
    assert "buy.txt" in text and "line 3" in text and "1-18 digits" in text and len(text) < 400


def _retail_line(desc: str, qty: int, when: datetime, price: float, customer: float) -> dict:
    return {
        "Description": desc,
        "Quantity": qty,
        "InvoiceDate": when,
        "UnitPrice": price,
        "CustomerID": customer,
        "Country": "United Kingdom",
    }


def test_online_retail_counts_nan_prices_and_far_future_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "online_retail"
    folder.mkdir()
    t0 = datetime(2011, 1, 3, 9)
    lines = [
        _retail_line("MUG", 6, t0, 2.0, 1.0),
        _retail_line("CUP", 2, t0, float("nan"), 1.0),
        _retail_line("JAR", 1, t0, float("inf"), 2.0),
        _retail_line("BOX", 3, datetime(3000, 1, 1), 1.5, 2.0),
        _retail_line("BOX", 3, t0, 1.5, 2.0),
    ]
    pl.DataFrame(lines).write_parquet(folder / online_retail.FILE)
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    ds = online_retail.load()
    assert ds.dropped.to_dict() == {
        "non_finite_price": 2,
        "timestamp on or after 2100-01-01": 1,
    }
    assert len(ds.interactions) + ds.dropped.total == ds.raw_rows == 5
    assert ds.catalog is not None and ds.catalog.df["price"].is_finite().all()
    assert sorted(ds.catalog.df["item"]) == ["BOX", "MUG"]  # the dropped lines' items too
    with pytest.raises(DataError) as info:
        online_retail.load(on_bad_rows="refuse")
    assert info.value.column == "InvoiceDate" and info.value.row == 3


# ------------------------------------------------------------- what is served is finite


def test_served_catalog_prices_are_finite_and_scores_too() -> None:
    """An item table with NaN / inf / negative / missing prices (an artifact written before
    the loaders checked, or edited by hand): the recommender's prices are finite, the
    attributes it returns say None, and the default ``buy * price`` fusion stays finite."""
    items = pl.DataFrame(
        {
            "item": ["a", "b", "c", "d", "e"],
            "price": [2.0, float("nan"), float("inf"), -1.0, None],
            "stock": [1.0, float("nan"), 3.0, None, 0.0],
        }
    )
    cat = ServedCatalog(items, np.zeros(5, dtype=bool))
    assert cat.price is not None and np.isfinite(cat.price).all()
    assert [row["price"] for row in cat.attributes(range(5))] == [2.0, None, None, None, None]
    assert cat.stock.tolist() == [1, -1, 3, -1, 0]
    scores = Fusion.parse("buy * price").score({"buy": np.full(5, 0.3)}, price=cat.price)
    assert np.isfinite(scores).all()


def test_checked_catalog_holds_no_nan() -> None:
    frame = pl.DataFrame({"item": ["a", "b"], "price": [float("nan"), 3.0]})
    checked = Catalog.from_frame(frame, RowChecks()).df
    assert checked["price"].to_list() == [None, 3.0]


# ------------------------------------------------------------- hashed user ids


def test_user_ids_hashed_at_ingestion(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(events_text())
    (tmp_path / "users.csv").write_text("user,age\nu1,30\nu2,22\nu3,41\n")
    ds = load_files(FileSpec(tmp_path / "events.csv"), users=FileSpec(tmp_path / "users.csv"))
    ds.meta["cold_users"] = {"default": ["u3"]}
    hashed = hash_user_ids(ds, "a-secret-salt-for-tests")
    users = hashed.interactions.df["user"]
    raw = {"u1", "u2", "u3"}
    assert not raw & set(users) and not raw & set(hashed.users.df["user"])  # type: ignore[union-attr]
    assert users.str.len_chars().unique().to_list() == [HASH_CHARS]
    assert users[0] == hash_id("u1", "a-secret-salt-for-tests")  # later events hash alike
    assert set(hashed.users.df["user"]) == set(users)  # type: ignore[union-attr]
    assert hashed.meta["cold_users"] == {"default": [hash_id("u3", "a-secret-salt-for-tests")]}
    assert hash_id("u1", "another-salt") != users[0]
    # events and the rest are untouched
    assert hashed.interactions.df.drop("user").equals(ds.interactions.df.drop("user"))
    assert isinstance(hashed.interactions, Interactions)


def test_hash_user_ids_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.config import DataSection
    from shoprec.experiment import load_dataset

    (tmp_path / "events.csv").write_text(events_text())
    section = DataSection.model_validate(
        {"events": {"path": str(tmp_path / "events.csv")}, "hash_user_ids": True}
    )
    monkeypatch.delenv("SHOPREC_USER_ID_SALT", raising=False)
    with pytest.raises(DataError, match="SHOPREC_USER_ID_SALT"):
        load_dataset(section)
    monkeypatch.setenv("SHOPREC_USER_ID_SALT", "config-salt-0123456789")
    ds = load_dataset(section)
    assert isinstance(ds, Dataset)
    assert set(ds.interactions.df["user"]) == {
        hash_id(u, "config-salt-0123456789") for u in ("u1", "u2", "u3")
    }
    refuse = DataSection.model_validate(
        {"events": {"path": str(tmp_path / "events.csv")}, "on_bad_rows": "refuse"}
    )
    (tmp_path / "events.csv").write_text(events_text("u4,d,2024-01-04 10:00:00,buy,0,1.0"))
    with pytest.raises(DataError, match="quantity is zero"):
        load_dataset(refuse)


def test_corpus_size() -> None:
    """The issue asks for at least 30 malformed files."""
    assert len(BAD_ROWS) + len(REFUSED) >= 30


def test_encoder_treats_infinite_numbers_as_unknown() -> None:
    """A frame that did not pass a loader (a live event, a hand-built frame): one inf price
    made every normalised price NaN; now it is unknown (0 and flagged) like null and NaN."""
    from shoprec.data.encode import Encoder

    train = pl.DataFrame({"price": [1.0, 3.0, float("inf"), float("nan"), None]})
    enc = Encoder(numeric=["price"], null_flags=True).fit(train)
    assert enc.mean_["price"] == 2.0 and enc.std_["price"] == 1.0
    out = enc.transform(pl.DataFrame({"price": [3.0, float("-inf")]}))
    assert out["price"].tolist() == [1.0, 0.0] and out["price__isnull"].tolist() == [0.0, 1.0]
