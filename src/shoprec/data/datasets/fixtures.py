"""Small samples of AliExpress and Ali-CCP: impression-level click + conversion/purchase.

Layout under ``$SHOPREC_DATA/fixtures/`` (CSV with a header, samples from torch-rechub)::

    aliexpress_train_sample.csv  aliexpress_test_sample.csv
    ali_ccp_train_sample.csv     ali_ccp_val_sample.csv     ali_ccp_test_sample.csv

They fix the schema of the full downloads, so CTR/CVR loaders and models can be tested
without them. Both become a :class:`TabularDataset` with a ``split`` column (``train``,
``valid``, ``test``: the file each row came from, in that order):

* ``aliexpress``: ``categorical_1..16`` are categorical, ``numerical_1..63`` numeric, the
  labels are ``click`` and ``conversion``. ``search_id`` (the query a row was shown for)
  stays in the frame as a grouping key but is no feature, as in MTReclib.
* ``ali_ccp``: the ``D*`` fields are numeric, every other non-label field (``101``,
  ``121``, ..., ``109_14``...) is categorical (already integer-coded); the labels are
  ``click`` and ``purchase``.

Example::

    from shoprec.data.datasets import fixtures
    ds = fixtures.load("ali_ccp")
    ds.frame.group_by("split").len()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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

NAME = "fixtures"
SOURCE = "https://github.com/datawhalechina/torch-rechub/tree/main/examples/ranking/data"
FOLDER = "fixtures"


@dataclass(frozen=True)
class _Spec:
    """What one fixture set looks like."""

    prefix: str
    splits: dict[str, str]  # split name -> file suffix
    labels: tuple[str, ...]
    source: str


SPECS: dict[str, _Spec] = {
    "aliexpress": _Spec(
        prefix="aliexpress",
        splits={"train": "train", "test": "test"},
        labels=("click", "conversion"),
        source="https://tianchi.aliyun.com/dataset/74690",
    ),
    "ali_ccp": _Spec(
        prefix="ali_ccp",
        splits={"train": "train", "valid": "val", "test": "test"},
        labels=("click", "purchase"),
        source="https://tianchi.aliyun.com/dataset/408",
    ),
}

#: Columns that are in the frame but in no feature list.
_NOT_FEATURES = {"search_id"}


def _feature_lists(
    name: str, columns: list[str], labels: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """Split feature columns into (categorical, numeric) by their names."""
    features = [c for c in columns if c not in labels and c not in _NOT_FEATURES]
    if name == "aliexpress":
        categorical = [c for c in features if c.startswith("categorical_")]
        numeric = [c for c in features if c.startswith("numerical_")]
    else:
        numeric = [c for c in features if c.startswith("D")]
        categorical = [c for c in features if not c.startswith("D")]
    return categorical, numeric


def load(name: str, on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS) -> TabularDataset:
    """Load one fixture set with a ``split`` column from its per-split files.

    Args:
        name: ``"aliexpress"`` or ``"ali_ccp"``.
        on_bad_rows: a row with a NaN or infinite number is dropped and counted (``drop``)
            or refused (``refuse``).

    Returns:
        A :class:`TabularDataset`; labels are 0/1 Int64 columns.

    Raises:
        KeyError: for another name.
        DatasetNotFoundError: when the folder or a file is missing.
        DataError: when the splits' columns differ or a label is not 0/1.
    """
    if name not in SPECS:
        raise KeyError(f"unknown fixture set {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    files = {split: f"{spec.prefix}_{suffix}_sample.csv" for split, suffix in spec.splits.items()}
    root = dataset_dir(FOLDER, name=name, source=spec.source, required=tuple(files.values()))
    parts = []
    columns: list[str] | None = None
    for split, file in files.items():
        path = root / file
        try:
            df = pl.read_csv(path, null_values=None, infer_schema_length=None)
        except pl.exceptions.ComputeError as e:
            raise DataError(f"cannot be read as CSV: {e}", file=path) from e
        if columns is None:
            columns = df.columns
        elif df.columns != columns:
            raise DataError(
                f"columns differ from {files['train']}: {df.columns} vs {columns}", file=path
            )
        for label in spec.labels:
            if label not in df.columns:
                raise DataError(
                    f"label column missing; found {df.columns}", file=path, column=label
                )
            bad = ~df[label].is_in([0, 1]).fill_null(False)
            if bad.any():
                row = int(bad.arg_max())  # type: ignore[arg-type]
                raise DataError(
                    "label must be 0 or 1", file=path, column=label, row=row, value=df[label][row]
                )
        parts.append(df.with_columns(pl.lit(split).alias("split")))
    assert columns is not None
    frame = pl.concat(parts, how="vertical_relaxed")
    labels = list(spec.labels)
    categorical, numeric = _feature_lists(name, columns, spec.labels)
    frame = frame.with_columns(pl.col(labels).cast(pl.Int64), pl.col(numeric).cast(pl.Float64))
    report = DropReport()
    frame = check_finite(frame, numeric, RowChecks(on_bad_rows, report, root, header_lines=0))
    rows = {split: int((frame["split"] == split).sum()) for split in files}
    log.info("%s fixture: rows per split %s", name, rows)
    return TabularDataset(
        name=name,
        frame=frame,
        categorical=categorical,
        numeric=numeric,
        labels=labels,
        raw_rows=frame.height + report.total,
        dropped=report,
        meta={
            "source": SOURCE,
            "full_dataset": spec.source,
            "folder": str(root),
            "files": files,
            "rows_per_split": rows,
            "note": "a 100-row-or-smaller sample per split: schema fixture, not a benchmark",
        },
    )
