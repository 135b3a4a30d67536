"""Tmall view / cart / buy (the MB-CGCN release): 15,449 users x 11,953 items, no timestamps.

Layout under ``$SHOPREC_DATA/tmall_multibehavior/``::

    view/train.txt   cart/train.txt   buy/train.txt    one line per user: ``user item item ...``
    view/test.txt    cart/test.txt    buy/test.txt     one held-out ``user item`` per line
                                                       (the same line format as train)

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

from shoprec.data.datasets.releases import load_behavior_lines
from shoprec.data.paths import dataset_dir
from shoprec.data.schema import DEFAULT_ON_BAD_ROWS, Behavior, Dataset, OnBadRows

NAME = "tmall"
SOURCE = "https://github.com/SS-00-SS/MBCGCN"
FOLDER = "tmall_multibehavior"

#: The behaviors shipped, in funnel order, each as a sub-folder.
BEHAVIORS: tuple[Behavior, ...] = (Behavior.VIEW, Behavior.CART, Behavior.BUY)


def load(on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS) -> Dataset:
    """Load Tmall view / cart / buy with the shipped per-behavior test files.

    A thin layer over :func:`~shoprec.data.datasets.releases.load_behavior_lines` that finds
    the folder and names the source. ``on_bad_rows`` is passed to it.

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
    ds = load_behavior_lines(
        {b.value: f"{b.value}/train.txt" for b in BEHAVIORS},
        test={b.value: f"{b.value}/test.txt" for b in BEHAVIORS},
        name=NAME,
        target=Behavior.BUY.value,
        root=root,
        on_bad_rows=on_bad_rows,
    )
    ds.meta.update(
        source=SOURCE,
        folder=str(root),
        note="the files hold no time: timestamp is null; use the shipped test files",
    )
    return ds
