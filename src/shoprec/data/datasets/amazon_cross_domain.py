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

from shoprec.data.datasets.releases import load_domain_pairs
from shoprec.data.paths import dataset_dir
from shoprec.data.schema import DEFAULT_ON_BAD_ROWS, Behavior, Dataset, OnBadRows

NAME = "amazon_cross_domain"
SOURCE = "https://github.com/cjx96/DisenCDR"
FOLDER = "amazon_cross_domain"

#: domain name -> sub-folder holding that domain's files.
DOMAINS: dict[str, str] = {"sport": "sport_cloth", "cloth": "cloth_sport"}
TEST_FILES = ("test.txt", "test_original.txt")


def load(test_file: str = "test.txt", on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS) -> Dataset:
    """Load the Sport/Cloth cross-domain pair.

    A thin layer over :func:`~shoprec.data.datasets.releases.load_domain_pairs`: the folder
    names are mapped to ``sport`` / ``cloth``, item ids are always domain-qualified, and only
    lines flagged ``1`` are kept.

    Args:
        test_file: ``"test.txt"`` (the published test: held-out items seen in train) or
            ``"test_original.txt"`` (one held-out item for every user, cold items included).
        on_bad_rows: passed to :func:`~shoprec.data.datasets.releases.load_domain_pairs`.

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
    ds = load_domain_pairs(
        root,
        domains={sub: domain for domain, sub in DOMAINS.items()},
        valid=None,
        test=test_file,
        behavior=Behavior.BUY.value,
        name=NAME,
        min_rating=1,
        qualify_items=True,
        on_bad_rows=on_bad_rows,
    )
    ds.meta.update(
        source=SOURCE,
        folder=str(root),
        test_file=test_file,
        n_users=ds.interactions.df["user"].n_unique(),
        note="test.txt = test_original.txt minus items unseen in the domain's train.txt",
    )
    return ds
