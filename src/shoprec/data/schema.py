"""The canonical data model every loader produces and every later stage reads.

Three Polars tables, each wrapped in a small frozen class that checks its columns once:

* :class:`Interactions` — one row per event: ``user, item, timestamp, behavior, quantity,
  price, domain``.
* :class:`Catalog` — one row per item: ``item, title, category, brand, price, stock`` (all but
  ``item`` may be null).
* :class:`Users` — one row per user: ``user`` plus any attribute columns.

Ids are strings everywhere (the encoder turns them into integers for models), behaviors are
named (:class:`Behavior`), never magic numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import polars as pl

from shoprec.errors import DataError


class Behavior(StrEnum):
    """The kinds of event a shop logs. Values are what the ``behavior`` column holds."""

    IMPRESSION = "impression"  # the item was shown
    VIEW = "view"  # the product page was opened
    CLICK = "click"
    FAVORITE = "favorite"
    CART = "cart"  # added to cart
    BUY = "buy"  # purchased
    RETURN = "return"  # returned or cancelled after purchase
    RATE = "rate"  # an explicit rating or review

    @classmethod
    def values(cls) -> list[str]:
        return [b.value for b in cls]


#: The funnel order used when a task needs "deeper than" comparisons.
FUNNEL: tuple[Behavior, ...] = (
    Behavior.IMPRESSION,
    Behavior.VIEW,
    Behavior.CLICK,
    Behavior.FAVORITE,
    Behavior.CART,
    Behavior.BUY,
)

DEFAULT_DOMAIN = "default"

INTERACTION_SCHEMA: dict[str, pl.DataType] = {
    "user": pl.String(),
    "item": pl.String(),
    "timestamp": pl.Datetime("ms"),  # null when the source has no time
    "behavior": pl.String(),
    "quantity": pl.Int64(),
    "price": pl.Float64(),  # unit price; null when unknown
    "domain": pl.String(),
}

CATALOG_SCHEMA: dict[str, pl.DataType] = {
    "item": pl.String(),
    "title": pl.String(),
    "category": pl.String(),
    "brand": pl.String(),
    "price": pl.Float64(),
    "stock": pl.Int64(),
}


def _check_ids(df: pl.DataFrame, cols: tuple[str, ...], what: str) -> None:
    for col in cols:
        nulls = df[col].is_null()
        if nulls.any():
            row = int(nulls.arg_max())  # type: ignore[arg-type]
            raise DataError(f"{what} id column has null values", column=col, row=row)


def _conform(df: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    """Add missing optional columns as nulls, cast to the canonical types, order columns."""
    exprs = []
    for name, dtype in schema.items():
        if name in df.columns:
            if df.schema[name] != dtype:
                try:
                    df = df.with_columns(pl.col(name).cast(dtype, strict=True))
                except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as e:
                    raise DataError(
                        f"{what} column cannot be read as {dtype}: {e}", column=name
                    ) from e
            exprs.append(pl.col(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    extra = [c for c in df.columns if c not in schema]
    return df.select([*exprs, *[pl.col(c) for c in extra]])


@dataclass(frozen=True)
class Interactions:
    """Events in canonical form. Build with :meth:`from_frame`, which validates."""

    df: pl.DataFrame

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> Interactions:
        """Validate and conform a frame with at least ``user``, ``item`` and ``behavior``.

        Missing optional columns are added: ``timestamp``/``price`` as null, ``quantity`` as 1,
        ``domain`` as ``"default"``.
        """
        for col in ("user", "item", "behavior"):
            if col not in df.columns:
                raise DataError(
                    f"interactions need a '{col}' column; found {df.columns}", column=col
                )
        if "quantity" not in df.columns:
            df = df.with_columns(pl.lit(1, dtype=pl.Int64).alias("quantity"))
        if "domain" not in df.columns:
            df = df.with_columns(pl.lit(DEFAULT_DOMAIN).alias("domain"))
        df = _conform(df, INTERACTION_SCHEMA, "interactions")
        _check_ids(df, ("user", "item"), "interactions")
        unknown = ~df["behavior"].is_in(Behavior.values()) | df["behavior"].is_null()
        if unknown.any():
            row = int(unknown.arg_max())  # type: ignore[arg-type]
            raise DataError(
                f"unknown behavior; expected one of {Behavior.values()}",
                column="behavior",
                row=row,
                value=df["behavior"][row],
            )
        df = df.with_columns(pl.col("domain").fill_null(DEFAULT_DOMAIN))
        return cls(df)

    def __len__(self) -> int:
        return self.df.height

    @property
    def users(self) -> pl.Series:
        return self.df["user"].unique()

    @property
    def items(self) -> pl.Series:
        return self.df["item"].unique()

    @property
    def has_time(self) -> bool:
        return self.df["timestamp"].null_count() < self.df.height

    def of(self, *behaviors: Behavior | str) -> Interactions:
        """Only the events of the given behaviors."""
        return Interactions(self.df.filter(pl.col("behavior").is_in([str(b) for b in behaviors])))

    def filter(self, *predicates: Any) -> Interactions:
        return Interactions(self.df.filter(*predicates))


@dataclass(frozen=True)
class Catalog:
    """Items and what is known about them; any attribute may be null."""

    df: pl.DataFrame

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> Catalog:
        if "item" not in df.columns:
            raise DataError(
                f"the catalog needs an 'item' column; found {df.columns}", column="item"
            )
        df = _conform(df, CATALOG_SCHEMA, "catalog")
        _check_ids(df, ("item",), "catalog")
        dup = df["item"].is_duplicated()
        if dup.any():
            row = int(dup.arg_max())  # type: ignore[arg-type]
            raise DataError(
                "duplicate item id in catalog", column="item", row=row, value=df["item"][row]
            )
        return cls(df)

    def __len__(self) -> int:
        return self.df.height


@dataclass(frozen=True)
class Users:
    """User attributes: a ``user`` column plus any attribute columns."""

    df: pl.DataFrame

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> Users:
        if "user" not in df.columns:
            raise DataError(
                f"the users table needs a 'user' column; found {df.columns}", column="user"
            )
        df = df.with_columns(pl.col("user").cast(pl.String))
        _check_ids(df, ("user",), "users")
        dup = df["user"].is_duplicated()
        if dup.any():
            row = int(dup.arg_max())  # type: ignore[arg-type]
            raise DataError("duplicate user id", column="user", row=row, value=df["user"][row])
        return cls(df.select(["user", *[c for c in df.columns if c != "user"]]))

    def __len__(self) -> int:
        return self.df.height

    @property
    def attributes(self) -> list[str]:
        return [c for c in self.df.columns if c != "user"]


@dataclass
class DropReport:
    """Counts of deliberately dropped raw rows, by reason (kept in order of first use)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + int(n)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass
class Dataset:
    """A loaded dataset: events, optional catalog and users, and any given test split.

    Attributes:
        name: short name (``online_retail``, ``tmall``, ...).
        interactions: all training-side events (for datasets that ship a test file, the
            events of their train files only).
        catalog: item attributes, when known.
        users: user attributes, when known.
        test: the dataset's own held-out events, when it ships them (e.g. Tmall ``test.txt``).
        valid: the dataset's own validation events, when it ships them.
        raw_rows: number of raw lines/rows read from the source files.
        dropped: rows dropped on purpose, by reason.
        meta: free-form facts (source URL, notes such as "timestamp is the position in order").
    """

    name: str
    interactions: Interactions
    catalog: Catalog | None = None
    users: Users | None = None
    test: Interactions | None = None
    valid: Interactions | None = None
    raw_rows: int | None = None
    dropped: DropReport = field(default_factory=DropReport)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TabularDataset:
    """Impression- or row-level data for CTR/CVR-style multi-task models (census, Ali-CCP...).

    Attributes:
        name: short name.
        frame: one row per sample: feature columns then label columns.
        categorical: names of categorical feature columns (values as strings or ints).
        numeric: names of numeric feature columns.
        labels: names of label columns (0/1 ints for binary tasks).
        splits: optional given split name per row (``train``/``valid``/``test``) as a column
            called ``split`` in ``frame``.
        raw_rows: number of raw rows read.
        dropped: rows dropped on purpose, by reason.
        meta: free-form facts.
    """

    name: str
    frame: pl.DataFrame
    categorical: list[str]
    numeric: list[str]
    labels: list[str]
    raw_rows: int | None = None
    dropped: DropReport = field(default_factory=DropReport)
    meta: dict[str, Any] = field(default_factory=dict)
