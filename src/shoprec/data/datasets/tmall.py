"""Tmall view / cart / buy (the MB-CGCN release): 15,449 users x 11,953 items, no timestamps.

Layout under ``$SHOPREC_DATA/tmall_multibehavior/``::

    view/train.txt   cart/train.txt   buy/train.txt    one line per user: ``user item item ...``
    view/test.txt    cart/test.txt    buy/test.txt     one held-out ``user item`` per line

Ids are 0-based integers in the files (tab or space separated); they become strings here.
The files hold no time, so ``timestamp`` is null throughout (``meta["has_timestamps"]`` is
False) and time-based splits do not apply: use the shipped test files.

* ``Dataset.interactions``: the pairs of the three ``train.txt`` files, with behaviors
  ``view``, ``cart`` and ``buy``, domain ``default``.
* ``Dataset.test``: the pairs of the three ``test.txt`` files, each with its own behavior.
  Published benchmarks (MB-CGCN and the papers it compares with) use **buy** as the target:
  ``ds.test.of(Behavior.BUY)``, ranked against all items.

Example::

    from shoprec.data.datasets import tmall
    ds = tmall.load()
    buy_test = ds.test.of("buy")          # 15,449 held-out purchases, one per user

Note that a user's buy test item often appears in the same user's *view* (and sometimes
*cart*) train history: viewing before buying is how the log was recorded, so auxiliary
behaviors carry signal about the target. Only the same-behavior train file is free of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from shoprec.data.errors import DataError
from shoprec.data.paths import dataset_dir
from shoprec.data.schema import Behavior, Dataset, DropReport, Interactions

log = logging.getLogger(__name__)

NAME = "tmall"
SOURCE = "https://github.com/SS-00-SS/MBCGCN"
FOLDER = "tmall_multibehavior"

#: The behaviors shipped, in funnel order, each as a sub-folder.
BEHAVIORS: tuple[Behavior, ...] = (Behavior.VIEW, Behavior.CART, Behavior.BUY)


def _read_token_lines(path: Path) -> pl.DataFrame:
    """Read a whitespace-separated file into ``row`` (0-based line) and ``tokens`` (list).

    Blank lines keep their row with an empty token list, so row numbers match the file.
    """
    lines = pl.Series("line", path.read_text().splitlines(), dtype=pl.String)
    frame = pl.DataFrame(lines).with_row_index("row")
    tokens = (
        pl.when(pl.col("line").str.strip_chars() == "")
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .otherwise(pl.col("line").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" "))
    )
    frame = frame.select("row", tokens.alias("tokens"))
    bad = (
        frame.select("row", "tokens")
        .explode("tokens")
        .filter(pl.col("tokens").is_not_null() & ~pl.col("tokens").str.contains(r"^\d+$"))
    )
    if bad.height:
        raise DataError(
            "ids must be non-negative integers",
            file=path,
            row=int(bad["row"][0]),
            value=bad["tokens"][0],
        )
    return frame


def _canonical_id(expr: pl.Expr) -> pl.Expr:
    """``"007"`` and ``"7"`` are the same integer id: print it without leading zeros."""
    return expr.cast(pl.Int64).cast(pl.String)


def _read_train(path: Path, behavior: Behavior, report: DropReport) -> tuple[pl.DataFrame, int]:
    """Parse a ``user item item ...`` file into (user, item, behavior) pairs."""
    frame = _read_token_lines(path)
    n_tokens = frame["tokens"].list.len()
    blank = int((n_tokens == 0).sum())
    no_items = int((n_tokens == 1).sum())
    report.add(f"blank line in {behavior}/train.txt", blank)
    report.add(f"user without items in {behavior}/train.txt", no_items)
    pairs = (
        frame.filter(n_tokens >= 2)
        .select(
            _canonical_id(pl.col("tokens").list.first()).alias("user"),
            pl.col("tokens").list.slice(1).alias("item"),
        )
        .explode("item")
        .with_columns(_canonical_id(pl.col("item")), pl.lit(behavior.value).alias("behavior"))
    )
    unique = pairs.unique(subset=["user", "item"], keep="first", maintain_order=True)
    report.add(f"duplicate (user, item) in {behavior}/train.txt", pairs.height - unique.height)
    return unique, frame.height


def _read_test(path: Path, behavior: Behavior, report: DropReport) -> tuple[pl.DataFrame, int]:
    """Parse a ``user item`` per line file."""
    frame = _read_token_lines(path)
    n_tokens = frame["tokens"].list.len()
    wrong = frame.filter((n_tokens != 2) & (n_tokens != 0))
    if wrong.height:
        raise DataError(
            "a test line must hold exactly 'user item'",
            file=path,
            row=int(wrong["row"][0]),
            value=" ".join(wrong["tokens"][0].to_list()),
        )
    report.add(f"blank line in {behavior}/test.txt", int((n_tokens == 0).sum()))
    pairs = frame.filter(n_tokens == 2).select(
        _canonical_id(pl.col("tokens").list.get(0)).alias("user"),
        _canonical_id(pl.col("tokens").list.get(1)).alias("item"),
        pl.lit(behavior.value).alias("behavior"),
    )
    return pairs, frame.height


def load() -> Dataset:
    """Load Tmall view / cart / buy with the shipped per-behavior test files.

    Returns:
        A :class:`Dataset` whose ``interactions`` are the train pairs of all three behaviors
        (timestamp null, domain ``default``) and whose ``test`` holds the view, cart and buy
        test pairs (benchmarks use ``test.of("buy")``).

    Raises:
        DatasetNotFoundError: when the folder or one of the six files is missing.
        DataError: when a line holds something other than integer ids.
    """
    required = tuple(f"{b}/{split}.txt" for b in BEHAVIORS for split in ("train", "test"))
    root = dataset_dir(FOLDER, name=NAME, source=SOURCE, required=required)
    report = DropReport()
    raw_rows = 0
    train_parts, test_parts = [], []
    for behavior in BEHAVIORS:
        pairs, n = _read_train(root / behavior.value / "train.txt", behavior, report)
        train_parts.append(pairs)
        raw_rows += n
        pairs, n = _read_test(root / behavior.value / "test.txt", behavior, report)
        test_parts.append(pairs)
        raw_rows += n
    interactions = Interactions.from_frame(pl.concat(train_parts))
    test = Interactions.from_frame(pl.concat(test_parts))
    if report.total:
        log.warning("%s: dropped %d raw entries: %s", NAME, report.total, report.to_dict())
    all_items = pl.concat([interactions.df["item"], test.df["item"]]).n_unique()
    all_users = pl.concat([interactions.df["user"], test.df["user"]]).n_unique()
    meta = {
        "source": SOURCE,
        "folder": str(root),
        "has_timestamps": False,
        "note": "the files hold no time: timestamp is null; use the shipped test files",
        "target_behavior": Behavior.BUY.value,
        "n_users": all_users,
        "n_items": all_items,
        "pairs": {b.value: int(interactions.df["behavior"].eq(b.value).sum()) for b in BEHAVIORS},
    }
    log.info(
        "%s: %d train pairs (%s), %d test pairs, %d users x %d items",
        NAME,
        len(interactions),
        meta["pairs"],
        len(test),
        all_users,
        all_items,
    )
    return Dataset(
        name=NAME,
        interactions=interactions,
        test=test,
        raw_rows=raw_rows,
        dropped=report,
        meta=meta,
    )
