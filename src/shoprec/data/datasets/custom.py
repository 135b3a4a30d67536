"""Load a shop's own logs: CSV or Parquet files plus a column mapping.

A mapping says which of the user's columns holds each canonical column, and how their event
names translate into :class:`~shoprec.data.schema.Behavior` values. It can come from a YAML
file (``shoprec data describe --config shop.yaml``), CLI flags, or Python::

    from shoprec.data.datasets.custom import FileSpec, load_files
    ds = load_files(
        FileSpec("events.csv", columns={"user": "customer_id", "item": "sku",
                                        "timestamp": "ts", "behavior": "event"},
                 behaviors={"pageview": "view", "addtocart": "cart", "transaction": "buy"}),
        catalog=FileSpec("products.parquet", columns={"item": "sku", "title": "name"}),
    )

A YAML config has the same shape::

    events:
      path: events.csv
      columns: {user: customer_id, item: sku, timestamp: ts, behavior: event}
      behaviors: {pageview: view, addtocart: cart, transaction: buy}
      timestamp_format: "%Y-%m-%d %H:%M:%S"   # optional; inferred when absent
    catalog: {path: products.parquet, columns: {item: sku, title: name}}
    users: {path: users.csv}

Every problem raises :class:`~shoprec.errors.DataError` naming the file, the column and
the first bad row; nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from shoprec.data.schema import (
    CATALOG_SCHEMA,
    INTERACTION_SCHEMA,
    Behavior,
    Catalog,
    Dataset,
    DropReport,
    Interactions,
    Users,
)
from shoprec.errors import DataError

log = logging.getLogger(__name__)

_NUMERIC_KINDS = {"quantity": pl.Int64, "price": pl.Float64, "stock": pl.Int64}


@dataclass(frozen=True)
class FileSpec:
    """One input file and how its columns map onto canonical ones.

    Attributes:
        path: a ``.csv`` (or ``.tsv``/``.txt``, tab separated) or ``.parquet`` file.
        columns: canonical name -> the file's column name. Canonical columns that the file
            already names exactly need no entry.
        behaviors: the file's event names -> canonical behavior names (``view``, ``buy``...).
        default_behavior: used when the events file has no behavior column at all.
        timestamp_format: strftime format of the timestamp column; inferred when None.
            Integer timestamps are read as Unix seconds (or milliseconds when large).
        separator: CSV separator; inferred from the extension when None.
    """

    path: str | Path
    columns: Mapping[str, str] = field(default_factory=dict)
    behaviors: Mapping[str, str] = field(default_factory=dict)
    default_behavior: str = Behavior.BUY.value
    timestamp_format: str | None = None
    separator: str | None = None
    drop_unmapped: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: Path | None = None) -> FileSpec:
        """Build from a YAML/JSON mapping; relative paths are taken from ``base``."""
        if "path" not in d:
            raise DataError("each file entry in the config needs a 'path'")
        path = Path(d["path"])
        if base is not None and not path.is_absolute():
            path = base / path
        known = {
            "path",
            "columns",
            "behaviors",
            "default_behavior",
            "timestamp_format",
            "separator",
            "drop_unmapped",
        }
        unknown = set(d) - known
        if unknown:
            raise DataError(
                f"unknown keys {sorted(unknown)} in the entry for {d['path']}; "
                f"allowed: {sorted(known)}"
            )
        return cls(
            path=path,
            columns=dict(d.get("columns") or {}),
            behaviors={str(k): str(v) for k, v in (d.get("behaviors") or {}).items()},
            default_behavior=str(d.get("default_behavior", Behavior.BUY.value)),
            timestamp_format=d.get("timestamp_format"),
            separator=d.get("separator"),
            drop_unmapped=bool(d.get("drop_unmapped", False)),
        )


def read_table(path: str | Path, separator: str | None = None) -> pl.DataFrame:
    """Read a CSV/TSV (every column as text, nothing inferred) or a Parquet file.

    Raises:
        DataError: the file is missing, empty, has no data rows, or cannot be parsed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=path)
    if path.stat().st_size == 0:
        raise DataError("the file is empty", file=path)
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            df = pl.read_parquet(path)
        else:
            sep = separator or ("\t" if suffix in {".tsv", ".txt"} else ",")
            # Read as text and cast later, so a bad value is reported with its row.
            df = pl.read_csv(
                path,
                separator=sep,
                infer_schema=False,
                null_values=[""],
                truncate_ragged_lines=False,
            )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as e:
        raise DataError(f"cannot be read as {suffix.lstrip('.') or 'CSV'}: {e}", file=path) from e
    if df.height == 0:
        raise DataError("the file has a header but no data rows", file=path)
    return df


def _rename(
    df: pl.DataFrame, spec: FileSpec, canonical: list[str], required: list[str], what: str
) -> pl.DataFrame:
    """Rename mapped columns to canonical names; error on any required one missing."""
    mapping = dict(spec.columns)
    for canon, src in mapping.items():
        if canon not in canonical:
            raise DataError(
                f"the mapping names '{canon}', which is not a {what} column; "
                f"{what} columns are {canonical}",
                file=spec.path,
            )
        if src not in df.columns:
            raise DataError(
                f"the mapping says '{canon}' is in column '{src}', but the file has no such "
                f"column. Columns found: {df.columns}",
                file=spec.path,
                column=src,
            )
    renames = {src: canon for canon, src in mapping.items() if src != canon}
    # A file column that already carries a canonical name but is not mapped stays as is.
    clash = [c for c in renames.values() if c in df.columns and c not in renames]
    if clash:
        df = df.drop(clash)
    df = df.rename(renames)
    for col in required:
        if col not in df.columns:
            raise DataError(
                f"required {what} column '{col}' is missing. Columns found: {df.columns}. "
                f"Map one with columns: {{{col}: <your column>}} in the config, or the "
                f"--{col}-col flag",
                file=spec.path,
                column=col,
            )
    return df


def _source_column(spec: FileSpec, canonical: str) -> str:
    """The user's own name for a canonical column, for error messages."""
    return dict(spec.columns).get(canonical, canonical)


def _first_bad(original: pl.Series, converted: pl.Series) -> int | None:
    bad = original.is_not_null() & converted.is_null()
    return int(bad.arg_max()) if bad.any() else None  # type: ignore[arg-type]


def _cast_column(df: pl.DataFrame, col: str, dtype: pl.DataType, spec: FileSpec) -> pl.DataFrame:
    src = df[col]
    file = Path(spec.path)
    colname = _source_column(spec, col)
    if src.dtype == dtype:
        return df
    text = src.cast(pl.String).str.strip_chars() if src.dtype == pl.String else src
    if dtype == pl.Int64 and text.dtype == pl.String:
        # Accept "3" and "3.0" but not "3.5".
        as_float = text.cast(pl.Float64, strict=False)
        out = as_float.cast(pl.Int64, strict=False)
        frac = as_float.is_not_null() & (as_float != as_float.floor())
        out = pl.select(pl.when(frac).then(None).otherwise(out)).to_series()
    else:
        out = text.cast(dtype, strict=False)
    row = _first_bad(src, out)
    if row is not None:
        raise DataError(
            f"expected {dtype} values", file=file, column=colname, row=row, value=src[row]
        )
    return df.with_columns(out.alias(col))


def _parse_timestamp(df: pl.DataFrame, spec: FileSpec) -> pl.DataFrame:
    src = df["timestamp"]
    file = Path(spec.path)
    if src.dtype == pl.Datetime("ms"):
        return df
    if isinstance(src.dtype, pl.Datetime | pl.Date):
        return df.with_columns(pl.col("timestamp").cast(pl.Datetime("ms")))
    if src.dtype.is_integer() or src.dtype.is_float():
        out = _epoch(src)
    else:
        text = src.cast(pl.String).str.strip_chars()
        numeric = text.cast(pl.Float64, strict=False)
        if numeric.null_count() == text.null_count():  # all numbers: Unix epoch
            out = _epoch(numeric)
        else:
            try:
                out = text.str.to_datetime(
                    format=spec.timestamp_format, strict=False, time_unit="ms"
                )
            except pl.exceptions.ComputeError as e:
                raise DataError(
                    f"timestamps cannot be parsed ({e}). Give timestamp_format, e.g. "
                    "'%Y-%m-%d %H:%M:%S'",
                    file=file,
                    column=_source_column(spec, "timestamp"),
                    row=0,
                    value=text[0],
                ) from e
            if out.dtype != pl.Datetime("ms"):
                out = out.dt.replace_time_zone(None).cast(pl.Datetime("ms"))
    row = _first_bad(src, out)
    if row is not None:
        raise DataError(
            "unparseable timestamp",
            file=file,
            column=_source_column(spec, "timestamp"),
            row=row,
            value=src[row],
            hint="Give timestamp_format in the config (strftime codes).",
        )
    return df.with_columns(out.alias("timestamp"))


def _epoch(values: pl.Series) -> pl.Series:
    values = values.cast(pl.Float64)
    big = values.abs().max()
    scale = 1 if (big is not None and big > 1e11) else 1000  # ms when it looks like ms
    return (values * scale).cast(pl.Int64).cast(pl.Datetime("ms"))


def _check_not_null(df: pl.DataFrame, col: str, spec: FileSpec) -> None:
    nulls = df[col].is_null()
    if nulls.any():
        raise DataError(
            "null id", file=spec.path, column=_source_column(spec, col), row=int(nulls.arg_max())
        )  # type: ignore[arg-type]


def load_events(spec: FileSpec, report: DropReport | None = None) -> Interactions:
    """Read an events file into canonical :class:`Interactions` (rows dropped on purpose,
    e.g. unmapped event names with ``drop_unmapped``, are counted in ``report``)."""
    df = read_table(spec.path, spec.separator)
    file = Path(spec.path)
    df = _rename(df, spec, list(INTERACTION_SCHEMA), ["user", "item"], "events")
    for col in ("user", "item"):
        df = df.with_columns(pl.col(col).cast(pl.String).str.strip_chars())
        _check_not_null(df, col, spec)
    if "behavior" in df.columns:
        beh = df["behavior"].cast(pl.String).str.strip_chars()
        table = {**{b: b for b in Behavior.values()}, **spec.behaviors}
        for src, dst in spec.behaviors.items():
            if dst not in Behavior.values():
                raise DataError(
                    f"the behavior map sends '{src}' to '{dst}', which is not one "
                    f"of {Behavior.values()}",
                    file=file,
                )
        mapped = beh.replace_strict(table, default=None, return_dtype=pl.String)
        if spec.drop_unmapped:
            unmapped = mapped.is_null() & beh.is_not_null()
            if unmapped.any():
                counts = beh.filter(unmapped).value_counts(sort=True)
                for name, n in counts.iter_rows():
                    if report is not None:
                        report.add(f"unmapped behavior '{name}'", n)
                    log.info("dropped %d '%s' events (no behavior mapped)", n, name)
                df, beh, mapped = (
                    df.filter(~unmapped),
                    beh.filter(~unmapped),
                    mapped.filter(~unmapped),
                )
        row = _first_bad(beh, mapped) if beh.null_count() == 0 else int(beh.is_null().arg_max())  # type: ignore[arg-type]
        if row is not None:
            raise DataError(
                f"unknown behavior; known: {sorted(table)}",
                file=file,
                column=_source_column(spec, "behavior"),
                row=row,
                value=beh[row],
                hint=(
                    "Map it with behaviors: {<your name>: view|click|cart|buy|return|...}, "
                    "or set drop_unmapped: true to drop (and count) such events."
                ),
            )
        df = df.with_columns(mapped.alias("behavior"))
    else:
        df = df.with_columns(pl.lit(spec.default_behavior).alias("behavior"))
    if "timestamp" in df.columns:
        df = _parse_timestamp(df, spec)
    for col, dtype in _NUMERIC_KINDS.items():
        if col in df.columns and col in INTERACTION_SCHEMA:
            df = _cast_column(df, col, dtype(), spec)
    if "domain" in df.columns:
        df = df.with_columns(pl.col("domain").cast(pl.String))
    try:
        return Interactions.from_frame(df)
    except DataError as e:
        e.file = str(file)
        raise DataError(str(e), file=file) from e


def load_catalog(spec: FileSpec) -> Catalog:
    """Read a product catalog file into a canonical :class:`Catalog`."""
    df = read_table(spec.path, spec.separator)
    file = Path(spec.path)
    df = _rename(df, spec, list(CATALOG_SCHEMA), ["item"], "catalog")
    df = df.with_columns(pl.col("item").cast(pl.String).str.strip_chars())
    _check_not_null(df, "item", spec)
    for col in ("price", "stock"):
        if col in df.columns:
            df = _cast_column(df, col, _NUMERIC_KINDS[col](), spec)
    try:
        return Catalog.from_frame(df)
    except DataError as e:
        raise DataError(str(e), file=file) from e


def load_users(spec: FileSpec) -> Users:
    """Read a user-attributes file into :class:`Users`."""
    df = read_table(spec.path, spec.separator)
    file = Path(spec.path)
    df = _rename(df, spec, ["user"], ["user"], "users")
    _check_not_null(df, "user", spec)
    try:
        return Users.from_frame(df)
    except DataError as e:
        raise DataError(str(e), file=file) from e


def load_files(
    events: FileSpec,
    *,
    catalog: FileSpec | None = None,
    users: FileSpec | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a shop's own events (and optional catalog and users) into a :class:`Dataset`."""
    dropped = DropReport()
    inter = load_events(events, dropped)
    ds = Dataset(
        name=name or Path(events.path).stem,
        interactions=inter,
        catalog=load_catalog(catalog) if catalog else None,
        users=load_users(users) if users else None,
        raw_rows=len(inter) + dropped.total,
        dropped=dropped,
        meta={"source": str(events.path)},
    )
    log.info("loaded %d events from %s", len(inter), events.path)
    return ds


def load_config(path: str | Path) -> Dataset:
    """Load a dataset described by a YAML config (see the module docstring)."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read the config: {e}", file=path) from e
    if not isinstance(cfg, dict) or "events" not in cfg:
        raise DataError("the config needs an 'events:' entry with at least a path", file=path)
    base = path.parent
    return load_files(
        FileSpec.from_dict(cfg["events"], base),
        catalog=FileSpec.from_dict(cfg["catalog"], base) if cfg.get("catalog") else None,
        users=FileSpec.from_dict(cfg["users"], base) if cfg.get("users") else None,
        name=cfg.get("name"),
    )


def load_folder(path: str | Path) -> Dataset:
    """Load a folder in shoprec's own layout: ``interactions.parquet`` (canonical columns), and
    optionally ``catalog.parquet`` and ``users.parquet`` (as ``shoprec data simulate`` writes).
    """
    path = Path(path)
    events = path / "interactions.parquet"
    if not events.exists():
        raise DataError(
            "a dataset folder needs interactions.parquet (canonical columns user, item, "
            "timestamp, behavior, quantity, price, domain)",
            file=path,
        )
    catalog = path / "catalog.parquet"
    users = path / "users.parquet"
    return load_files(
        FileSpec(events),
        catalog=FileSpec(catalog) if catalog.exists() else None,
        users=FileSpec(users) if users.exists() else None,
        name=path.name,
    )
