"""Amazon Sport and Cloth with the same 9,928 users (the DisenCDR release, Cao et al. 2022).

Layout under ``$SHOPREC_DATA/amazon_cross_domain/``::

    sport_cloth/   the Sport domain: train.txt, test.txt, test_original.txt
    cloth_sport/   the Cloth domain: the same three files

Every line is ``user<TAB>item<TAB>1``: a review of a bought product (Amazon 5-core), so the
behavior is ``buy``; there is no time, so ``timestamp`` is null.

Ids: user ids (0-based) are shared by both domains and stay as they are (``"17"``). Item ids
are per-domain integers that overlap, so canonical item ids carry the domain as a prefix
(``"sport:123"``, ``"cloth:45"``) and can never collide; ``domain`` is ``sport`` or
``cloth``.

``test.txt`` holds one held-out item for most users: it is ``test_original.txt`` (one per
user) minus the items that never occur in the domain's train file (cold items).
``load(test_file="test_original.txt")`` gives the full one-per-user test instead.

Example::

    from shoprec.data.datasets import amazon_cross_domain
    ds = amazon_cross_domain.load()
    sport = ds.interactions.filter(ds.interactions.df["domain"] == "sport")
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from shoprec.data.errors import DataError
from shoprec.data.paths import dataset_dir
from shoprec.data.schema import Behavior, Dataset, DropReport, Interactions

log = logging.getLogger(__name__)

NAME = "amazon_cross_domain"
SOURCE = "https://github.com/cjx96/DisenCDR"
FOLDER = "amazon_cross_domain"

#: domain name -> sub-folder holding that domain's files.
DOMAINS: dict[str, str] = {"sport": "sport_cloth", "cloth": "cloth_sport"}
TEST_FILES = ("test.txt", "test_original.txt")


def _read_pairs(path: Path, domain: str, what: str, report: DropReport) -> tuple[pl.DataFrame, int]:
    """Read ``user<TAB>item<TAB>1`` lines into canonical (user, item, behavior, domain).

    Returns the pairs and the number of raw lines read.
    """
    try:
        df = pl.read_csv(
            path,
            has_header=False,
            separator="\t",
            infer_schema=False,
            quote_char=None,
            new_columns=["user", "item", "flag"],
        )
    except pl.exceptions.ComputeError as e:
        raise DataError(f"cannot be read as user<TAB>item<TAB>1 lines: {e}", file=path) from e
    if df.width != 3:
        raise DataError(f"expected 3 tab-separated fields, found {df.width}", file=path)
    for col in ("user", "item"):
        ok = df[col].str.strip_chars().str.contains(r"^\d+$")
        bad = ~ok.fill_null(False)
        if bad.any():
            row = int(bad.arg_max())  # type: ignore[arg-type]
            raise DataError(
                "ids must be non-negative integers",
                file=path,
                column=col,
                row=row,
                value=df[col][row],
            )
    not_one = df["flag"].str.strip_chars().ne("1").fill_null(True)
    report.add(f"flag other than 1 in {what}", int(not_one.sum()))
    pairs = df.filter(~not_one).select(
        pl.col("user").str.strip_chars().cast(pl.Int64).cast(pl.String),
        (
            pl.lit(f"{domain}:") + pl.col("item").str.strip_chars().cast(pl.Int64).cast(pl.String)
        ).alias("item"),
        pl.lit(Behavior.BUY.value).alias("behavior"),
        pl.lit(domain).alias("domain"),
    )
    unique = pairs.unique(subset=["user", "item"], keep="first", maintain_order=True)
    report.add(f"duplicate (user, item) in {what}", pairs.height - unique.height)
    return unique, df.height


def load(test_file: str = "test.txt") -> Dataset:
    """Load the Sport/Cloth cross-domain pair.

    Args:
        test_file: ``"test.txt"`` (the published test: held-out items seen in train) or
            ``"test_original.txt"`` (one held-out item for every user, cold items included).

    Returns:
        A :class:`Dataset`: ``interactions`` from both ``train.txt`` files, ``test`` from the
        chosen test file of both domains.

    Raises:
        ValueError: for another ``test_file``.
        DatasetNotFoundError: when a folder or file is missing.
        DataError: when a line is not ``user<TAB>item<TAB>1`` with integer ids.
    """
    if test_file not in TEST_FILES:
        raise ValueError(f"test_file must be one of {TEST_FILES}, not {test_file!r}")
    required = tuple(f"{sub}/{f}" for sub in DOMAINS.values() for f in ("train.txt", test_file))
    root = dataset_dir(FOLDER, name=NAME, source=SOURCE, required=required)
    report = DropReport()
    train_parts, test_parts = [], []
    raw_rows = 0
    for domain, sub in DOMAINS.items():
        for name, parts in (("train.txt", train_parts), (test_file, test_parts)):
            path = root / sub / name
            pairs, n = _read_pairs(path, domain, f"{sub}/{name}", report)
            raw_rows += n
            parts.append(pairs)
    interactions = Interactions.from_frame(pl.concat(train_parts))
    test = Interactions.from_frame(pl.concat(test_parts))
    if report.total:
        log.warning("%s: dropped %d raw lines: %s", NAME, report.total, report.to_dict())
    train_pairs = {d: int(interactions.df["domain"].eq(d).sum()) for d in DOMAINS}
    users = interactions.df["user"].n_unique()
    log.info("%s: train pairs %s, %d users, %d test pairs", NAME, train_pairs, users, len(test))
    return Dataset(
        name=NAME,
        interactions=interactions,
        test=test,
        raw_rows=raw_rows,
        dropped=report,
        meta={
            "source": SOURCE,
            "folder": str(root),
            "has_timestamps": False,
            "domains": dict(DOMAINS),
            "item_id_format": "<domain>:<original item id>",
            "test_file": test_file,
            "train_pairs": train_pairs,
            "n_users": users,
            "note": "test.txt = test_original.txt minus items unseen in the domain's train.txt",
        },
    )
