"""The canonical data model every loader produces and every later stage reads.

Three Polars tables, each wrapped in a small frozen class that checks its columns once:

* :class:`Interactions` — one row per event: ``user, item, timestamp, behavior, quantity,
  price, domain``.
* :class:`Catalog` — one row per item: ``item, title, category, brand, price, stock`` (all but
  ``item`` may be null).
* :class:`Users` — one row per user: ``user`` plus any attribute columns.

Ids are strings everywhere (the encoder turns them into integers for models), behaviors are
named (:class:`Behavior`), never magic numbers.

Values are checked where data enters (every loader passes :class:`RowChecks` to
``from_frame``), under one policy, ``on_bad_rows``:

* a value that cannot be read as its type (a price ``"cheap"``, a timestamp ``"yesterday"``),
  an unknown behavior, a missing column or an unreadable file is always refused with a
  :class:`~shoprec.errors.DataError` naming the file, the column and the first bad row;
* a value that reads but cannot be right (:data:`EVENT_RULES`: an empty or over-long id, a NaN,
  infinite or negative price, a zero, negative or missing quantity, a timestamp outside
  [:data:`TIME_MIN`, :data:`TIME_MAX`), a row repeated exactly) makes a *bad row*: with
  ``on_bad_rows="drop"`` (the default) the row is dropped, counted under its reason in
  :class:`DropReport` and logged as a warning naming the first such row; with ``"refuse"`` the
  first one raises the same one-paragraph error. In a catalog a bad price or stock clears
  that value (the product stays, its price unknown) instead of dropping the product.

Quantities are positive counts for every behavior; a ``return`` written with a negative
quantity (as many shop exports and Online Retail write them) is read as its size.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

import polars as pl

from shoprec.errors import DataError

log = logging.getLogger(__name__)


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


#: Ids longer than this (in characters) are bad rows: no shop's id is that long; such a value
#: is a text field or a whole line read into the id column.
MAX_ID_CHARS = 256

#: Timestamps must lie in ``[TIME_MIN, TIME_MAX)``: earlier is a zero or negative epoch,
#: later is epoch milliseconds read as seconds or a typed year such as 3024.
TIME_MIN = datetime(1970, 1, 1)
TIME_MAX = datetime(2100, 1, 1)

#: What a loader does with a bad row: drop it (counted, with a warning) or refuse the file.
OnBadRows = Literal["drop", "refuse"]
ON_BAD_ROWS: tuple[str, ...] = ("drop", "refuse")
DEFAULT_ON_BAD_ROWS: OnBadRows = "drop"

#: Optional column a loader adds: each row's 0-based data-row position in its file, so an
#: error names the file's row even after earlier rows were dropped. Removed by ``from_frame``.
ROW = "__row"

_SHOWN_CHARS = 60  # a longer bad value is shown cut, with its length


class Rule(NamedTuple):
    """One check on a table's values.

    Attributes:
        reason: the key in :class:`DropReport` and the start of the error message.
        column: the canonical column at fault (None for whole-row checks).
        bad: a boolean expression, True for a bad row (null counts as fine).
        clear: set the value to null instead of dropping the row (catalog prices).
        hint: what to do about it, appended to the error.
    """

    reason: str
    column: str | None
    bad: pl.Expr
    clear: bool = False
    hint: str = ""


def _empty(col: str) -> pl.Expr:
    return pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")


def _too_long(col: str) -> pl.Expr:
    return pl.col(col).str.len_chars() > MAX_ID_CHARS


def _price_rules(prefix: str, clear: bool) -> list[Rule]:
    price = pl.col("price")
    return [
        Rule(f"{prefix}price is NaN", "price", price.is_nan(), clear),
        Rule(f"{prefix}price is infinite", "price", price.is_infinite(), clear),
        Rule(f"{prefix}price is negative", "price", price < 0, clear),
    ]


def _duplicate(columns: Sequence[str], when: pl.Expr | None = None) -> pl.Expr:
    repeated = ~pl.struct(list(columns)).is_first_distinct()
    return repeated if when is None else repeated & when


#: The checks on events, in order; a row is counted under the first that catches it.
EVENT_RULES: tuple[Rule, ...] = (
    Rule("empty user id", "user", _empty("user")),
    Rule("empty item id", "item", _empty("item")),
    Rule(f"user id longer than {MAX_ID_CHARS} characters", "user", _too_long("user")),
    Rule(f"item id longer than {MAX_ID_CHARS} characters", "item", _too_long("item")),
    *_price_rules("", clear=False),
    Rule("quantity is missing", "quantity", pl.col("quantity").is_null()),
    Rule("quantity is zero", "quantity", pl.col("quantity") == 0),
    Rule(
        "quantity is negative on a non-return event",
        "quantity",
        pl.col("quantity") < 0,
        hint="Quantities are positive counts; a return is behavior 'return' (map your "
        "return events to it), where a negative quantity is read as its size.",
    ),
    Rule(f"timestamp before {TIME_MIN:%Y-%m-%d}", "timestamp", pl.col("timestamp") < TIME_MIN),
    Rule(
        f"timestamp on or after {TIME_MAX:%Y-%m-%d}",
        "timestamp",
        pl.col("timestamp") >= TIME_MAX,
        hint="Epoch milliseconds read as seconds give such dates: check the unit.",
    ),
)

#: Checks on catalog rows: a bad id drops the row, a bad price or stock is cleared.
CATALOG_RULES: tuple[Rule, ...] = (
    Rule("catalog: empty item id", "item", _empty("item")),
    Rule(f"catalog: item id longer than {MAX_ID_CHARS} characters", "item", _too_long("item")),
    *_price_rules("catalog: ", clear=True),
    Rule("catalog: stock is negative", "stock", pl.col("stock") < 0, clear=True),
)

#: Checks on user rows.
USER_RULES: tuple[Rule, ...] = (
    Rule("users: empty user id", "user", _empty("user")),
    Rule(f"users: user id longer than {MAX_ID_CHARS} characters", "user", _too_long("user")),
)


@dataclass(frozen=True)
class RowChecks:
    """How a loader wants a table's values checked (see the module docstring).

    Attributes:
        on_bad_rows: ``"drop"`` (drop, count in ``report``, log a warning) or ``"refuse"``
            (raise :class:`~shoprec.errors.DataError` at the first bad row).
        report: where dropped rows are counted (a fresh one when None).
        file: the source file, named in messages.
        columns: canonical column -> the file's own name for it, for messages.
        duplicates: treat a row equal in every column to an earlier one (with a timestamp)
            as bad. A loader whose source repeats lines legitimately turns this off and says
            why in its docstring.
        header_lines: lines before the first data row in a text file.
    """

    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS
    report: DropReport | None = None
    file: str | Path | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    duplicates: bool = True
    header_lines: int = 1

    def __post_init__(self) -> None:
        if self.on_bad_rows not in ON_BAD_ROWS:
            raise DataError(
                f"on_bad_rows must be one of {list(ON_BAD_ROWS)}, not {self.on_bad_rows!r}"
            )

    def name(self, column: str) -> str:
        """The file's own name for a canonical column."""
        return self.columns.get(column, column)

    def for_file(self, file: str | Path | None, columns: Mapping[str, str]) -> RowChecks:
        """The same policy and report for another file."""
        return replace(self, file=file, columns=dict(columns))


def _shown(value: object) -> object:
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return f"{value[:40]}... ({len(value)} characters)"
    return value


def _file_row(df: pl.DataFrame, pos: int) -> int:
    """The file's data row of frame position ``pos`` (the position when no :data:`ROW`)."""
    return int(df[ROW][pos]) if ROW in df.columns else pos


def apply_rules(
    df: pl.DataFrame, rules: Sequence[Rule], checks: RowChecks, what: str
) -> pl.DataFrame:
    """Apply checks in order: drop (or clear) and count bad rows, or refuse the first.

    Args:
        df: a conformed table (canonical columns, optionally :data:`ROW`).
        rules: the checks, in order; a row is counted under the first that drops it.
        checks: the policy, the report and the names for messages.
        what: ``events``, ``catalog`` or ``users``, for the log.

    Returns:
        The table without the dropped rows (and with cleared values).

    Raises:
        DataError: with ``on_bad_rows="refuse"``, for the first bad row of the first rule that
            finds one: the file, the column, the row and the value, and how many rows are alike.
    """
    report = checks.report if checks.report is not None else DropReport()
    for rule in rules:
        if rule.column is not None and rule.column not in df.columns:
            continue
        mask = df.select(rule.bad.fill_null(False)).to_series()
        n = int(mask.sum())
        if n == 0:
            continue
        pos = int(mask.arg_max())  # type: ignore[arg-type]
        row = _file_row(df, pos)
        value = None if rule.column is None else _shown(df[rule.column][pos])
        column = None if rule.column is None else checks.name(rule.column)
        if checks.on_bad_rows == "refuse":
            raise DataError(
                f"{rule.reason}; {n} row(s) like this",
                file=checks.file,
                column=column,
                row=row,
                value=value,
                header_lines=checks.header_lines,
                hint=(
                    f"{rule.hint + ' ' if rule.hint else ''}With on_bad_rows: drop (the "
                    "data section of the config) such rows are dropped and counted instead."
                ),
            )
        report.add(rule.reason, n)
        where = f" of {checks.file}" if checks.file is not None else ""
        action = "cleared the value in" if rule.clear else "dropped"
        first = f"row {row}" if column is None else f"row {row}, column {column}, {value!r}"
        log.warning(
            "%s%s: %s %d row(s): %s (first: %s)", what, where, action, n, rule.reason, first
        )
        if rule.clear:
            assert rule.column is not None
            df = df.with_columns(
                pl.when(mask).then(None).otherwise(pl.col(rule.column)).alias(rule.column)
            )
        else:
            df = df.filter(~mask)
    return df


def _check_events(df: pl.DataFrame, checks: RowChecks) -> pl.DataFrame:
    """Normalise returns' negative quantities, then apply :data:`EVENT_RULES` (and the
    duplicate check)."""
    is_return = pl.col("behavior") == Behavior.RETURN.value
    negative_returns = int(df.select((is_return & (pl.col("quantity") < 0)).sum()).item() or 0)
    if negative_returns:
        log.info("events: %d returns with a negative quantity read as positive", negative_returns)
        df = df.with_columns(
            pl.when(is_return & (pl.col("quantity") < 0))
            .then(-pl.col("quantity"))
            .otherwise(pl.col("quantity"))
            .alias("quantity")
        )
    rules = list(EVENT_RULES)
    if checks.duplicates and df["timestamp"].null_count() < df.height:  # none without time
        columns = [c for c in df.columns if c != ROW]
        rules.append(
            Rule(
                "duplicate row (every column equal to an earlier row's)",
                None,
                _duplicate(columns, pl.col("timestamp").is_not_null()),
                hint="Rows without a timestamp are never called duplicates.",
            )
        )
    return apply_rules(df, rules, checks, "events")


def _refuse_duplicate_ids(
    df: pl.DataFrame, column: str, message: str, checks: RowChecks | None
) -> None:
    """Two different rows for one id: always refused, naming the second one."""
    dup = ~df[column].is_first_distinct()
    if dup.any():
        pos = int(dup.arg_max())  # type: ignore[arg-type]
        first = int(df[column].eq(df[column][pos]).arg_max())  # type: ignore[arg-type]
        raise DataError(
            f"{message} (rows {_file_row(df, first)} and {_file_row(df, pos)} differ, so which "
            "one is right cannot be told)",
            file=None if checks is None else checks.file,
            column=column if checks is None else checks.name(column),
            row=_file_row(df, pos),
            value=_shown(df[column][pos]),
            header_lines=1 if checks is None else checks.header_lines,
        )


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
    def from_frame(cls, df: pl.DataFrame, checks: RowChecks | None = None) -> Interactions:
        """Validate and conform a frame with at least ``user``, ``item`` and ``behavior``.

        Missing optional columns are added: ``timestamp``/``price`` as null, ``quantity`` as 1,
        ``domain`` as ``"default"``.

        Args:
            df: the events.
            checks: check the values under this policy (what every loader does); None checks
                only the columns, the ids and the behaviors (for frames already checked).

        Raises:
            DataError: a missing column, a null id (without ``checks``), an unknown behavior,
                or a bad row under ``on_bad_rows="refuse"``.
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
        if checks is not None:
            df = _check_events(df, checks)
        _check_ids(df, ("user", "item"), "interactions")
        return cls(df.drop(ROW, strict=False))

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
    def from_frame(cls, df: pl.DataFrame, checks: RowChecks | None = None) -> Catalog:
        """Validate and conform a catalog (see :meth:`Interactions.from_frame` for ``checks``).

        With ``checks``, rows equal in every column to an earlier one are bad rows; two rows
        of one item that differ are always refused (which one is right cannot be told).
        """
        if "item" not in df.columns:
            raise DataError(
                f"the catalog needs an 'item' column; found {df.columns}", column="item"
            )
        df = _conform(df, CATALOG_SCHEMA, "catalog")
        if checks is not None:
            rules = list(CATALOG_RULES)
            if checks.duplicates:
                columns = [c for c in df.columns if c != ROW]
                rules.append(Rule("catalog: duplicate row", None, _duplicate(columns)))
            df = apply_rules(df, rules, checks, "catalog")
        _check_ids(df, ("item",), "catalog")
        _refuse_duplicate_ids(df, "item", "duplicate item id in catalog", checks)
        return cls(df.drop(ROW, strict=False))

    def __len__(self) -> int:
        return self.df.height


@dataclass(frozen=True)
class Users:
    """User attributes: a ``user`` column plus any attribute columns."""

    df: pl.DataFrame

    @classmethod
    def from_frame(cls, df: pl.DataFrame, checks: RowChecks | None = None) -> Users:
        """Validate a user table (see :meth:`Catalog.from_frame` for ``checks``)."""
        if "user" not in df.columns:
            raise DataError(
                f"the users table needs a 'user' column; found {df.columns}", column="user"
            )
        df = df.with_columns(pl.col("user").cast(pl.String))
        if checks is not None:
            rules = list(USER_RULES)
            if checks.duplicates:
                columns = [c for c in df.columns if c != ROW]
                rules.append(Rule("users: duplicate row", None, _duplicate(columns)))
            df = apply_rules(df, rules, checks, "users")
        _check_ids(df, ("user",), "users")
        _refuse_duplicate_ids(df, "user", "duplicate user id", checks)
        df = df.drop(ROW, strict=False)
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


#: Hex characters of a hashed user id (128 bits: no collision in any shop's user count).
HASH_CHARS = 32


def hash_ids(ids: pl.Series, salt: str | bytes) -> pl.Series:
    """Replace ids by a keyed hash: BLAKE2b keyed with ``salt``, :data:`HASH_CHARS` hex chars.

    The same id and salt always give the same hash, so events that arrive later can be hashed
    the same way (:func:`hash_id`); without the salt the raw ids cannot be recovered by
    hashing guesses. Each distinct id is hashed once. Nulls stay null.

    Args:
        ids: a String series of raw ids.
        salt: the secret key (at most 64 bytes; keep it out of configs and artifacts).

    Returns:
        The hashed ids, same length and order.

    Example:
        >>> hash_ids(pl.Series(["17850"]), "s3cret")[0] == hash_id("17850", "s3cret")
        True
    """
    key = _salt_bytes(salt)
    distinct = ids.drop_nulls().unique()
    table = {raw: _keyed(raw, key) for raw in distinct.to_list()}
    return ids.replace_strict(table, default=None, return_dtype=pl.String).alias(ids.name)


def hash_id(raw: str, salt: str | bytes) -> str:
    """One id hashed as :func:`hash_ids` does (for events arriving later)."""
    return _keyed(str(raw), _salt_bytes(salt))


def _salt_bytes(salt: str | bytes) -> bytes:
    key = salt.encode() if isinstance(salt, str) else bytes(salt)
    if not key:
        raise DataError("the salt for hashing user ids is empty")
    if len(key) > 64:
        raise DataError(f"the salt for hashing user ids is {len(key)} bytes; at most 64")
    return key


def _keyed(raw: str, key: bytes) -> str:
    return hashlib.blake2b(raw.encode(), key=key, digest_size=HASH_CHARS // 2).hexdigest()


def hash_user_ids(ds: Dataset, salt: str | bytes) -> Dataset:
    """The dataset with every user id replaced by its keyed hash (:func:`hash_ids`).

    The events, the held-out events, the user table and user lists in ``meta`` (such as
    ``cold_users``) are hashed alike, so nothing built from the dataset (splits, encoders,
    artifacts) holds a raw user id. ``meta["user_ids_hashed"]`` is set to True.
    """
    key = _salt_bytes(salt)
    raw = [ds.interactions.df["user"]]
    raw += [s.df["user"] for s in (ds.test, ds.valid) if s is not None]
    if ds.users is not None:
        raw.append(ds.users.df["user"])
    distinct = pl.concat(raw).drop_nulls().unique().to_list()
    table = {u: _keyed(u, key) for u in distinct}

    def hashed(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.col("user").replace_strict(table, default=None, return_dtype=pl.String)
        )

    def in_meta(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: in_meta(v) for k, v in value.items()}
        if isinstance(value, list):
            return [table.get(v, v) if isinstance(v, str) else in_meta(v) for v in value]
        return value

    meta = {k: in_meta(v) if "user" in k else v for k, v in ds.meta.items()}
    meta["user_ids_hashed"] = True
    return replace(
        ds,
        interactions=Interactions(hashed(ds.interactions.df)),
        test=None if ds.test is None else Interactions(hashed(ds.test.df)),
        valid=None if ds.valid is None else Interactions(hashed(ds.valid.df)),
        users=None if ds.users is None else Users(hashed(ds.users.df)),
        meta=meta,
    )


def check_finite(frame: pl.DataFrame, columns: Sequence[str], checks: RowChecks) -> pl.DataFrame:
    """Tabular rows whose numeric features are NaN or infinite: dropped and counted, or
    refused, per ``checks`` (a model cannot learn from them and they poison normalisation).

    Args:
        frame: the table (numeric ``columns`` already Float64).
        columns: the numeric feature columns.
        checks: the policy, the report and the names for messages.

    Returns:
        The table without the bad rows.
    """
    rules = [Rule(f"{c} is NaN or infinite", c, ~pl.col(c).is_finite()) for c in columns]
    return apply_rules(frame, rules, checks, "rows")


def user_id_salt(env: str = "SHOPREC_USER_ID_SALT") -> str:
    """The key for :func:`hash_user_ids`, read from the environment variable ``env``.

    Raises:
        DataError: the variable is unset or empty (the message names it).
    """
    salt = os.environ.get(env, "")
    if not salt:
        raise DataError(
            f"data.hash_user_ids is on, but the environment variable {env} that holds the key "
            "is unset or empty. Set it to a secret of 16-64 characters (the same one at "
            "every training and when serving); it is never written into the config or the "
            "artifact."
        )
    _salt_bytes(salt)
    return salt
