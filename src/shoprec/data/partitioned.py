"""Events as partitioned Parquet: one file per bucket of users, each small enough for memory.

Preparing training data from events larger than memory goes through this module:

1. :func:`scan_events` — a lazy scan (Polars) of an events Parquet file or a folder of
   them (what ``shoprec data simulate`` writes: ``interactions.parquet`` in row groups of
   1M events).
2. :func:`time_cuts` — the instants of a time split (``test_days`` / ``valid_days`` back from
   the last event), from a streamed aggregate: nothing but the maximum timestamp is held.
3. :func:`partition_events` — the events, each labelled with its split part (``train``,
   ``valid``, ``test``), streamed (``sink_parquet`` with the streaming engine) into
   ``n_buckets`` files by a hash of the user id. Every event of a user lands in the same
   bucket, so anything computed per user (their touched pairs, the negatives they must not
   be given, their main domain) is computed on one bucket at a time.

Example:
    >>> import tempfile
    >>> from shoprec.data.simulate import write_shop
    >>> shop = write_shop(tempfile.mkdtemp(), n_events=5_000, n_users=200, n_items=80)
    >>> events = scan_events(shop / "interactions.parquet")
    >>> t_test, t_valid = time_cuts(events, test_days=14, valid_days=7)
    >>> parts = partition_events(
    ...     with_time_parts(events, t_test, t_valid), shop / "buckets", n_buckets=4
    ... )
    >>> len(parts), sum(pl.read_parquet(p).height for p in parts) == events.select(
    ...     pl.len()).collect().item()
    (4, True)
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from shoprec.data.schema import INTERACTION_SCHEMA
from shoprec.data.split import Split
from shoprec.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "PART",
    "partition_events",
    "scan_events",
    "split_frame",
    "time_cuts",
    "with_time_parts",
]

#: The column that names each event's split part in partitioned events.
PART = "__part"
BUCKET = "__bucket"


def scan_events(path: str | Path) -> pl.LazyFrame:
    """A lazy scan of events in shoprec's canonical columns (nothing read yet).

    Args:
        path: a Parquet file, or a folder of them (read recursively, hive partitions kept).

    Raises:
        DataError: the path does not exist or lacks a canonical column.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no events file or folder here", file=path)
    source = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
    lf = pl.scan_parquet(source)
    names = lf.collect_schema().names()
    missing = [c for c in ("user", "item", "behavior") if c not in names]
    if missing:
        raise DataError(
            f"events need the columns user, item and behavior; '{missing[0]}' is missing "
            f"(found {names})",
            file=path,
            column=missing[0],
        )
    if "timestamp" in names:
        lf = lf.with_columns(pl.col("timestamp").cast(INTERACTION_SCHEMA["timestamp"]))
    return lf


def time_cuts(
    events: pl.LazyFrame,
    *,
    test_days: float,
    valid_days: float | None = None,
    null_timestamps: str = "error",
) -> tuple[datetime, datetime | None]:
    """``(test_start, valid_start)`` of a time split counted back from the last event, as
    :func:`shoprec.data.split.time_split` sets them (a streamed maximum and null count).

    Raises:
        DataError: no timestamps at all, or nulls under ``null_timestamps="error"``.
    """
    ts = pl.col("timestamp")
    last, nulls = (
        events.select(ts.max().alias("last"), ts.null_count().alias("nulls"))
        .collect(engine="streaming")
        .row(0)
    )
    if last is None:
        raise DataError(
            "a time split needs timestamps, but every timestamp is null", column="timestamp"
        )
    if nulls and null_timestamps == "error":
        raise DataError(
            f"{nulls} events have no timestamp, so a time split cannot place them",
            column="timestamp",
            hint="Set split.null_timestamps to 'train' or 'drop'.",
        )
    t_test = last - timedelta(days=float(test_days))
    t_valid = None if valid_days is None else t_test - timedelta(days=float(valid_days))
    return t_test, t_valid


def with_time_parts(
    events: pl.LazyFrame,
    test_start: datetime,
    valid_start: datetime | None,
    null_timestamps: str = "drop",
) -> pl.LazyFrame:
    """``events`` with :data:`PART` set by the time cuts; events without a timestamp go to
    train (``null_timestamps="train"``) or are dropped (otherwise)."""
    ts = pl.col("timestamp")
    part = pl.when(ts >= test_start).then(pl.lit("test"))
    if valid_start is not None:
        part = part.when(ts >= valid_start).then(pl.lit("valid"))
    part = part.when(ts.is_not_null() | (null_timestamps == "train")).then(pl.lit("train"))
    return events.with_columns(part.otherwise(pl.lit(None, pl.String)).alias(PART)).filter(
        pl.col(PART).is_not_null()
    )


def split_frame(split: Split) -> pl.LazyFrame:
    """An in-memory split as one lazy frame of events with :data:`PART` (for
    :func:`partition_events`)."""
    parts = [
        part.df.lazy().with_columns(pl.lit(name).alias(PART))
        for name, part in split.parts().items()
        if part is not None
    ]
    return pl.concat(parts, how="vertical_relaxed")


def partition_events(
    events: pl.LazyFrame, directory: str | Path, *, n_buckets: int, seed: int = 0
) -> list[Path]:
    """Stream ``events`` into ``n_buckets`` Parquet files by a hash of the user id.

    Args:
        events: lazy events (with :data:`PART` when they are to be split).
        directory: the folder to write (replaced).
        n_buckets: how many files; choose it so one bucket fits in memory (events / buckets
            rows each, about evenly).
        seed: seed of the hash.

    Returns:
        The bucket files in bucket order (a bucket no user fell in is absent).
    """
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be at least 1, got {n_buckets}")
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    t0 = time.perf_counter()
    bucket = (pl.col("user").hash(seed) % n_buckets).cast(pl.Int32).alias(BUCKET)
    events.with_columns(bucket).sink_parquet(
        pl.PartitionBy(directory, key=BUCKET, include_key=False),
        mkdir=True,
        engine="streaming",
    )
    files = [sorted((directory / f"{BUCKET}={k}").glob("*.parquet")) for k in range(n_buckets)]
    files = [f for f in files if f]
    log.info(
        "partitioned events into %d buckets in %s (%.1fs)",
        len(files),
        directory,
        time.perf_counter() - t0,
    )
    return [_one_file(f) for f in files]


def _one_file(files: list[Path]) -> Path:
    """A bucket as one path: its single file, or its folder when the sink split it."""
    return files[0] if len(files) == 1 else files[0].parent
