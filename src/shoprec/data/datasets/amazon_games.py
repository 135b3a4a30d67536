"""Amazon Video Games: 50,546 users' ordered histories over 16,859 titled items.

From the LLMRank release (Hou et al., ECIR 2024), built from Amazon reviews 2018. Layout
under ``$SHOPREC_DATA/amazon_games/`` (RecBole atomic files, tab separated, one header)::

    Games.item             item_id:token  title:token_seq
    Games-6k.test.inter    user_id:token  item_id_list:token_seq  item_id:token
    Games-6k.valid.inter   user_id:token  item_id_list:token_seq  item_id:token

A ``.inter`` line is a user's history in time order (space separated), then a target item.
In the test file the target is the last item; the valid file is the same line one step
earlier (its history is the test history minus its last item, and its target is that last
item). The loader checks this and builds a leave-one-out split that never leaks:

* ``interactions``: the valid-file histories, i.e. every event but each user's last two;
* ``valid``: the valid targets (each user's second-to-last event);
* ``test``: the test targets (each user's last event).

Concatenated, the three give each user's full sequence. The events are reviews of bought
games, so the behavior is ``buy``. The files hold no time, only order: ``timestamp`` is
synthetic, ``1970-01-01 00:00:00`` plus the event's 0-based position in the user's sequence
in seconds (``meta["timestamp_is_order"]`` is True), so sorting by time and leave-last-out
splits work, but durations and gaps mean nothing.

Example::

    from shoprec.data.datasets import amazon_games
    ds = amazon_games.load()
    ds.catalog.df.select("item", "title")
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from shoprec.data.datasets.movielens_100k import read_atomic
from shoprec.data.paths import dataset_dir
from shoprec.data.schema import (
    DEFAULT_ON_BAD_ROWS,
    ROW,
    Behavior,
    Catalog,
    Dataset,
    DropReport,
    Interactions,
    OnBadRows,
    RowChecks,
)
from shoprec.errors import DataError

log = logging.getLogger(__name__)

NAME = "amazon_games"
SOURCE = "https://github.com/RUCAIBox/LLMRank"
FOLDER = "amazon_games"
ITEM_FILE = "Games.item"
TEST_FILE = "Games-6k.test.inter"
VALID_FILE = "Games-6k.valid.inter"


def _read_sequences(path: Path) -> pl.DataFrame:
    """Read a ``user, history, target`` file into ``user``, ``history`` (list), ``target``."""
    df = read_atomic(path, ("user_id", "item_id_list", "item_id"))
    seqs = df.select(
        pl.col("user_id").str.strip_chars().alias("user"),
        pl.col("item_id_list")
        .fill_null("")
        .str.strip_chars()
        .str.split(" ")
        .list.eval(pl.element().filter(pl.element() != ""))
        .alias("history"),
        pl.col("item_id").str.strip_chars().alias("target"),
    )
    for col in ("user", "target"):
        nulls = seqs[col].is_null() | (seqs[col] == "")
        if nulls.any():
            row = int(nulls.arg_max())  # type: ignore[arg-type]
            raise DataError("empty id", file=path, column=col, row=row)
    seqs = seqs.with_row_index(ROW)  # the file's row, for messages about its events
    dup = seqs["user"].is_duplicated()
    if dup.any():
        row = int(dup.arg_max())  # type: ignore[arg-type]
        raise DataError(
            "a user has two lines", file=path, column="user_id", row=row, value=seqs["user"][row]
        )
    return seqs


def _events(frame: pl.DataFrame, items: str, position: pl.Expr) -> pl.DataFrame:
    """Canonical events from ``user`` and an item column, timestamp = ``position`` seconds."""
    return frame.select(
        "user",
        pl.col(items).alias("item"),
        (position.cast(pl.Int64) * 1000).cast(pl.Datetime("ms")).alias("timestamp"),
        pl.lit(Behavior.BUY.value).alias("behavior"),
        ROW,
    )


def load(on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS) -> Dataset:
    """Load the Video Games catalog and the leave-one-out ordered histories.

    Args:
        on_bad_rows: what the common checks (:mod:`shoprec.data.schema`) do with a row that
            fails them: ``drop`` and count, or ``refuse``. Repeated items in one history are
            not duplicates (their positions, the synthetic timestamps, differ).

    Returns:
        A :class:`Dataset` with ``catalog`` (titles), ``interactions`` (histories up to each
        user's third-to-last event), ``valid`` (second-to-last) and ``test`` (last event).

    Raises:
        DatasetNotFoundError: when the folder or one of the three files is missing.
        DataError: when the valid file is not the test file one step earlier.
    """
    root = dataset_dir(
        FOLDER, name=NAME, source=SOURCE, required=(ITEM_FILE, TEST_FILE, VALID_FILE)
    )
    item_path, test_path, valid_path = root / ITEM_FILE, root / TEST_FILE, root / VALID_FILE
    report = DropReport()

    items = read_atomic(item_path, ("item_id", "title"))
    catalog = Catalog.from_frame(
        items.select(
            pl.col("item_id").str.strip_chars().alias("item"),
            pl.col("title").str.strip_chars().alias("title"),
        ),
        RowChecks(on_bad_rows, report, item_path, {"item": "item_id"}),
    )

    test_seq = _read_sequences(test_path)
    valid_seq = _read_sequences(valid_path)
    joined = test_seq.with_row_index("row").join(
        valid_seq, on="user", how="full", suffix="_valid", coalesce=True
    )
    expected = pl.concat_list(pl.col("history_valid"), pl.col("target_valid"))
    consistent = (
        pl.col("history").is_not_null()
        & pl.col("history_valid").is_not_null()
        & (pl.col("history") == expected).fill_null(False)
    )
    bad = joined.filter(~consistent)
    if bad.height:
        first = bad.row(0, named=True)
        raise DataError(
            f"{VALID_FILE} must be {TEST_FILE} one step earlier (history minus its last item, "
            "target = that last item); this user differs or is in only one file",
            file=test_path,
            column="item_id_list",
            row=first["row"],
            value=first["user"],
        )

    columns = {"user": "user_id", "item": "item_id_list"}
    valid_checks = RowChecks(on_bad_rows, report, valid_path, columns)
    interactions = Interactions.from_frame(
        _events(
            valid_seq.explode("history", empty_as_null=True).filter(
                pl.col("history").is_not_null()
            ),
            "history",
            pl.int_range(pl.len()).over("user"),
        ),
        valid_checks,
    )
    valid = Interactions.from_frame(
        _events(valid_seq, "target", pl.col("history").list.len()),
        valid_checks.for_file(valid_path, {"user": "user_id", "item": "item_id"}),
    )
    test = Interactions.from_frame(
        _events(test_seq, "target", pl.col("history").list.len()),
        valid_checks.for_file(test_path, {"user": "user_id", "item": "item_id"}),
    )

    all_items = pl.concat([interactions.df["item"], valid.df["item"], test.df["item"]])
    not_in_catalog = int((~all_items.is_in(catalog.df["item"].implode())).sum())
    if not_in_catalog:
        log.warning("%s: %d events name items missing from %s", NAME, not_in_catalog, ITEM_FILE)
    log.info(
        "%s: %d items, %d users, %d history events + %d valid + %d test",
        NAME,
        len(catalog),
        test_seq.height,
        len(interactions),
        len(valid),
        len(test),
    )
    return Dataset(
        name=NAME,
        interactions=interactions,
        catalog=catalog,
        valid=valid,
        test=test,
        raw_rows=items.height + test_seq.height + valid_seq.height,
        dropped=report,
        meta={
            "source": SOURCE,
            "folder": str(root),
            "timestamp_is_order": True,
            "split": "leave-one-out: valid = second-to-last event, test = last event",
            "n_users": test_seq.height,
            "events_not_in_catalog": not_in_catalog,
        },
    )
