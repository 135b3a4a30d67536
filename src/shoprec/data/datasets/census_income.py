"""UCI census-income (KDD), the two-task benchmark of the MMoE paper (Ma et al., KDD 2018).

Layout under ``$SHOPREC_DATA/census_income/``: ``census-income.test.gz``, a gzipped CSV with
no header and the 42 columns of the original ``census-income.names`` (age, class of worker,
..., income label). Only the original *test* file (99,762 rows) is shipped; pass
``split_seed`` for a seeded 80/10/10 train/valid/test split of it.

Reading rules:

* every value is read as a string with **no** null inference, then stripped of the leading
  space the file puts before each value; ``?`` (and only ``?``) means missing and becomes
  null. The literal ``NA`` of ``hispanic origin`` is a real category ("not answered"), not
  a missing value, and is kept;
* the seven continuous columns are cast to Float64; everything else stays a string.

The frame holds, with snake_case names: the 32 categorical features, the 7 numeric
features, ``instance_weight`` (the census sampling weight: in the frame, in no feature
list), and the labels ``income_50k`` (1 when the income label is ``50000+.``) and
``never_married`` (1 when ``marital stat`` is ``Never married``). ``marital stat`` and the
raw income label are not in the frame, since each alone gives a label away.

Example::

    from shoprec.data.datasets import census_income
    ds = census_income.load(split_seed=0)
    train = ds.frame.filter(ds.frame["split"] == "train")
"""

from __future__ import annotations

import gzip
import io
import logging

import numpy as np
import polars as pl

from shoprec.data.paths import dataset_dir
from shoprec.data.schema import (
    DEFAULT_ON_BAD_ROWS,
    DropReport,
    OnBadRows,
    RowChecks,
    TabularDataset,
    check_finite,
)
from shoprec.errors import DataError

log = logging.getLogger(__name__)

NAME = "census_income"
SOURCE = "https://archive.ics.uci.edu/dataset/117/census+income+kdd"
FOLDER = "census_income"
FILE = "census-income.test.gz"

#: The 42 columns of census-income.names, in file order (original names).
COLUMNS: tuple[str, ...] = (
    "age",
    "class of worker",
    "detailed industry recode",
    "detailed occupation recode",
    "education",
    "wage per hour",
    "enroll in edu inst last wk",
    "marital stat",
    "major industry code",
    "major occupation code",
    "race",
    "hispanic origin",
    "sex",
    "member of a labor union",
    "reason for unemployment",
    "full or part time employment stat",
    "capital gains",
    "capital losses",
    "dividends from stocks",
    "tax filer stat",
    "region of previous residence",
    "state of previous residence",
    "detailed household and family stat",
    "detailed household summary in household",
    "instance weight",
    "migration code-change in msa",
    "migration code-change in reg",
    "migration code-move within reg",
    "live in this house 1 year ago",
    "migration prev res in sunbelt",
    "num persons worked for employer",
    "family members under 18",
    "country of birth father",
    "country of birth mother",
    "country of birth self",
    "citizenship",
    "own business or self employed",
    "fill inc questionnaire for veteran's admin",
    "veterans benefits",
    "weeks worked in year",
    "year",
    "income",
)

#: The continuous columns of census-income.names (instance weight excepted).
NUMERIC_RAW: tuple[str, ...] = (
    "age",
    "wage per hour",
    "capital gains",
    "capital losses",
    "dividends from stocks",
    "num persons worked for employer",
    "weeks worked in year",
)

LABELS: list[str] = ["income_50k", "never_married"]
INCOME_HIGH = "50000+."
INCOME_LOW = "- 50000."
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def snake(name: str) -> str:
    """``"hispanic origin"`` -> ``"hispanic_origin"``; ``"code-change"`` -> ``"code_change"``."""
    out = "".join(c if c.isalnum() else "_" for c in name.lower())
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")


_EXCLUDED = {"instance weight", "marital stat", "income"}
NUMERIC: list[str] = [snake(c) for c in NUMERIC_RAW]
CATEGORICAL: list[str] = [snake(c) for c in COLUMNS if c not in NUMERIC_RAW and c not in _EXCLUDED]


def split_column(
    n: int, seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> pl.Series:
    """A seeded train/valid/test assignment of ``n`` rows.

    A NumPy ``Generator`` permutation puts the first ``floor(0.8 n)`` permuted rows in
    ``train``, the next ``floor(0.1 n)`` in ``valid`` and the rest in ``test``; the same seed
    always gives the same column.

    Args:
        n: number of rows.
        seed: the seed of ``numpy.random.default_rng``.
        fractions: train, valid and test fractions (summing to 1).

    Returns:
        A String series named ``split`` of length ``n``.
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(n * fractions[0])
    n_valid = int(n * fractions[1])
    codes = np.empty(n, dtype=np.int8)
    codes[perm[:n_train]] = 0
    codes[perm[n_train : n_train + n_valid]] = 1
    codes[perm[n_train + n_valid :]] = 2
    names = np.array(["train", "valid", "test"])
    return pl.Series("split", names[codes], dtype=pl.String)


def load(
    split_seed: int | None = None, on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS
) -> TabularDataset:
    """Load census-income (KDD) as a two-task tabular dataset.

    Args:
        split_seed: when given, add a ``split`` column with a seeded 80/10/10
            ``train``/``valid``/``test`` assignment (see :func:`split_column`).
        on_bad_rows: a row with a NaN or infinite number (``nan`` / ``inf`` read as floats)
            is dropped and counted (``drop``) or refused (``refuse``).

    Returns:
        A :class:`TabularDataset` with labels ``income_50k`` and ``never_married``.

    Raises:
        DatasetNotFoundError: when the file is missing.
        DataError: when a row has the wrong number of fields, a numeric field is not a
            number or the income label is neither ``- 50000.`` nor ``50000+.``.
    """
    root = dataset_dir(FOLDER, name=NAME, source=SOURCE, required=(FILE,))
    path = root / FILE
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    try:
        df = pl.read_csv(
            io.BytesIO(raw),
            has_header=False,
            new_columns=list(COLUMNS),
            infer_schema=False,
            null_values=None,
            empty_string_is_null=False,
            quote_char=None,
        )
    except pl.exceptions.ComputeError as e:
        raise DataError(f"cannot be read as a {len(COLUMNS)}-column CSV: {e}", file=path) from e
    if df.width != len(COLUMNS):
        raise DataError(f"expected {len(COLUMNS)} columns, found {df.width}", file=path)
    df = df.with_columns(pl.all().str.strip_chars()).with_columns(
        pl.when(pl.all() == "?").then(None).otherwise(pl.all()).name.keep()
    )
    report = DropReport()

    income = df["income"]
    bad = ~income.is_in([INCOME_HIGH, INCOME_LOW]) | income.is_null()
    if bad.any():
        row = int(bad.arg_max())  # type: ignore[arg-type]
        raise DataError(
            f"income label must be '{INCOME_LOW}' or '{INCOME_HIGH}'",
            file=path,
            column="income",
            row=row,
            value=income[row],
        )
    for col in (*NUMERIC_RAW, "instance weight"):
        cast = df[col].cast(pl.Float64, strict=False)
        bad = cast.is_null() & df[col].is_not_null()
        if bad.any():
            row = int(bad.arg_max())  # type: ignore[arg-type]
            raise DataError("not a number", file=path, column=col, row=row, value=df[col][row])

    renamed = {c: snake(c) for c in COLUMNS}
    frame = df.select(
        *[pl.col(c).alias(renamed[c]) for c in COLUMNS if renamed[c] in CATEGORICAL],
        *[pl.col(c).cast(pl.Float64).alias(renamed[c]) for c in NUMERIC_RAW],
        pl.col("instance weight").cast(pl.Float64).alias("instance_weight"),
        (pl.col("income") == INCOME_HIGH).cast(pl.Int64).alias("income_50k"),
        (pl.col("marital stat") == "Never married")
        .fill_null(False)
        .cast(pl.Int64)
        .alias("never_married"),
    )
    numbers = [renamed[c] for c in NUMERIC_RAW] + ["instance_weight"]
    checks = RowChecks(
        on_bad_rows, report, path, {v: k for k, v in renamed.items()}, header_lines=0
    )
    frame = check_finite(frame, numbers, checks)
    if split_seed is not None:
        frame = frame.with_columns(split_column(frame.height, split_seed))
    rates = {label: float(frame[label].mean()) for label in LABELS}  # type: ignore[arg-type]
    log.info("%s: %d rows, positive rates %s", NAME, frame.height, rates)
    return TabularDataset(
        name=NAME,
        frame=frame,
        categorical=list(CATEGORICAL),
        numeric=list(NUMERIC),
        labels=list(LABELS),
        raw_rows=df.height,
        dropped=report,
        meta={
            "source": SOURCE,
            "file": str(path),
            "weight_column": "instance_weight",
            "missing_marker": "?",
            "positive_rates": rates,
            "split_seed": split_seed,
            "split_fractions": SPLIT_FRACTIONS if split_seed is not None else None,
            "note": "only the original test file; 'NA' in hispanic_origin is a category",
        },
    )
