"""Public research release layouts as loaders with a plain config.

Many published recommender datasets ship as a handful of text files with integer ids rather
than as an event log. Two layouts cover most of them:

* **behavior lines** (Tmall / MB-CGCN, Beibei, IJCAI multi-behavior releases): one file per
  behavior, one line per user, ``user item item ...``; optional test / valid files in the same
  line format. Read with :func:`load_behavior_lines`.
* **domain pairs** (DisenCDR, cross-domain and cold-start releases): a folder with one
  sub-folder per domain, each holding ``train.txt`` (and optionally ``valid.txt`` /
  ``test.txt``) with ``user<TAB>item[<TAB>rating]`` lines; users are shared across domains by
  id. Read with :func:`load_domain_pairs`.

Both give a :class:`~shoprec.data.schema.Dataset`: train files become ``interactions``, the
shipped held-out files ``test`` / ``valid``. The files hold no time, so ``timestamp`` is null
and ``meta["has_timestamps"]`` is False: use the shipped held-out files, not a time split.
Ids must be non-negative integers in the files; they become strings without leading zeros
(``"007"`` and ``"7"`` are one id). Items that occur only in held-out files are kept (and
counted in ``meta["test_only_items"]``), never dropped. Blank lines, users without items and
repeated ``(user, item)`` pairs within one file are dropped and counted in ``Dataset.dropped``;
everything else that cannot be read raises :class:`~shoprec.errors.DataError` naming the
file, the line number and the line.

:func:`load_release` takes the same arguments as a plain mapping (the ``data: {release: ...}``
form of an experiment config)::

    from shoprec.data.datasets.releases import load_release
    ds = load_release({"format": "behavior_lines", "root": "/data/tmall",
                       "behaviors": {"view": "view/train.txt", "buy": "buy/train.txt"},
                       "test": {"buy": "buy/test.txt"}})
    ds = load_release({"format": "domain_pairs", "folder": "/data/amazon",
                       "domains": {"sport_cloth": "sport", "cloth_sport": "cloth"}})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from shoprec.data.schema import (
    DEFAULT_ON_BAD_ROWS,
    Behavior,
    Dataset,
    DropReport,
    Interactions,
    OnBadRows,
    RowChecks,
)
from shoprec.errors import DataError

log = logging.getLogger(__name__)

PathLike = str | Path

#: Formats :func:`load_release` understands.
FORMATS: tuple[str, ...] = ("behavior_lines", "domain_pairs")

_ID = r"^\d{1,18}$"  # a non-negative integer that fits an Int64
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_MAX_LISTED = 20  # entries listed when a folder's content is shown in an error


# ---------------------------------------------------------------- reading lines


def _listing(folder: Path) -> str:
    """A short, sorted listing of a folder's entries (sub-folders end with ``/``)."""
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not entries:
        return "it is empty"
    more = f" and {len(entries) - _MAX_LISTED} more" if len(entries) > _MAX_LISTED else ""
    return "it holds " + ", ".join(entries[:_MAX_LISTED]) + more


def _not_found(path: Path, what: str) -> DataError:
    """A 'not found' error that shows what the nearest existing folder holds."""
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    found = f"; {parent} exists and {_listing(parent)}" if parent.is_dir() else ""
    return DataError(f"{what} not found{found}", file=path)


def _cut(value: object) -> object:
    """A long text shown by its start and its length (a 1000-digit id, a runaway line)."""
    if isinstance(value, str) and len(value) > 80:
        return f"{value[:40]}... ({len(value)} characters)"
    return value


def _line_error(path: Path, row: int, message: str, line: str, value: object) -> DataError:
    """An error for one line: names the file, the 1-based line number and the line itself."""
    line, value = _cut(line), _cut(value)
    err = DataError(f"line {row + 1}: {message}; the line reads {line!r}", file=path, value=value)
    err.row = row  # 0-based, for callers that inspect the error
    return err


def read_fields(path: PathLike, separator: str | None = None) -> pl.DataFrame:
    """Read a text file into one row per line, split into fields.

    Args:
        path: the file.
        separator: the field separator; None splits on any run of whitespace (so tabs and
            spaces may be mixed). With an explicit separator an empty field (``"1\\t\\t2"``)
            is kept as ``""`` for the caller to reject.

    Returns:
        A frame with ``row`` (0-based line index, UInt32), ``line`` (the raw line) and
        ``fields`` (list of stripped strings; empty for a blank line), one row per line, so
        row numbers always match the file.

    Raises:
        DataError: the file is missing (the message lists what its folder holds), is not
            UTF-8 text, or holds no non-blank line.
    """
    path = Path(path)
    if not path.is_file():
        raise _not_found(path, "file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=path) from e
    frame = pl.DataFrame({"line": pl.Series(text.splitlines(), dtype=pl.String)})
    frame = frame.with_row_index("row")
    stripped = pl.col("line").str.strip_chars()
    if separator is None:
        split = stripped.str.replace_all(r"\s+", " ").str.split(" ")
    else:
        split = pl.col("line").str.split(separator).list.eval(pl.element().str.strip_chars())
    fields = pl.when(stripped == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(split)
    frame = frame.with_columns(fields.alias("fields"))
    if frame.height == 0 or frame["fields"].list.len().max() == 0:
        raise DataError("the file is empty (no non-blank line)", file=path)
    return frame


def _check_fields(
    frame: pl.DataFrame, path: Path, *, ids: pl.Expr, rating: pl.Expr | None = None
) -> None:
    """Raise for the first field that is not a valid id (or rating), naming the line.

    Args:
        frame: from :func:`read_fields`.
        path: the file, for the message.
        ids: a boolean expression over ``pos`` (the 0-based field position in its line)
            saying which fields are ids.
        rating: the same for fields that must be numbers.
    """
    is_rating = pl.lit(False) if rating is None else rating
    bad = (
        frame.select("row", "line", pl.col("fields").alias("field"))
        .explode("field")
        .filter(pl.col("field").is_not_null())
        .with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
        .with_columns(ids.alias("is_id"), is_rating.alias("is_rating"))
        .filter(
            (pl.col("is_id") & ~pl.col("field").str.contains(_ID))
            | (pl.col("is_rating") & ~pl.col("field").str.contains(_NUMBER))
        )
    )
    if bad.height == 0:
        return
    row, line, value, pos, _, is_rating_field = bad.row(0)
    if value == "":
        message = f"field {pos + 1} is empty"
    elif is_rating_field:
        message = f"field {pos + 1} ({value!r}) is not a number"
    else:
        shown = _cut(value)
        message = f"field {pos + 1} ({shown!r}) is not a non-negative integer id of 1-18 digits"
    raise _line_error(path, row, message, line, value)


def _canonical_id(expr: pl.Expr) -> pl.Expr:
    """``"007"`` and ``"7"`` are the same integer id: print it without leading zeros."""
    return expr.cast(pl.Int64).cast(pl.String)


def _dedupe(pairs: pl.DataFrame, label: str, report: DropReport) -> pl.DataFrame:
    unique = pairs.unique(subset=["user", "item"], keep="first", maintain_order=True)
    report.add(f"duplicate (user, item) in {label}", pairs.height - unique.height)
    return unique


def read_user_lines(
    path: PathLike,
    behavior: Behavior | str,
    *,
    label: str | None = None,
    separator: str | None = None,
    report: DropReport | None = None,
) -> tuple[pl.DataFrame, int]:
    """Read a line-per-user file (``user item item ...``) into canonical pairs.

    Args:
        path: the file.
        behavior: the behavior of every pair.
        label: how the file is named in drop reasons (default: the path).
        separator: the field separator; None for any whitespace.
        report: where dropped blank lines, users without items and repeated pairs are counted.

    Returns:
        ``(pairs, lines)``: pairs with string ``user``, ``item`` and ``behavior`` columns in
        file order (repeats removed), and the number of lines read.

    Raises:
        DataError: a missing or empty file, or a field that is not a non-negative integer.
    """
    path = Path(path)
    label = str(path) if label is None else label
    report = DropReport() if report is None else report
    frame = read_fields(path, separator)
    _check_fields(frame, path, ids=pl.lit(True))
    n = frame["fields"].list.len()
    report.add(f"blank line in {label}", int((n == 0).sum()))
    report.add(f"user without items in {label}", int((n == 1).sum()))
    pairs = (
        frame.filter(n >= 2)
        .select(
            _canonical_id(pl.col("fields").list.first()).alias("user"),
            pl.col("fields").list.slice(1).alias("item"),
        )
        .explode("item")
        .with_columns(_canonical_id(pl.col("item")), pl.lit(str(behavior)).alias("behavior"))
    )
    return _dedupe(pairs, label, report), frame.height


def read_pair_lines(
    path: PathLike,
    *,
    label: str | None = None,
    separator: str | None = "\t",
    min_rating: float | None = None,
    report: DropReport | None = None,
) -> tuple[pl.DataFrame, int]:
    """Read ``user<SEP>item[<SEP>rating]`` lines into canonical pairs.

    Args:
        path: the file.
        label: how the file is named in drop reasons (default: the path).
        separator: the field separator (tab by default); None for any whitespace.
        min_rating: when set, lines whose rating is below it are dropped and counted (lines
            without a rating are kept).
        report: where dropped lines are counted.

    Returns:
        ``(pairs, lines)``: pairs with string ``user`` and ``item`` and a Float64 ``rating``
        (null where the line has none), repeats removed, and the number of lines read.

    Raises:
        DataError: a missing or empty file, a line with other than 2 or 3 fields, an id that
            is not a non-negative integer, or a rating that is not a number.
    """
    path = Path(path)
    label = str(path) if label is None else label
    report = DropReport() if report is None else report
    frame = read_fields(path, separator)
    n = frame["fields"].list.len()
    wrong = frame.filter((n != 0) & (n != 2) & (n != 3))
    if wrong.height:
        sep = {"\t": "<TAB>", None: " "}.get(separator, separator)
        row, line = int(wrong["row"][0]), str(wrong["line"][0])
        message = (
            f"expected 'user{sep}item' or 'user{sep}item{sep}rating', "
            f"found {wrong['fields'].list.len()[0]} field(s)"
        )
        raise _line_error(path, row, message, line, line)
    _check_fields(frame, path, ids=pl.col("pos") < 2, rating=pl.col("pos") == 2)
    report.add(f"blank line in {label}", int((n == 0).sum()))
    pairs = frame.filter(n > 0).select(
        _canonical_id(pl.col("fields").list.get(0)).alias("user"),
        _canonical_id(pl.col("fields").list.get(1)).alias("item"),
        pl.col("fields").list.get(2, null_on_oob=True).cast(pl.Float64).alias("rating"),
    )
    if min_rating is not None:
        low = pl.col("rating").lt(min_rating).fill_null(False)
        report.add(f"rating below {min_rating:g} in {label}", int(pairs.select(low.sum()).item()))
        pairs = pairs.filter(~low)
    return _dedupe(pairs, label, report), frame.height


# ---------------------------------------------------------------- behavior lines


def _behavior(name: object, where: str) -> Behavior:
    if str(name) not in Behavior.values():
        raise DataError(f"unknown behavior {name!r} in {where}; allowed: {Behavior.values()}")
    return Behavior(str(name))


def _resolve(path: PathLike, root: Path | None) -> Path:
    path = Path(path).expanduser()
    return path if root is None or path.is_absolute() else root / path


def _label(path: PathLike) -> str:
    return Path(path).as_posix()


def _held_out_files(
    files: Mapping[str, PathLike] | PathLike | None, target: Behavior, what: str
) -> dict[Behavior, PathLike]:
    if files is None:
        return {}
    if isinstance(files, Mapping):
        return {_behavior(b, f"the {what} files"): p for b, p in files.items()}
    return {target: files}


def load_behavior_lines(
    behaviors: Mapping[str, PathLike],
    test: Mapping[str, PathLike] | PathLike | None = None,
    valid: Mapping[str, PathLike] | PathLike | None = None,
    *,
    name: str = "behavior_lines",
    separator: str | None = None,
    target: str | None = None,
    root: PathLike | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Dataset:
    """Load a multi-behavior release: one ``user item item ...`` file per behavior.

    Args:
        behaviors: behavior name -> its train file, e.g. ``{"view": "view/train.txt",
            "buy": "buy/train.txt"}``. Names must be shoprec behaviors (``view``, ``cart``,
            ``buy``, ...).
        test: behavior -> held-out file in the same line format (one or more items per
            user), or a single file, which then holds the ``target`` behavior's test events.
        valid: validation files, given like ``test``.
        name: the dataset's name.
        separator: the field separator; None (default) splits on any whitespace.
        target: the behavior benchmarks predict (``meta["target_behavior"]``); default: the
            last key of ``behaviors``.
        root: folder that relative paths are taken from (default: the current directory).
        on_bad_rows: what the common checks (:mod:`shoprec.data.schema`) do with a pair that
            fails them (``drop`` and count, or ``refuse``); ids are already checked as
            integers of at most 18 digits, so none fails them today.

    Returns:
        A :class:`Dataset` with ``interactions`` from the train files (timestamp null, domain
        ``default``), ``test`` / ``valid`` from the held-out files (None when not given), and
        ``meta`` with ``has_timestamps`` (False), ``target_behavior``, ``n_users`` and
        ``n_items`` (over all files), ``pairs`` / ``test_pairs`` / ``valid_pairs`` per
        behavior, and ``test_only_items`` (items of test / valid files that no train file
        holds; they stay in ``Dataset.test`` / ``valid``).

    Raises:
        DataError: an unknown behavior name, a missing or empty file, or a line with a field
            that is not a non-negative integer id (the message names file, line and content).

    Example::

        ds = load_behavior_lines({"view": "view/train.txt", "buy": "buy/train.txt"},
                                 test={"buy": "buy/test.txt"}, root="/data/tmall")
        ds.test.of("buy")
    """
    if not behaviors:
        raise DataError("no behavior files given: 'behaviors' maps a behavior to its file")
    train_files = {_behavior(b, "the behavior files"): p for b, p in behaviors.items()}
    target_b = _behavior(target, "'target'") if target is not None else list(train_files)[-1]
    base = None if root is None else Path(root).expanduser()
    report = DropReport()
    raw_rows = 0

    def read(files: Mapping[Behavior, PathLike]) -> Interactions | None:
        nonlocal raw_rows
        if not files:
            return None
        parts = []
        for behavior, path in files.items():
            pairs, n = read_user_lines(
                _resolve(path, base),
                behavior,
                label=_label(path),
                separator=separator,
                report=report,
            )
            parts.append(pairs)
            raw_rows += n
        return Interactions.from_frame(pl.concat(parts), RowChecks(on_bad_rows, report))

    interactions = read(train_files)
    assert interactions is not None
    test_set = read(_held_out_files(test, target_b, "test"))
    valid_set = read(_held_out_files(valid, target_b, "valid"))
    held = [p.df for p in (test_set, valid_set) if p is not None]
    meta = _common_meta(interactions, held)
    meta.update(
        target_behavior=target_b.value,
        pairs=_counts(interactions.df, "behavior"),
        files={b.value: _label(p) for b, p in train_files.items()},
    )
    if test_set is not None:
        meta["test_pairs"] = _counts(test_set.df, "behavior")
    if valid_set is not None:
        meta["valid_pairs"] = _counts(valid_set.df, "behavior")
    return _finish(name, interactions, test_set, valid_set, raw_rows, report, meta)


def _counts(df: pl.DataFrame, column: str) -> dict[str, int]:
    """Rows per value of ``column``, in order of first appearance."""
    counts = df.group_by(column, maintain_order=True).len()
    return {str(k): int(v) for k, v in counts.iter_rows()}


def _common_meta(interactions: Interactions, held: list[pl.DataFrame]) -> dict[str, Any]:
    """Facts shared by both formats: sizes over all files and items seen only in held-out files."""
    every = pl.concat([part.select("user", "item") for part in (interactions.df, *held)])
    train_items = interactions.df["item"].unique().implode()
    held_items = pl.concat([h.select("item") for h in held]).unique() if held else None
    test_only = 0 if held_items is None else int((~held_items["item"].is_in(train_items)).sum())
    return {
        "has_timestamps": False,
        "note": "the files hold no time: timestamp is null; use the shipped held-out files",
        "n_users": every["user"].n_unique(),
        "n_items": every["item"].n_unique(),
        "test_only_items": test_only,
    }


def _finish(
    name: str,
    interactions: Interactions,
    test: Interactions | None,
    valid: Interactions | None,
    raw_rows: int,
    report: DropReport,
    meta: dict[str, Any],
) -> Dataset:
    if report.total:
        log.warning("%s: dropped %d raw entries: %s", name, report.total, report.to_dict())
    if meta["test_only_items"]:
        log.info("%s: %d items occur only in held-out files (kept)", name, meta["test_only_items"])
    log.info(
        "%s: %d train pairs, %d test pairs, %d valid pairs, %d users x %d items",
        name,
        len(interactions),
        0 if test is None else len(test),
        0 if valid is None else len(valid),
        meta["n_users"],
        meta["n_items"],
    )
    return Dataset(
        name=name,
        interactions=interactions,
        test=test,
        valid=valid,
        raw_rows=raw_rows,
        dropped=report,
        meta=meta,
    )


# ---------------------------------------------------------------- domain pairs

_DEFAULT_HELD_OUT = {"valid": "valid.txt", "test": "test.txt"}


def _domain_folders(root: Path, domains: Mapping[str, str] | None, train: str) -> dict[str, str]:
    """Sub-folder -> domain name, checked: each folder exists and holds the train file."""
    if domains is None:
        found = {p.name: p.name for p in sorted(root.iterdir()) if (p / train).is_file()}
        if not found:
            raise DataError(
                f"no sub-folder holds a '{train}' file, so no domain was found; {_listing(root)}",
                file=root,
                hint="Each domain needs its own sub-folder with a train file "
                "(set 'train' when the file has another name).",
            )
        return found
    chosen = {str(folder): str(domain) for folder, domain in domains.items()}
    if not chosen:
        raise DataError("'domains' is empty: map each domain's sub-folder to a domain name")
    for folder in chosen:
        if not (root / folder).is_dir():
            raise _not_found(root / folder, f"domain folder '{folder}'")
        if not (root / folder / train).is_file():
            raise _not_found(root / folder / train, f"train file of domain folder '{folder}'")
    names = list(chosen.values())
    repeated = sorted({d for d in names if names.count(d) > 1} | ({""} & set(names)))
    if repeated:
        raise DataError(
            f"'domains' must give each folder its own non-empty domain name; "
            f"{repeated} is used twice or empty: {chosen}"
        )
    return chosen


def _cold_users(held: pl.DataFrame, train: pl.DataFrame, domains: list[str]) -> dict[str, list]:
    """Per domain, the held-out users with no train event in that domain (sorted)."""
    cold = (
        held.select("user", "domain")
        .unique()
        .join(train.select("user", "domain").unique(), on=["user", "domain"], how="anti")
        .group_by("domain")
        .agg(pl.col("user").sort())
    )
    found = dict(cold.iter_rows())
    return {d: list(found.get(d, [])) for d in domains}


def load_domain_pairs(
    folder: PathLike,
    *,
    domains: Mapping[str, str] | None = None,
    train: str = "train.txt",
    valid: str | None = "valid.txt",
    test: str | None = "test.txt",
    behavior: str = "buy",
    name: str = "domain_pairs",
    separator: str | None = "\t",
    min_rating: float | None = None,
    qualify_items: bool | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Dataset:
    """Load a cross-domain (or cold-start) release: one sub-folder per domain.

    Each domain's sub-folder holds ``train`` and optionally ``valid`` / ``test`` files of
    ``user<TAB>item[<TAB>rating]`` lines. User ids are shared across domains; item ids are
    per domain.

    Args:
        folder: the release folder.
        domains: sub-folder -> domain name, in the order wanted. Default: every sub-folder
            that holds a ``train`` file, named after the sub-folder, in name order.
        train: the train file name in each domain folder (required in every domain).
        valid: the validation file name; read where present, None to skip.
        test: the test file name; read where present, None to skip. A name other than the
            default that no domain holds is an error (a typo would silently give no test).
        behavior: the behavior of every event (a review in a 5-core set is a purchase).
        name: the dataset's name.
        separator: field separator (tab); None for any whitespace.
        min_rating: drop (and count) lines whose rating is below this; None keeps all.
        qualify_items: write item ids as ``"<domain>:<id>"``. None (default) does so only
            when some item id occurs in more than one domain (then for every item, so ids
            look alike); True always; False never (the domains share one item id space).
        on_bad_rows: as in :func:`load_behavior_lines`.

    Returns:
        A :class:`Dataset`: ``interactions`` from the train files, ``valid`` / ``test`` from
        the held-out files (None when no domain has one), each with its ``domain`` column;
        timestamps null. ``meta`` holds ``domains`` (domain -> folder), ``item_id_format``,
        ``colliding_items`` (ids found in more than one domain), ``train_pairs`` per domain,
        ``test_only_items``, ``cold_users`` (domain -> test users with no train event in
        that domain; ``cold_valid_users`` likewise for validation), ``files`` read, and
        ``ratings`` (min, max and distinct values of the kept lines' ratings, when any).

    Raises:
        DataError: a missing folder or file (the message lists what was found), an unknown
            behavior, an empty file, or a bad line (file, line number and content named).

    Example::

        ds = load_domain_pairs("/data/amazon", domains={"sport_cloth": "sport",
                                                        "cloth_sport": "cloth"})
        cold = ds.meta["cold_users"]["sport"]   # evaluate these users as a slice
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise _not_found(root, "release folder")
    event = _behavior(behavior, "'behavior'")
    folders = _domain_folders(root, domains, train)
    held_names = {"valid": valid, "test": test}
    for kind, file in held_names.items():
        present = file is not None and any((root / sub / file).is_file() for sub in folders)
        if file is not None and not present and file != _DEFAULT_HELD_OUT[kind]:
            first = next(iter(folders))
            raise _not_found(root / first / file, f"{kind} file '{file}' (in no domain folder)")
    report = DropReport()
    raw_rows = 0
    parts: dict[str, list[pl.DataFrame]] = {"train": [], "valid": [], "test": []}
    files: dict[str, list[str]] = {}
    for sub, domain in folders.items():
        files[domain] = []
        for kind, file in {"train": train, **held_names}.items():
            if file is None or not (root / sub / file).is_file():
                continue
            label = f"{sub}/{file}"
            pairs, n = read_pair_lines(
                root / sub / file,
                label=label,
                separator=separator,
                min_rating=min_rating,
                report=report,
            )
            parts[kind].append(pairs.with_columns(pl.lit(domain).alias("domain")))
            files[domain].append(file)
            raw_rows += n
    frames = {kind: pl.concat(p) if p else None for kind, p in parts.items()}
    every = pl.concat([f for f in frames.values() if f is not None])
    colliding = int(
        every.select("item", "domain")
        .unique()
        .group_by("item")
        .len()
        .select(pl.col("len").gt(1).sum())
        .item()
    )
    qualify = colliding > 0 if qualify_items is None else bool(qualify_items)
    item = pl.col("domain") + ":" + pl.col("item") if qualify else pl.col("item")
    canonical = [
        pl.col("user"),
        item.alias("item"),
        pl.lit(event.value).alias("behavior"),
        "domain",
    ]
    sets = {
        kind: None
        if f is None
        else Interactions.from_frame(f.select(canonical), RowChecks(on_bad_rows, report))
        for kind, f in frames.items()
    }
    interactions = sets["train"]
    assert interactions is not None  # every domain has a train file
    held = {kind: s for kind, s in sets.items() if kind != "train" and s is not None}
    domain_names = list(folders.values())
    meta = _common_meta(interactions, [s.df for s in held.values()])
    meta.update(
        domains={domain: sub for sub, domain in folders.items()},
        item_id_format="<domain>:<original item id>" if qualify else "<original item id>",
        colliding_items=colliding,
        train_pairs={d: int(interactions.df["domain"].eq(d).sum()) for d in domain_names},
        files=files,
    )
    for kind, key in (("test", "cold_users"), ("valid", "cold_valid_users")):
        if kind in held:
            meta[f"{kind}_pairs"] = _counts(held[kind].df, "domain")
            meta[key] = _cold_users(held[kind].df, interactions.df, domain_names)
    ratings = every["rating"].drop_nulls()
    if ratings.len():
        meta["ratings"] = {
            "min": float(ratings.min()),  # type: ignore[arg-type]
            "max": float(ratings.max()),  # type: ignore[arg-type]
            "distinct": ratings.n_unique(),
        }
    return _finish(name, interactions, sets["test"], sets["valid"], raw_rows, report, meta)


# ---------------------------------------------------------------- one-line config

_COMMON_KEYS = ("format", "name", "root")
_FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "behavior_lines": ("behaviors", "test", "valid", "separator", "target"),
    "domain_pairs": (
        "folder",
        "domains",
        "train",
        "valid",
        "test",
        "behavior",
        "separator",
        "min_rating",
        "qualify_items",
    ),
}


def _mapping(spec: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise DataError(f"release config key '{key}' must be a mapping, not {value!r}")
    return {str(k): v for k, v in value.items()}


def load_release(
    spec: Mapping[str, Any],
    *,
    base: PathLike | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Dataset:
    """Load a public release described by a plain mapping (a config's ``data.release``).

    Args:
        spec: ``format`` (``behavior_lines`` or ``domain_pairs``), optional ``name`` and
            ``root`` (the folder relative paths are taken from), and the keyword arguments
            of :func:`load_behavior_lines` or :func:`load_domain_pairs`. For
            ``domain_pairs``, ``folder`` defaults to ``root``.
        base: where a relative ``root`` is taken from (the config file's folder); default:
            the current directory.
        on_bad_rows: passed to the loader.

    Returns:
        The loaded :class:`Dataset`.

    Raises:
        DataError: a missing or unknown format, an unknown key (the message names it and
            lists the allowed ones), or any error of the loader.

    Example::

        load_release({"format": "domain_pairs", "folder": "/data/amazon",
                      "domains": {"sport_cloth": "sport", "cloth_sport": "cloth"}})
    """
    if not isinstance(spec, Mapping):
        raise DataError(f"a release config must be a mapping, not {spec!r}")
    fmt = spec.get("format")
    if fmt not in _FORMAT_KEYS:
        raise DataError(f"release 'format' must be one of {list(FORMATS)}, not {fmt!r}")
    allowed = (*_COMMON_KEYS, *_FORMAT_KEYS[fmt])
    for key in spec:
        if key not in allowed:
            raise DataError(
                f"unknown key '{key}' in the {fmt} release config; allowed: {list(allowed)}"
            )
    start = None if base is None else Path(base).expanduser()
    root = start if spec.get("root") is None else _resolve(str(spec["root"]), start)
    name = str(spec.get("name") or fmt)
    if fmt == "behavior_lines":
        behaviors = _mapping(spec, "behaviors")
        if not behaviors:
            raise DataError("a behavior_lines release needs 'behaviors': {behavior: file}")
        held = {
            k: _mapping(spec, k) if isinstance(spec.get(k), Mapping) else spec.get(k)
            for k in ("test", "valid")
        }
        return load_behavior_lines(
            behaviors,
            held["test"],
            held["valid"],
            name=name,
            separator=spec.get("separator"),
            target=spec.get("target"),
            root=root,
            on_bad_rows=on_bad_rows,
        )
    options = {k: spec[k] for k in _FORMAT_KEYS[fmt] if k in spec and k != "folder"}
    if "domains" in options:
        options["domains"] = _mapping(spec, "domains")
    folder = _resolve(str(spec.get("folder", ".")), root)
    return load_domain_pairs(folder, name=name, on_bad_rows=on_bad_rows, **options)
