"""Exposure, coverage and popularity bias of recommended lists, as pure vectorised functions.

Accuracy says whether the shoppers' next items are in their lists; these functions say *which*
items the lists give exposure to. They take the top-k lists (a ``(U, K)`` int array of item
positions, best first, ``-1`` padding a short list) and per-item facts (training popularity,
a catalog group such as the category, the seller or the market) and return numbers:

* :func:`catalog_coverage`: share of the catalog in at least one list (RecBole's
  ``ItemCoverage``).
* :func:`gini`: Gini index of the exposure over **all** catalog items (0 = every item shown
  equally often, 1 = one item takes all exposure; RecBole's ``GiniIndex``).
* :func:`popularity_deciles` and :func:`share_by_group`: the share of exposure that goes to each
  decile of item popularity (by training events) or to each catalog group, to put beside the
  share of the catalog and of the training events the same items hold.
* :func:`exposure_summary`: all of it for one model at cut-offs ``ks`` (what
  ``shoprec evaluate`` reports for every model).

Exposure is counted per list slot: every (user, item in the top k) counts 1 (``"uniform"``,
as RecBole), or ``1 / log2(position + 2)`` with ``weighting="position"`` (the DCG discount, the
attention a lower slot gets in most exposure-fairness papers, e.g. Singh and Joachims,
"Fairness of Exposure in Rankings", KDD 2018).

Example:
    >>> lists = np.array([[0, 1], [0, 2]])
    >>> catalog_coverage(lists, 4), round(gini(item_exposure(lists, 4)), 4)
    (0.75, 0.375)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = [
    "catalog_coverage",
    "exposure_summary",
    "gini",
    "item_exposure",
    "popularity_deciles",
    "share_by_group",
]

Weighting = Literal["uniform", "position"]


def _lists(lists: np.ndarray, k: int | None = None) -> np.ndarray:
    top = np.asarray(lists, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"lists must be (users, k) item positions, got shape {top.shape}")
    return top if k is None else top[:, :k]


def item_exposure(
    lists: np.ndarray, n_items: int, k: int | None = None, weighting: Weighting = "uniform"
) -> np.ndarray:
    """Exposure of every catalog item in the top ``k`` of the lists.

    Args:
        lists: ``(U, K)`` item positions per user, best first; ``-1`` pads a short list.
        n_items: catalog size.
        k: cut-off (default: the whole lists).
        weighting: ``"uniform"`` (1 per slot) or ``"position"`` (``1 / log2(slot + 2)``).

    Returns:
        ``(n_items,)`` float64 exposure (a count with uniform weighting).

    Example:
        >>> item_exposure(np.array([[2, 0], [2, -1]]), 3).tolist()
        [1.0, 0.0, 2.0]
    """
    top = _lists(lists, k)
    valid = top >= 0
    if valid.any() and top[valid].max() >= n_items:
        raise ValueError(f"an item position is out of range [0, {n_items})")
    if weighting == "uniform":
        w = np.ones(top.shape, dtype=np.float64)
    elif weighting == "position":
        w = np.broadcast_to(1.0 / np.log2(np.arange(top.shape[1]) + 2.0), top.shape)
    else:
        raise ValueError(f"weighting must be 'uniform' or 'position', got {weighting!r}")
    return np.bincount(top[valid], weights=w[valid], minlength=n_items).astype(np.float64)


def catalog_coverage(lists: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Share of the ``n_items`` catalog items that appear in at least one top-``k`` list.

    Example:
        >>> catalog_coverage(np.array([[0, 1], [0, 2]]), 4, k=1)
        0.25
    """
    return float((item_exposure(lists, n_items, k) > 0).sum() / max(n_items, 1))


def gini(values: np.ndarray) -> float:
    """Gini index of non-negative values (e.g. the exposure of every catalog item).

    ``G = sum_i (2i - n - 1) x_(i) / (n sum x)`` over the values sorted ascending, ``i = 1..n``:
    0 when all are equal, ``1 - 1/n`` when one holds everything. Items never shown must be
    included (as zeros), otherwise a list that ignores most of the catalog looks fair.

    Returns:
        The index, or NaN when the values sum to 0 (nothing was shown).

    Example:
        >>> gini(np.array([1.0, 1.0, 1.0])), gini(np.array([0.0, 0.0, 3.0]))
        (0.0, 0.6666666666666666)
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if (x < 0).any():
        raise ValueError("gini needs non-negative values")
    n, total = len(x), float(x.sum())
    if n == 0 or total <= 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def popularity_deciles(popularity: np.ndarray) -> np.ndarray:
    """Decile of every item by popularity: 0 for the least popular tenth of the catalog, 9 for
    the most popular tenth.

    Deciles hold equal numbers of items (``floor(10 r / n)`` of the ascending rank ``r``);
    items of equal popularity (often the many never sold) are ordered by position, so a
    tie may straddle two deciles. Report the deciles' share of training events beside the
    share of exposure to see whether a model shows the head more than shoppers chose it.

    Example:
        >>> popularity_deciles(np.arange(20)).tolist()[:4], popularity_deciles(np.arange(20))[-1]
        ([0, 0, 1, 1], np.int64(9))
    """
    pop = np.asarray(popularity, dtype=np.float64).ravel()
    n = len(pop)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(pop, kind="stable")] = np.arange(n)
    return (rank * 10 // max(n, 1)).astype(np.int64)


def share_by_group(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Share of the total of ``values`` that falls in each group.

    Args:
        values: ``(I,)`` non-negative values per item (exposure, training events, 1 per item).
        groups: ``(I,)`` int group code per item in ``[0, n_groups)``; ``-1`` (no group) counts
            in no group but in the total.
        n_groups: number of groups.

    Returns:
        ``(n_groups,)`` shares (they sum to at most 1; NaN when the values sum to 0).

    Example:
        >>> share_by_group(np.array([3.0, 1.0, 0.0]), np.array([0, 1, 1]), 2).tolist()
        [0.75, 0.25]
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    g = np.asarray(groups, dtype=np.int64).ravel()
    if len(v) != len(g):
        raise ValueError(f"got {len(v)} values but {len(g)} group codes")
    total = v.sum()
    ok = g >= 0
    sums = np.bincount(g[ok], weights=v[ok], minlength=n_groups)[:n_groups]
    return sums / total if total > 0 else np.full(n_groups, np.nan)


def exposure_summary(
    lists: np.ndarray,
    popularity: np.ndarray,
    ks: Sequence[int] = (10,),
    groups: np.ndarray | None = None,
    group_names: Sequence[str] | None = None,
    group_column: str | None = None,
    weighting: Weighting = "uniform",
    max_groups: int = 50,
) -> dict[str, Any]:
    """Coverage, Gini and exposure shares of one model's lists (JSON-able).

    Args:
        lists: ``(U, K)`` item positions per user, best first (``-1`` pads).
        popularity: ``(I,)`` training events per item; its length is the catalog size.
        ks: cut-offs for ``coverage@k`` and ``gini@k``; the shares use the smallest.
        groups: ``(I,)`` int group code per item (``-1``: none), e.g. the category.
        group_names: the name of every group code.
        group_column: the catalog column the groups come from (for the output).
        weighting: exposure per slot, see :func:`item_exposure`.
        max_groups: groups listed by name (the most exposed ones, then the most popular); the
            rest are summed as ``"other"``.

    Returns:
        ``{"metrics": {"coverage@k", "gini@k" for each k}, "k", "weighting",
        "by_popularity_decile": {"exposure": [10], "events": [10]}, "by_group":
        {"column", "groups": {name: {"exposure", "items", "events"}}}}`` (``by_group`` only
        with ``groups``). Shares are fractions of the total.
    """
    pop = np.asarray(popularity, dtype=np.float64).ravel()
    n_items = len(pop)
    ks = sorted({int(k) for k in ks})
    out_metrics: dict[str, float] = {}
    for k in ks:
        out_metrics[f"coverage@{k}"] = catalog_coverage(lists, n_items, k)
        out_metrics[f"gini@{k}"] = gini(item_exposure(lists, n_items, k, weighting))
    k0 = ks[0]
    exposure = item_exposure(lists, n_items, k0, weighting)
    deciles = popularity_deciles(pop)
    out: dict[str, Any] = {
        "metrics": out_metrics,
        "k": k0,
        "weighting": weighting,
        "by_popularity_decile": {
            "exposure": share_by_group(exposure, deciles, 10).tolist(),
            "events": share_by_group(pop, deciles, 10).tolist(),
        },
    }
    if groups is not None:
        codes = np.asarray(groups, dtype=np.int64).ravel()
        names = list(group_names or [str(i) for i in range(int(codes.max(initial=-1)) + 1)])
        n_groups = len(names)
        e = share_by_group(exposure, codes, n_groups)
        it = share_by_group(np.ones(n_items), codes, n_groups)
        ev = share_by_group(pop, codes, n_groups)
        order = np.lexsort((-np.nan_to_num(ev), -np.nan_to_num(e)))  # most exposed first
        shown, rest = order[:max_groups], order[max_groups:]
        table = {
            names[g]: {"exposure": float(e[g]), "items": float(it[g]), "events": float(ev[g])}
            for g in shown
        }
        if len(rest):
            table["other"] = {
                "exposure": float(np.nansum(e[rest])),
                "items": float(np.nansum(it[rest])),
                "events": float(np.nansum(ev[rest])),
            }
        out["by_group"] = {"column": group_column, "n_groups": n_groups, "groups": table}
    return out
