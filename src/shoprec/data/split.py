"""Split interactions into train / valid / test, without leaking the future or held-out ids.

Every splitter takes canonical :class:`~shoprec.data.schema.Interactions` and returns a
:class:`Split`. All work is vectorised Polars; rows keep their original order inside each part.

* :func:`time_split` — one global time cut (or two): the usual protocol for logs with time.
* :func:`leave_last_out` — per user, the last event(s) (optionally of one behavior) are held out.
* :func:`given_split` — the dataset's own test/valid files, as shipped.
* :func:`cold_item_split` / :func:`cold_user_split` — held-out items or users never seen in
  train; ``cold_user_split(domain=...)`` hides only the users' target-domain events
  (cross-domain cold start).
* :func:`random_split` — row-level random fractions (exact duplicate events stay together).

:func:`check_no_leakage` verifies a split: no test/valid event also in train, held-out ids absent
from train, time cuts respected.

Example:
    >>> import polars as pl
    >>> from shoprec.data.schema import Interactions
    >>> inter = Interactions.from_frame(pl.DataFrame({
    ...     "user": ["u1", "u1", "u2"], "item": ["a", "b", "a"], "behavior": ["buy"] * 3}))
    >>> split = leave_last_out(inter, n_valid=0)
    >>> len(split.train), len(split.test)
    (2, 1)
    >>> check_no_leakage(split)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl

from shoprec.data.schema import Behavior, Dataset, Interactions
from shoprec.errors import DataError, ShoprecError

log = logging.getLogger(__name__)

__all__ = [
    "LeakageError",
    "Split",
    "check_no_leakage",
    "cold_item_split",
    "cold_user_split",
    "given_split",
    "leave_last_out",
    "random_split",
    "time_split",
]

#: The columns that identify one event when checking for leakage.
EVENT_KEY: tuple[str, ...] = ("user", "item", "behavior", "timestamp")

_ROW = "__row"  # helper column names, never left in results
_PART = "__part"
_TRAIN, _VALID, _TEST, _DROP = 0, 1, 2, 3


class LeakageError(ShoprecError):
    """A split lets held-out information into the training part."""


@dataclass(frozen=True, eq=False)
class Split:
    """Train, optional valid and test interactions, plus what the splitter held out.

    Attributes:
        train: events to fit on.
        valid: events to select models on, or None.
        test: events to report on once.
        kind: which splitter made it (``time``, ``leave_last_out``, ``given``, ``cold_item``,
            ``cold_user``, ``random``).
        test_start: for time splits, the first instant of the test period.
        valid_start: for time splits with a validation period, its first instant.
        cold_items: for cold-item splits, every held-out item (valid and test).
        cold_users: for cold-user splits, every held-out user (valid and test).
        cold_domain: for domain cold-user splits, the domain whose events were held out.
        dropped: rows put in no part on purpose (future events, duplicates of held-out events).
    """

    train: Interactions
    valid: Interactions | None
    test: Interactions
    kind: str = "custom"
    test_start: datetime | None = None
    valid_start: datetime | None = None
    cold_items: pl.Series | None = None
    cold_users: pl.Series | None = None
    cold_domain: str | None = None
    dropped: int = 0

    def parts(self) -> dict[str, Interactions]:
        """The non-empty parts by name (``train``, ``valid`` when present, ``test``)."""
        out = {"train": self.train}
        if self.valid is not None:
            out["valid"] = self.valid
        out["test"] = self.test
        return out

    def summary(self) -> dict[str, Any]:
        """Plain, JSON-ready facts about the split: sizes, time ranges and overlap with train.

        Example:
            >>> split.summary()["test"]["rows"]  # doctest: +SKIP
            1
        """
        out: dict[str, Any] = {"kind": self.kind}
        train_users = self.train.df["user"].unique()
        train_items = self.train.df["item"].unique()
        for name, part in self.parts().items():
            df = part.df
            ts = df["timestamp"]
            info: dict[str, Any] = {
                "rows": df.height,
                "users": df["user"].n_unique(),
                "items": df["item"].n_unique(),
                "start": _iso(ts.min()),
                "end": _iso(ts.max()),
            }
            if name != "train":
                users, items = df["user"].unique(), df["item"].unique()
                info["users_in_train"] = _frac(users.is_in(train_users.implode()))
                info["items_in_train"] = _frac(items.is_in(train_items.implode()))
            out[name] = info
        if self.test_start is not None:
            out["test_start"] = _iso(self.test_start)
        if self.valid_start is not None:
            out["valid_start"] = _iso(self.valid_start)
        if self.cold_items is not None:
            out["cold_items"] = self.cold_items.len()
        if self.cold_users is not None:
            out["cold_users"] = self.cold_users.len()
        if self.cold_domain is not None:
            out["cold_domain"] = self.cold_domain
        out["dropped"] = self.dropped
        return out


# --------------------------------------------------------------------------- helpers


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _frac(mask: pl.Series) -> float | None:
    return None if mask.len() == 0 else float(mask.mean())  # type: ignore[arg-type]


def _to_datetime(value: datetime | date | str, name: str) -> datetime:
    """A naive UTC datetime, as the ``timestamp`` column holds."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as e:
            raise DataError(f"{name} is not an ISO date or datetime", value=value) from e
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _parts(df: pl.DataFrame, part: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, int]:
    """Cut ``df`` (original columns only) by a part-code expression; returns train, valid, test."""
    cols = [c for c in df.columns if not c.startswith("__")]
    df = df.with_columns(part.alias(_PART))
    if _ROW in df.columns:
        df = df.sort(_ROW)
    counts = df[_PART].value_counts()
    dropped = int(counts.filter(pl.col(_PART) == _DROP)["count"].sum())
    pick = [df.filter(pl.col(_PART) == code).select(cols) for code in (_TRAIN, _VALID, _TEST)]
    return pick[0], pick[1], pick[2], dropped


def _require_nonempty(train: pl.DataFrame, test: pl.DataFrame, what: str) -> None:
    if train.height == 0:
        raise DataError(f"{what} leaves no training events")
    if test.height == 0:
        raise DataError(f"{what} leaves no test events")


def _sample(values: pl.Series, fracs: Sequence[float], seed: int) -> list[pl.Series]:
    """Seeded disjoint samples of the sorted unique ``values``, one per fraction."""
    pool = values.unique().sort()
    n = pool.len()
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for frac in fracs:
        k = round(frac * n)
        if frac > 0:
            k = max(k, 1)
        out.append(pool.gather(perm[start : start + k]).sort())
        start += k
    if start >= n:
        raise DataError(f"held-out fractions {list(fracs)} leave none of the {n} ids for train")
    return out


def _check_frac(frac: float, valid_frac: float) -> None:
    if not 0 < frac < 1 or not 0 <= valid_frac < 1 or frac + valid_frac >= 1:
        raise ValueError(
            f"need 0 < frac < 1, 0 <= valid_frac < 1 and frac + valid_frac < 1; "
            f"got frac={frac}, valid_frac={valid_frac}"
        )


# --------------------------------------------------------------------------- splitters


def time_split(
    inter: Interactions,
    *,
    test_start: datetime | date | str | None = None,
    valid_start: datetime | date | str | None = None,
    test_days: float | None = None,
    valid_days: float | None = None,
    null_timestamps: Literal["error", "train", "drop"] = "error",
) -> Split:
    """Global time cut: events at/after ``test_start`` are test, ``[valid_start, test_start)``
    valid, everything earlier train.

    Give the cuts as instants (``test_start``/``valid_start``; naive values are read as UTC like
    the ``timestamp`` column, aware ones are converted) or as trailing day counts:
    ``test_start = last event - test_days``, ``valid_start = test_start - valid_days``.

    Args:
        inter: the events; they must have timestamps.
        test_start: first instant of the test period.
        valid_start: first instant of the validation period (before ``test_start``).
        test_days: length of the test period, counted back from the last event.
        valid_days: length of the validation period, counted back from ``test_start``.
        null_timestamps: what to do with events without time when others have one:
            ``error`` (default), put them in ``train``, or ``drop`` them.

    Returns:
        The split, with ``test_start``/``valid_start`` recorded.

    Raises:
        DataError: no timestamps at all, null timestamps under ``error``, or a cut that leaves
            train or test empty.

    Example:
        >>> split = time_split(inter, test_days=7, valid_days=7)  # doctest: +SKIP
        >>> split.test.df["timestamp"].min() >= split.test_start  # doctest: +SKIP
        True
    """
    if not inter.has_time:
        raise DataError(
            "time_split needs timestamps, but every timestamp is null",
            column="timestamp",
            hint="Use leave_last_out (row order) or random_split instead.",
        )
    if (test_start is None) == (test_days is None):
        raise ValueError("give exactly one of test_start or test_days")
    if valid_start is not None and valid_days is not None:
        raise ValueError("give at most one of valid_start or valid_days")
    for name, days in (("test_days", test_days), ("valid_days", valid_days)):
        if days is not None and not days > 0:
            raise ValueError(f"{name} must be > 0; got {days}")
    if null_timestamps not in ("error", "train", "drop"):
        raise ValueError(f"null_timestamps must be error, train or drop; got {null_timestamps!r}")
    df = inter.df
    n_null = df["timestamp"].null_count()
    if n_null:
        if null_timestamps == "error":
            row = int(df["timestamp"].is_null().arg_max())  # type: ignore[arg-type]
            raise DataError(
                f"{n_null} events have no timestamp, so time_split cannot place them",
                column="timestamp",
                row=row,
                hint="Pass null_timestamps='train' or 'drop'.",
            )
        log.info("time_split: %d events without timestamp -> %s", n_null, null_timestamps)

    if test_start is not None:
        t_test = _to_datetime(test_start, "test_start")
    else:
        last = df["timestamp"].max()
        t_test = last - timedelta(days=float(test_days))  # type: ignore[arg-type,operator]
    t_valid: datetime | None = None
    if valid_start is not None:
        t_valid = _to_datetime(valid_start, "valid_start")
    elif valid_days is not None:
        t_valid = t_test - timedelta(days=float(valid_days))
    if t_valid is not None and t_valid >= t_test:
        raise ValueError(f"valid_start {t_valid} must be before test_start {t_test}")

    ts = pl.col("timestamp")
    part = pl.when(ts.is_null()).then(_TRAIN if null_timestamps == "train" else _DROP)
    part = part.when(ts >= t_test).then(_TEST)
    if t_valid is not None:
        part = part.when(ts >= t_valid).then(_VALID)
    train, valid, test, dropped = _parts(df, part.otherwise(_TRAIN))
    _require_nonempty(train, test, f"time_split at {t_test}")
    if t_valid is not None and valid.height == 0:
        log.warning("time_split: the validation period [%s, %s) has no events", t_valid, t_test)
    split = Split(
        Interactions(train),
        Interactions(valid) if t_valid is not None else None,
        Interactions(test),
        kind="time",
        test_start=t_test,
        valid_start=t_valid,
        dropped=dropped,
    )
    if log.isEnabledFor(logging.INFO):
        log.info("time_split: %s", split.summary())
    return split


def leave_last_out(
    inter: Interactions,
    *,
    n_test: int = 1,
    n_valid: int = 1,
    behavior: Behavior | str | None = None,
    min_history: int = 1,
    future: Literal["drop", "train"] = "drop",
) -> Split:
    """Per user, hold out the last ``n_test`` events (of ``behavior``, or any) as test and the
    ``n_valid`` before them as valid.

    Events are ordered by timestamp, ties broken by original row order (a stable order). Null
    timestamps sort first (treated as oldest); so when a frame has no timestamps at all, the
    order is simply the row order within each user.

    A user is split only when they have at least ``n_test + n_valid`` events of ``behavior`` and
    at least ``min_history`` events would stay in train; otherwise all their events stay in
    train. Events of other behaviors that come after a user's first test event happened "after
    the moment we predict" and are dropped under ``future="drop"`` (the default) or kept in
    train under ``future="train"``. Events between the valid and test events stay in train
    (they are history for the test prediction). Train rows that duplicate a held-out event
    exactly (same user, item, behavior and non-null timestamp) are dropped.

    Args:
        inter: the events.
        n_test: held-out test events per user (>= 1).
        n_valid: held-out validation events per user (>= 0; 0 gives ``valid=None``).
        behavior: only events of this behavior are held out (e.g. ``"buy"``); None for any.
        min_history: the fewest training events a split user must keep.
        future: ``drop`` or keep (``train``) non-held-out events after the first test event.

    Returns:
        The split.

    Example:
        >>> split = leave_last_out(inter, behavior="buy", n_valid=1)  # doctest: +SKIP
    """
    if future not in ("drop", "train"):
        raise ValueError(f"future must be 'drop' or 'train'; got {future!r}")
    if n_test < 1 or n_valid < 0 or min_history < 0:
        raise ValueError(
            f"need n_test >= 1, n_valid >= 0, min_history >= 0; "
            f"got {n_test}, {n_valid}, {min_history}"
        )
    if behavior is not None and str(behavior) not in Behavior.values():
        raise DataError(f"unknown behavior; expected one of {Behavior.values()}", value=behavior)
    df = inter.df.with_row_index(_ROW).sort(["user", "timestamp", _ROW], nulls_last=False)
    cand = pl.lit(True) if behavior is None else pl.col("behavior") == str(behavior)
    df = df.with_columns(
        pl.int_range(pl.len()).over("user").alias("__pos"),
        cand.alias("__cand"),
    )
    # rank of each candidate counted from the user's end: 1 = the last one
    from_end = pl.col("__cand").cast(pl.Int64).reverse().cum_sum().reverse().over("user")
    df = df.with_columns(
        pl.when(pl.col("__cand")).then(from_end).otherwise(0).alias("__rk"),
        pl.col("__cand").sum().over("user").alias("__ncand"),
    )
    rk = pl.col("__rk")
    is_test = (rk >= 1) & (rk <= n_test)
    is_valid = (rk > n_test) & (rk <= n_test + n_valid)
    first_test = pl.when(is_test).then(pl.col("__pos")).min().over("user")
    df = df.with_columns(
        is_test.alias("__test"),
        is_valid.alias("__valid"),
        (
            ~is_test
            & ~is_valid
            & (pl.col("__pos") > first_test).fill_null(False)  # null: the user has no test
            & pl.lit(future == "drop")
        ).alias("__future"),
    )
    keeps = ~pl.col("__test") & ~pl.col("__valid") & ~pl.col("__future")
    eligible = (pl.col("__ncand") >= n_test + n_valid) & (keeps.sum().over("user") >= min_history)
    df = df.with_columns(eligible.alias("__ok"))
    held = df.filter(pl.col("__ok") & (pl.col("__test") | pl.col("__valid")))
    # exact duplicates of held-out events must not stay in train
    dup_keys = (
        held.select(EVENT_KEY)
        .drop_nulls("timestamp")
        .unique()
        .with_columns(pl.lit(True).alias("__dup"))
    )
    df = df.join(dup_keys, on=list(EVENT_KEY), how="left", maintain_order="left")
    ok = pl.col("__ok")
    part = (
        pl.when(~ok)
        .then(_TRAIN)
        .when(pl.col("__test"))
        .then(_TEST)
        .when(pl.col("__valid"))
        .then(_VALID)
        .when(pl.col("__future") | pl.col("__dup").fill_null(False))
        .then(_DROP)
        .otherwise(_TRAIN)
    )
    train, valid, test, dropped = _parts(df, part)
    _require_nonempty(train, test, "leave_last_out")
    n_users = held["user"].n_unique()
    log.info(
        "leave_last_out: %d of %d users split (%d events dropped)",
        n_users,
        inter.df["user"].n_unique(),
        dropped,
    )
    return Split(
        Interactions(train),
        Interactions(valid) if n_valid > 0 else None,
        Interactions(test),
        kind="leave_last_out",
        dropped=dropped,
    )


def given_split(dataset: Dataset) -> Split:
    """The dataset's own split: ``interactions`` as train, ``valid``/``test`` as shipped.

    Raises:
        DataError: the dataset ships no test events.

    Example:
        >>> split = given_split(load("tmall"))  # doctest: +SKIP
    """
    if dataset.test is None:
        raise DataError(
            f"dataset '{dataset.name}' ships no test split",
            hint="Use time_split or leave_last_out instead.",
        )
    return Split(dataset.interactions, dataset.valid, dataset.test, kind="given")


def cold_item_split(
    inter: Interactions, *, frac: float = 0.1, seed: int = 0, valid_frac: float = 0.0
) -> Split:
    """Hold out a seeded fraction of items entirely: all their events go to test (or valid).

    Items are drawn from the sorted unique item ids, so the result depends only on the seed and
    the set of items, not on row order.

    Args:
        inter: the events.
        frac: fraction of items whose events form the test part.
        seed: random seed.
        valid_frac: fraction of (other) items whose events form the valid part; 0 for none.

    Returns:
        The split with ``cold_items`` set; train has none of those items.

    Example:
        >>> split = cold_item_split(inter, frac=0.2, seed=1)  # doctest: +SKIP
        >>> split.train.df["item"].is_in(split.cold_items.implode()).any()  # doctest: +SKIP
        False
    """
    _check_frac(frac, valid_frac)
    test_items, valid_items = _sample(inter.df["item"], [frac, valid_frac], seed)
    item = pl.col("item")
    part = (
        pl.when(item.is_in(test_items.implode()))
        .then(_TEST)
        .when(item.is_in(valid_items.implode()))
        .then(_VALID)
        .otherwise(_TRAIN)
    )
    train, valid, test, _ = _parts(inter.df, part)
    _require_nonempty(train, test, "cold_item_split")
    return Split(
        Interactions(train),
        Interactions(valid) if valid_frac > 0 else None,
        Interactions(test),
        kind="cold_item",
        cold_items=pl.concat([test_items, valid_items]).sort().alias("item"),
    )


def cold_user_split(
    inter: Interactions,
    *,
    frac: float = 0.1,
    seed: int = 0,
    valid_frac: float = 0.0,
    domain: str | None = None,
    overlap_only: bool = True,
) -> Split:
    """Hold out a seeded fraction of users: their events go to test (or valid), none to train.

    With ``domain=`` only the held-out users' events in that (target) domain are held out; they
    keep their other-domain history in train, which is the cross-domain cold-start setting.
    Then users are drawn among those with events in ``domain`` and, when ``overlap_only``, also
    events in some other domain.

    Args:
        inter: the events.
        frac: fraction of (eligible) users forming the test part.
        seed: random seed.
        valid_frac: fraction of (other eligible) users forming the valid part.
        domain: hold out only this domain's events of the drawn users.
        overlap_only: with ``domain``, draw only users who also have other-domain events.

    Returns:
        The split with ``cold_users`` (and ``cold_domain``) set.

    Raises:
        DataError: ``domain`` has no events, or no user is eligible.

    Example:
        >>> split = cold_user_split(inter, frac=0.2, domain="books")  # doctest: +SKIP
    """
    _check_frac(frac, valid_frac)
    df = inter.df
    in_scope = pl.lit(True)
    pool = df["user"]
    if domain is not None:
        in_scope = pl.col("domain") == domain
        target = df.filter(in_scope)
        if target.height == 0:
            raise DataError(
                f"no events in domain '{domain}'",
                column="domain",
                hint=f"domains present: {sorted(df['domain'].unique().to_list())}",
            )
        pool = target["user"].unique()
        if overlap_only:
            other = df.filter(pl.col("domain") != domain)["user"].unique()
            pool = pool.filter(pool.is_in(other.implode()))
        if pool.len() == 0:
            raise DataError(f"no user has events both in '{domain}' and another domain")
    test_users, valid_users = _sample(pool, [frac, valid_frac], seed)
    user = pl.col("user")
    part = (
        pl.when(in_scope & user.is_in(test_users.implode()))
        .then(_TEST)
        .when(in_scope & user.is_in(valid_users.implode()))
        .then(_VALID)
        .otherwise(_TRAIN)
    )
    train, valid, test, _ = _parts(df, part)
    _require_nonempty(train, test, "cold_user_split")
    return Split(
        Interactions(train),
        Interactions(valid) if valid_frac > 0 else None,
        Interactions(test),
        kind="cold_user",
        cold_users=pl.concat([test_users, valid_users]).sort().alias("user"),
        cold_domain=domain,
    )


def random_split(
    inter: Interactions,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """Row-level random split into (train, test) or (train, valid, test) fractions.

    Exact duplicate events (same user, item, behavior, timestamp) are kept in one part so they
    cannot leak. Ignores time: prefer :func:`time_split` when the data has it.

    Args:
        inter: the events.
        fractions: two (train, test) or three (train, valid, test) fractions summing to 1.
        seed: random seed.

    Example:
        >>> split = random_split(inter, (0.8, 0.1, 0.1), seed=0)  # doctest: +SKIP
    """
    fr = [float(f) for f in fractions]
    if len(fr) not in (2, 3) or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-9:
        raise ValueError(f"fractions must be 2 or 3 non-negative numbers summing to 1; got {fr}")
    if len(fr) == 2:
        fr = [fr[0], 0.0, fr[1]]
    df = inter.df.with_row_index(_ROW)
    groups = df.select(EVENT_KEY).unique(maintain_order=True).with_row_index("__g")
    df = df.join(groups, on=list(EVENT_KEY), how="left", nulls_equal=True, maintain_order="left")
    n = groups.height
    u = np.random.default_rng(seed).random(n)
    code = np.where(u < fr[0], _TRAIN, np.where(u < fr[0] + fr[1], _VALID, _TEST))
    part = pl.Series(code.astype(np.int64)).gather(df["__g"])
    train, valid, test, _ = _parts(df, pl.lit(part))
    _require_nonempty(train, test, f"random_split {fractions}")
    return Split(
        Interactions(train),
        Interactions(valid) if fr[1] > 0 else None,
        Interactions(test),
        kind="random",
    )


# --------------------------------------------------------------------------- checks


def check_no_leakage(split: Split) -> None:
    """Raise :class:`LeakageError` when held-out information is in the training part.

    Checks that no valid/test event appears in train (same user, item, behavior and timestamp;
    events with a null timestamp cannot be identified and are not compared), that valid and test
    share no event, that cold items/users are absent from train (for a domain cold-user split:
    absent from train in that domain), and that time cuts are respected.

    Example:
        >>> check_no_leakage(time_split(inter, test_days=7))  # doctest: +SKIP
    """
    problems: list[str] = []
    key = list(EVENT_KEY)
    train = split.train.df.select(key).drop_nulls("timestamp").unique()
    held = [(name, p.df) for name, p in split.parts().items() if name != "train"]
    for name, df in held:
        n = df.select(key).join(train, on=key, how="semi").height
        if n:
            problems.append(f"{n} {name} events also appear in train")
    if split.valid is not None:
        n = (
            split.valid.df.select(key)
            .drop_nulls("timestamp")
            .join(split.test.df.select(key), on=key, how="semi")
            .height
        )
        if n:
            problems.append(f"{n} valid events also appear in test")
    tdf = split.train.df
    if split.cold_items is not None:
        n = tdf.filter(pl.col("item").is_in(split.cold_items.implode())).height
        if n:
            problems.append(f"{n} train events are of held-out (cold) items")
    if split.cold_users is not None:
        scope = (
            tdf if split.cold_domain is None else tdf.filter(pl.col("domain") == split.cold_domain)
        )
        n = scope.filter(pl.col("user").is_in(split.cold_users.implode())).height
        if n:
            where = "" if split.cold_domain is None else f" in domain '{split.cold_domain}'"
            problems.append(f"{n} train events{where} are of held-out (cold) users")
    first_held = split.valid_start or split.test_start
    if first_held is not None:
        n = tdf.filter(pl.col("timestamp") >= first_held).height
        if n:
            problems.append(f"{n} train events are at or after {first_held}")
        if split.valid is not None and split.test_start is not None:
            n = split.valid.df.filter(pl.col("timestamp") >= split.test_start).height
            if n:
                problems.append(f"{n} valid events are at or after {split.test_start}")
    if problems:
        raise LeakageError(f"{split.kind} split leaks: " + "; ".join(problems))
