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
    on_bad_rows: drop                         # or refuse (see below)

What is refused and what is dropped follows one policy (:mod:`shoprec.data.schema`, and the
README's "What the loaders accept"): a file that cannot be read, a missing column, a value
that cannot be read as its type or an unknown behavior raises
:class:`~shoprec.errors.DataError` naming the file, the column and the first bad row; a row
whose values read but cannot be right (empty or over-long id, NaN / infinite / negative
price, zero or negative quantity, a timestamp before 1970 or from 2100, an exact repeat) is
dropped and counted in ``Dataset.dropped`` with a warning (``on_bad_rows="drop"``, the
default) or refused like the rest (``"refuse"``). Nothing is dropped silently.
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
    DEFAULT_ON_BAD_ROWS,
    INTERACTION_SCHEMA,
    ROW,
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
        hint = (
            "Save it as UTF-8 text (most spreadsheet programs offer 'CSV UTF-8')."
            if "utf-8" in str(e).lower()
            else None
        )
        raise DataError(
            f"cannot be read as {suffix.lstrip('.') or 'CSV'}: {e}", file=path, hint=hint
        ) from e
    if df.height == 0:
        raise DataError("the file has a header but no data rows", file=path)
    return df


def _separator_hint(df: pl.DataFrame) -> str | None:
    """When the whole header is one column holding a separator, say so."""
    seps = [s for s in (";", "\t", "|", ",") if df.width == 1 and s in df.columns[0]]
    if not seps:
        return None
    return (
        f"The header is one column holding {seps[0]!r}: the file seems separated by "
        f"{seps[0]!r}; give separator: {seps[0]!r} in the config."
    )


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
                hint=_separator_hint(df),
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
                hint=_separator_hint(df),
            )
    return df


def _source_column(spec: FileSpec, canonical: str) -> str:
    """The user's own name for a canonical column, for error messages."""
    return dict(spec.columns).get(canonical, canonical)


def _first_bad(original: pl.Series, converted: pl.Series) -> int | None:
    bad = original.is_not_null() & converted.is_null()
    return int(bad.arg_max()) if bad.any() else None  # type: ignore[arg-type]


def _row(df: pl.DataFrame, pos: int | None) -> int | None:
    """The file's data row of frame position ``pos`` (rows may have been dropped before)."""
    if pos is None or ROW not in df.columns:
        return pos
    return int(df[ROW][pos])


def _checks(spec: FileSpec, on_bad_rows: OnBadRows, report: DropReport | None) -> RowChecks:
    suffix = Path(spec.path).suffix.lower()
    return RowChecks(
        on_bad_rows=on_bad_rows,
        report=report,
        file=Path(spec.path),
        columns=dict(spec.columns),
        header_lines=0 if suffix in {".parquet", ".pq"} else 1,
    )


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
    pos = _first_bad(src, out)
    if pos is not None:
        raise DataError(
            f"expected {dtype} values",
            file=file,
            column=colname,
            row=_row(df, pos),
            value=src[pos],
        )
    return df.with_columns(out.alias(col))


#: Formats tried, in order, when the timestamps are not all in the one format Polars infers
#: from the first value: the one that reads the most rows wins, and the first row it cannot
#: read is the one reported (so a bad row deep in a file is named, not the first row).
TIMESTAMP_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y",
    "%m/%d/%y %H:%M",
)


def _to_datetime(text: pl.Series, fmt: str | None) -> pl.Series | None:
    """Text parsed with ``fmt`` (None: inferred from the first value), unreadable -> null;
    time zones converted to UTC and dropped. None when Polars cannot use the format."""
    try:
        out = text.str.to_datetime(format=fmt, strict=False, time_unit="ms")
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError):
        return None
    if isinstance(out.dtype, pl.Datetime) and out.dtype.time_zone is not None:
        out = out.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return out.cast(pl.Datetime("ms"))


def _parse_timestamp(df: pl.DataFrame, spec: FileSpec) -> pl.DataFrame:
    src = df["timestamp"]
    file = Path(spec.path)
    column = _source_column(spec, "timestamp")
    if src.dtype == pl.Datetime("ms"):
        return df
    if isinstance(src.dtype, pl.Datetime | pl.Date):
        out = src.cast(pl.Datetime("ms"))
        if isinstance(src.dtype, pl.Datetime) and src.dtype.time_zone is not None:
            out = src.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(pl.Datetime("ms"))
        return df.with_columns(out.alias("timestamp"))
    note = ""
    if src.dtype.is_integer() or src.dtype.is_float():
        out = _epoch(src)
    else:
        text = src.cast(pl.String).str.strip_chars()
        numeric = text.cast(pl.Float64, strict=False)
        if numeric.null_count() == text.null_count():  # all numbers: Unix epoch
            out = _epoch(numeric)
        else:
            parsed = _to_datetime(text, spec.timestamp_format)
            fmt = spec.timestamp_format or "the format inferred from the data"
            if spec.timestamp_format is None and (
                parsed is None or parsed.null_count() > text.null_count()
            ):
                named = False  # a named format that reads as many rows is shown instead
                for candidate in TIMESTAMP_FORMATS:
                    other = _to_datetime(text, candidate)
                    if other is not None and (
                        parsed is None
                        or other.null_count() < parsed.null_count()
                        or (other.null_count() == parsed.null_count() and not named)
                    ):
                        parsed, fmt, named = other, candidate, True
            if parsed is None:
                raise DataError(
                    f"timestamps cannot be parsed with the format {spec.timestamp_format!r}",
                    file=file,
                    column=column,
                    hint="Give timestamp_format in strftime codes, e.g. '%Y-%m-%d %H:%M:%S'.",
                )
            out = parsed
            readable = len(text) - text.null_count()
            read = len(out) - out.null_count()
            if 0 < read < readable:
                note = (
                    f"; {read} of {readable} timestamps read as {fmt!r}, this one does not "
                    "(mixed formats)"
                )
    pos = _first_bad(src, out)
    if pos is not None:
        raise DataError(
            f"unparseable timestamp{note}",
            file=file,
            column=column,
            row=_row(df, pos),
            value=src[pos],
            hint="Give timestamp_format in the config (strftime codes).",
        )
    return df.with_columns(out.alias("timestamp"))


def _epoch(values: pl.Series) -> pl.Series:
    """Unix time as datetimes: seconds, or milliseconds when the typical value is that large.
    A NaN, infinite or out-of-range number gives null (reported as unparseable)."""
    values = values.cast(pl.Float64)
    values = pl.select(pl.when(values.is_finite()).then(values)).to_series()
    typical = values.abs().median()
    scale = 1 if (typical is not None and typical > 1e11) else 1000  # ms when it looks like ms
    millis = (values * scale).round()
    in_range = millis.abs() < 2**62
    millis = pl.select(pl.when(in_range).then(millis)).to_series()
    return millis.cast(pl.Int64, strict=False).cast(pl.Datetime("ms"))


def load_events(
    spec: FileSpec,
    report: DropReport | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Interactions:
    """Read an events file into canonical :class:`Interactions`.

    Args:
        spec: the file and its mapping.
        report: where rows dropped on purpose are counted (unmapped event names with
            ``drop_unmapped``, and bad rows under ``on_bad_rows="drop"``).
        on_bad_rows: ``"drop"`` or ``"refuse"`` rows whose values cannot be right (see the
            module docstring).

    Raises:
        DataError: naming the file, the column and the first bad row.
    """
    df = read_table(spec.path, spec.separator)
    file = Path(spec.path)
    df = _rename(df, spec, list(INTERACTION_SCHEMA), ["user", "item"], "events").with_row_index(ROW)
    for col in ("user", "item"):
        df = df.with_columns(pl.col(col).cast(pl.String).str.strip_chars())
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
        pos = _first_bad(beh, mapped) if beh.null_count() == 0 else int(beh.is_null().arg_max())  # type: ignore[arg-type]
        if pos is not None:
            raise DataError(
                f"unknown behavior; known: {sorted(table)}",
                file=file,
                column=_source_column(spec, "behavior"),
                row=_row(df, pos),
                value=beh[pos],
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
    report = DropReport() if report is None else report
    try:
        inter = Interactions.from_frame(df, _checks(spec, on_bad_rows, report))
    except DataError as e:
        if e.file is not None:
            raise
        raise DataError(str(e), file=file) from e
    if len(inter) == 0:
        raise DataError(
            f"no event is left: every data row was dropped ({report.to_dict()})",
            file=file,
            hint="The warnings above name the first row of each reason.",
        )
    return inter


def load_catalog(
    spec: FileSpec,
    report: DropReport | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Catalog:
    """Read a product catalog file into a canonical :class:`Catalog` (a bad price or stock is
    cleared and counted, or refused; see :func:`load_events` for the arguments)."""
    df = read_table(spec.path, spec.separator)
    file = Path(spec.path)
    df = _rename(df, spec, list(CATALOG_SCHEMA), ["item"], "catalog").with_row_index(ROW)
    df = df.with_columns(pl.col("item").cast(pl.String).str.strip_chars())
    for col in ("price", "stock"):
        if col in df.columns:
            df = _cast_column(df, col, _NUMERIC_KINDS[col](), spec)
    try:
        return Catalog.from_frame(df, _checks(spec, on_bad_rows, report))
    except DataError as e:
        if e.file is not None:
            raise
        raise DataError(str(e), file=file) from e


def load_users(
    spec: FileSpec,
    report: DropReport | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Users:
    """Read a user-attributes file into :class:`Users` (see :func:`load_events`)."""
    df = read_table(spec.path, spec.separator)
    file = Path(spec.path)
    df = _rename(df, spec, ["user"], ["user"], "users").with_row_index(ROW)
    df = df.with_columns(pl.col("user").cast(pl.String).str.strip_chars())
    try:
        return Users.from_frame(df, _checks(spec, on_bad_rows, report))
    except DataError as e:
        if e.file is not None:
            raise
        raise DataError(str(e), file=file) from e


def load_files(
    events: FileSpec,
    *,
    catalog: FileSpec | None = None,
    users: FileSpec | None = None,
    name: str | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Dataset:
    """Load a shop's own events (and optional catalog and users) into a :class:`Dataset`.

    Args:
        events: the events file.
        catalog: the product file, if any.
        users: the user-attributes file, if any.
        name: the dataset's name (default: the events file's stem).
        on_bad_rows: ``"drop"`` (default: drop, count in ``Dataset.dropped`` and warn) or
            ``"refuse"`` rows whose values cannot be right.

    Returns:
        The dataset; ``raw_rows`` counts the events file's data rows, so
        ``len(interactions) + dropped`` of the events equals it.
    """
    dropped = DropReport()
    inter = load_events(events, dropped, on_bad_rows)
    raw_rows = len(inter) + dropped.total
    ds = Dataset(
        name=name or Path(events.path).stem,
        interactions=inter,
        catalog=load_catalog(catalog, dropped, on_bad_rows) if catalog else None,
        users=load_users(users, dropped, on_bad_rows) if users else None,
        raw_rows=raw_rows,
        dropped=dropped,
        meta={"source": str(events.path), "on_bad_rows": on_bad_rows},
    )
    log.info("loaded %d events from %s", len(inter), events.path)
    return ds


def load_config(path: str | Path, on_bad_rows: OnBadRows | None = None) -> Dataset:
    """Load a dataset described by a YAML config (see the module docstring).

    ``on_bad_rows`` overrides the file's own ``on_bad_rows`` key (default ``drop``).
    """
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read the config: {e}", file=path) from e
    if not isinstance(cfg, dict) or "events" not in cfg:
        raise DataError("the config needs an 'events:' entry with at least a path", file=path)
    unknown = sorted(set(cfg) - {"name", "events", "catalog", "users", "on_bad_rows"})
    if unknown:
        raise DataError(
            f"unknown keys {unknown}; allowed: name, events, catalog, users, on_bad_rows",
            file=path,
        )
    policy = on_bad_rows or cfg.get("on_bad_rows") or DEFAULT_ON_BAD_ROWS
    if policy not in ("drop", "refuse"):
        raise DataError(f"on_bad_rows must be drop or refuse, not {policy!r}", file=path)
    base = path.parent
    return load_files(
        FileSpec.from_dict(cfg["events"], base),
        catalog=FileSpec.from_dict(cfg["catalog"], base) if cfg.get("catalog") else None,
        users=FileSpec.from_dict(cfg["users"], base) if cfg.get("users") else None,
        name=cfg.get("name"),
        on_bad_rows=policy,
    )


def load_folder(path: str | Path, on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS) -> Dataset:
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
        on_bad_rows=on_bad_rows,
    )
