"""MovieLens 100K in RecBole atomic files: 100,000 ratings of 1,682 movies by 943 users.

Layout under ``$SHOPREC_DATA/movielens_100k/`` (tab separated, one ``name:type`` header)::

    ml-100k.inter   user_id:token  item_id:token  rating:float  timestamp:float (Unix seconds)
    ml-100k.item    item_id:token  movie_title:token_seq  release_year:token  class:token_seq
    ml-100k.user    user_id:token  age:token  gender:token  occupation:token  zip_code:token

* ``interactions``: behavior ``rate``, ``timestamp`` from the Unix seconds, and the 1-5
  star rating kept as an extra Float64 column ``rating`` after the canonical columns.
* ``catalog``: ``title`` = movie title, ``category`` = the first genre listed, plus the
  extra columns ``genres`` (list of all genres) and ``release_year`` (Int64). Movie 267's
  title and year are the placeholder ``unkonwn`` in the file and become null; movie 1412
  has year ``V`` (from the original "... (1995) (V)"), so its year is taken from its title.
* ``users``: ``age`` (Int64), ``gender``, ``occupation``, ``zip_code`` (a string: some
  are Canadian postcodes).

GroupLens terms of use: research only, do not redistribute.

Example::

    from shoprec.data.datasets import movielens_100k
    ds = movielens_100k.load()
    ds.interactions.df.select("user", "item", "rating")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from shoprec.data.paths import dataset_dir
from shoprec.data.schema import (
    DEFAULT_ON_BAD_ROWS,
    Behavior,
    Catalog,
    Dataset,
    DropReport,
    Interactions,
    OnBadRows,
    RowChecks,
    Users,
)
from shoprec.errors import DataError

log = logging.getLogger(__name__)

NAME = "movielens_100k"
SOURCE = "https://grouplens.org/datasets/movielens/100k/"
FOLDER = "movielens_100k"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")

#: Placeholders the RecBole conversion wrote for the one movie with no title or date.
_UNKNOWN = ("unkonwn", "unknown")


def read_atomic(path: Path, required: Sequence[str] = ()) -> pl.DataFrame:
    """Read a RecBole atomic file (tab separated, ``name:type`` header) as strings.

    Column names lose their ``:type`` suffix; no value is inferred as null except empty
    fields (so a literal ``NA`` stays a string).

    Args:
        path: the ``.inter`` / ``.item`` / ``.user`` file.
        required: field names (without type) that must be present.

    Returns:
        A frame of String columns named by field.

    Raises:
        DataError: when the file cannot be parsed or a required field is missing.
    """
    try:
        df = pl.read_csv(
            path,
            separator="\t",
            infer_schema=False,
            quote_char=None,
            null_values=None,
        )
    except pl.exceptions.ComputeError as e:
        raise DataError(f"cannot be read as a RecBole atomic file: {e}", file=path) from e
    df = df.rename({c: c.split(":", 1)[0] for c in df.columns})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"missing field(s) {missing}; the header has {df.columns}",
            file=path,
            column=missing[0],
        )
    return df


def cast_checked(df: pl.DataFrame, column: str, dtype: pl.DataType, path: Path) -> pl.Series:
    """Cast a String column, raising a :class:`DataError` at the first unreadable value.

    Args:
        df: the frame holding ``column``.
        column: the column to cast.
        dtype: the target type.
        path: the file, for the error message.

    Returns:
        The cast series (nulls stay null).
    """
    cast = df[column].str.strip_chars().cast(dtype, strict=False)
    bad = cast.is_null() & df[column].is_not_null()
    if cast.dtype.is_float():  # "nan" and "inf" read as floats but are no rating or time
        bad = bad | ~cast.is_finite().fill_null(True)
    if bad.any():
        row = int(bad.arg_max())  # type: ignore[arg-type]
        raise DataError(
            f"cannot be read as {dtype}", file=path, column=column, row=row, value=df[column][row]
        )
    return cast


def load(on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS) -> Dataset:
    """Load MovieLens 100K with its ratings, movie catalog and user attributes.

    Args:
        on_bad_rows: what the common checks (:mod:`shoprec.data.schema`) do with a row that
            fails them: ``drop`` and count, or ``refuse``.

    Returns:
        A :class:`Dataset` with ``interactions`` (behavior ``rate``, extra ``rating``
        column), ``catalog`` and ``users``.

    Raises:
        DatasetNotFoundError: when the folder or one of the three files is missing.
        DataError: when a rating, timestamp, year or age is not a number.
    """
    root = dataset_dir(FOLDER, name=NAME, source=SOURCE, required=FILES)
    inter_path, item_path, user_path = (root / f for f in FILES)
    report = DropReport()

    inter = read_atomic(inter_path, ("user_id", "item_id", "rating", "timestamp"))
    seconds = cast_checked(inter, "timestamp", pl.Float64(), inter_path)
    interactions = Interactions.from_frame(
        pl.DataFrame(
            {
                "user": inter["user_id"].str.strip_chars(),
                "item": inter["item_id"].str.strip_chars(),
                "timestamp": (seconds * 1000).round().cast(pl.Int64).cast(pl.Datetime("ms")),
                "behavior": pl.repeat(Behavior.RATE.value, inter.height, eager=True),
                "rating": cast_checked(inter, "rating", pl.Float64(), inter_path),
            }
        ),
        RowChecks(on_bad_rows, report, inter_path, {"user": "user_id", "item": "item_id"}),
    )

    items = read_atomic(item_path, ("item_id", "movie_title", "release_year", "class"))
    items = items.with_columns(
        pl.when(pl.col(c).is_in(_UNKNOWN)).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("movie_title", "release_year")
    )
    # The conversion took the last "(...)" of the original title as the year, so
    # "Land Before Time III: ... (1995) (V)" has year "V": recover the year from the title.
    year_in_title = r"\s*\((\d{4})\)\s*$"
    misplaced = ~pl.col("release_year").str.contains(r"^\d+$") & pl.col("movie_title").str.contains(
        year_in_title
    )
    items = items.with_columns(
        pl.when(misplaced)
        .then(pl.col("movie_title").str.extract(year_in_title, 1))
        .otherwise(pl.col("release_year"))
        .alias("release_year"),
        pl.when(misplaced)
        .then(pl.col("movie_title").str.replace(year_in_title, ""))
        .otherwise(pl.col("movie_title"))
        .alias("movie_title"),
    )
    genres = items["class"].str.strip_chars().str.split(" ")
    catalog = Catalog.from_frame(
        pl.DataFrame(
            {
                "item": items["item_id"].str.strip_chars(),
                "title": items["movie_title"],
                "category": genres.list.first(),
                "genres": genres,
                "release_year": cast_checked(items, "release_year", pl.Int64(), item_path),
            }
        ),
        RowChecks(on_bad_rows, report, item_path, {"item": "item_id", "title": "movie_title"}),
    )

    users_raw = read_atomic(user_path, ("user_id", "age", "gender", "occupation", "zip_code"))
    users = Users.from_frame(
        users_raw.select(
            pl.col("user_id").str.strip_chars().alias("user"),
            cast_checked(users_raw, "age", pl.Int64(), user_path).alias("age"),
            "gender",
            "occupation",
            "zip_code",
        ),
        RowChecks(on_bad_rows, report, user_path, {"user": "user_id"}),
    )

    unknown_items = interactions.df.join(catalog.df, on="item", how="anti").height
    unknown_users = interactions.df.join(users.df, on="user", how="anti").height
    if unknown_items or unknown_users:
        log.warning(
            "%s: %d ratings of items not in the catalog, %d of users not in the user file",
            NAME,
            unknown_items,
            unknown_users,
        )
    log.info(
        "%s: %d ratings, %d users, %d items",
        NAME,
        len(interactions),
        interactions.users.len(),
        interactions.items.len(),
    )
    return Dataset(
        name=NAME,
        interactions=interactions,
        catalog=catalog,
        users=users,
        raw_rows=inter.height + items.height + users_raw.height,
        dropped=report,
        meta={
            "source": SOURCE,
            "folder": str(root),
            "has_timestamps": True,
            "rating_column": "rating",
            "license": "GroupLens: research use only, do not redistribute",
        },
    )
