"""Filters before ranking and the re-ranking after it.

::

    filters     items of an excluded behavior (training or session), out of stock (known
                stock 0), excluded categories and items
    re-ranking  + session_boost * (similarity to the recent items), + the stock term (risk of
                running out, overstock; :func:`stock_adjustment`), MMR by category, the best
                new item(s) in the last slot(s)

All of it works on arrays over the candidates (or one boolean mask over the catalog).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shoprec.recommend.candidates import source_names
from shoprec.recommend.catalog import Catalog
from shoprec.recommend.history import TrainingHistory
from shoprec.recommend.session import LiveEvents
from shoprec.recommend.types import RankedItem


def excluded(
    catalog: Catalog,
    history: TrainingHistory,
    user: str,
    session_positions: np.ndarray,
    session_behaviors: Sequence[str],
    exclude_behaviors: Sequence[str],
    *,
    filter_out_of_stock: bool = True,
    exclude_categories: Sequence[str] = (),
    exclude_items: Sequence[str] = (),
) -> np.ndarray:
    """``(N,)`` True where an item must not be recommended to ``user``.

    Args:
        catalog: the served catalog.
        history: training events by shopper (with their excluded-behavior flags).
        user: the shopper.
        session_positions: positions of the shopper's live events.
        session_behaviors: their behaviors.
        exclude_behaviors: behaviors whose items are left out (training and live).
        filter_out_of_stock: leave out items whose known stock is 0.
        exclude_categories: categories to leave out.
        exclude_items: item ids to leave out (unknown ids are ignored).
    """
    banned = np.zeros(catalog.n_items, dtype=bool)
    if exclude_behaviors:
        banned[history.excluded_positions(user)] = True
        live = np.isin(np.asarray(session_behaviors, dtype=object), list(exclude_behaviors))
        banned[session_positions[live]] = True
    if filter_out_of_stock:
        banned |= catalog.out_of_stock[: catalog.n_items]
    if exclude_categories and catalog.category_names is not None:
        banned |= np.isin(catalog.category_names, list(exclude_categories))
    for item in exclude_items:
        p = catalog.pos.get(item)
        if p is not None:
            banned[p] = True
    return banned


def session_similarity(vectors: np.ndarray, positions: np.ndarray, live: LiveEvents) -> np.ndarray:
    """``(C,)`` max over the recent live items of recency weight x cosine (clipped at 0), on
    the centred item vectors ``vectors``."""
    if len(live.positions) == 0:
        return np.zeros(len(positions))
    sims = vectors[positions] @ vectors[live.positions].T  # (C, R)
    return np.clip(sims * live.weights[None, :], 0.0, None).max(axis=1)


def stock_adjustment(
    p_stockout: np.ndarray,
    weeks_of_cover: np.ndarray,
    *,
    stockout_penalty: float,
    overstock_weeks: float,
    overstock_boost: float,
) -> np.ndarray:
    """``(C,)`` log-score term from stock and the demand forecast (0 where either is unknown).

    ``stockout_penalty * log(1 - p_stockout)`` pushes down an item in proportion to its risk
    of running out before a restock could arrive (at ``p_stockout`` 0.5, the median forecast
    demand over the lead time equals the stock: the score halves at penalty 1); the
    probability is capped at 0.99 so no item is sunk without limit. Overstock adds
    ``overstock_boost * clip(weeks_of_cover / overstock_weeks - 1, 0, 1)``: nothing up to
    ``overstock_weeks`` of cover, the full (small) boost from twice that.

    Example:
        >>> t = stock_adjustment(np.array([0.5, 0.0, np.nan]), np.array([1.0, 24.0, np.nan]),
        ...                      stockout_penalty=1.0, overstock_weeks=12.0, overstock_boost=0.2)
        >>> np.round(t, 3).tolist()
        [-0.693, 0.2, 0.0]
    """
    p = np.nan_to_num(np.asarray(p_stockout, dtype=np.float64), nan=0.0)
    term = stockout_penalty * np.log1p(-np.clip(p, 0.0, 0.99)) if stockout_penalty else 0.0
    if overstock_boost:
        cover = np.nan_to_num(np.asarray(weeks_of_cover, dtype=np.float64), nan=0.0)
        term = term + overstock_boost * np.clip(cover / overstock_weeks - 1.0, 0.0, 1.0)
    return np.broadcast_to(np.asarray(term, dtype=np.float64), p.shape).copy()


def mmr(log_scores: np.ndarray, categories: np.ndarray, k: int, diversity: float) -> list[int]:
    """Greedy maximal marginal relevance with category equality as the similarity.

    Relevance is the log score rescaled to [0, 1] between the ``5k``-th best and the best
    candidate; each pick maximises ``(1 - diversity) * relevance - diversity * redundancy``
    where redundancy is 1 for a category already picked. ``diversity <= 0`` is the plain
    order by score.

    Example:
        >>> mmr(np.array([3.0, 2.9, 1.0]), np.array([0, 0, 1]), 2, 0.9)
        [0, 2]
    """
    n = len(log_scores)
    k = min(k, n)
    if diversity <= 0 or k <= 1:
        return np.argsort(-log_scores, kind="stable")[:k].tolist()
    hi = log_scores.max()
    lo = np.partition(log_scores, n - min(5 * k, n))[n - min(5 * k, n)]  # the 5k-th best
    rel = np.clip((log_scores - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    v = (1 - diversity) * rel  # minus diversity once the item's category is picked
    chosen: list[int] = []
    picked: set[Any] = set()
    for _ in range(k):
        best = np.flatnonzero(v == v.max())
        j = int(best[np.argmax(log_scores[best])]) if len(best) > 1 else int(best[0])  # ties
        chosen.append(j)
        if categories[j] not in picked:
            picked.add(categories[j])
            v[categories == categories[j]] -= diversity
        v[j] = -np.inf
    return chosen


def new_item_slots(
    order: list[int], is_new: np.ndarray, total: np.ndarray, k: int, slots: int
) -> tuple[list[int], set[int]]:
    """Give the best new candidates the last places of the list, up to ``slots`` new items.

    Args:
        order: candidate indices chosen so far, best first.
        is_new: ``(C,)`` True for new candidates.
        total: ``(C,)`` final log scores.
        k: the list's length.
        slots: new items the list should hold.

    Returns:
        The new order and the candidate indices that took a slot.
    """
    need = min(slots, k) - int(is_new[order].sum())
    if need <= 0:
        return order, set()
    fresh = is_new.copy()
    fresh[order] = False
    idx = np.flatnonzero(fresh)
    extra = idx[np.argsort(-total[idx], kind="stable")][:need].tolist()
    room = max(0, len(order) + len(extra) - k)
    drop = set([i for i in reversed(order) if not is_new[i]][:room])
    return [i for i in order if i not in drop] + extra, set(extra)


def ranked_items(
    catalog: Catalog,
    cand: np.ndarray,
    bits: np.ndarray,
    order: list[int],
    preds: dict[str, np.ndarray],
    fused: np.ndarray,
    boost: np.ndarray,
    slots: set[int],
    stock: np.ndarray | None = None,
) -> list[RankedItem]:
    """The chosen candidates (indices ``order`` into ``cand``) as :class:`RankedItem` rows
    (``stock``: the ``(C,)`` stock term, :func:`stock_adjustment`; None for none)."""
    chosen = np.asarray(order, dtype=np.int64)
    positions = cand[chosen]
    task_preds = {t: v[chosen].tolist() for t, v in preds.items()}
    fused_c, boost_c = fused[chosen], boost[chosen]
    stock_c = stock[chosen] if stock is not None else np.zeros(len(chosen))
    scores, fused_scores = np.exp(fused_c + boost_c + stock_c).tolist(), np.exp(fused_c).tolist()
    attrs = catalog.attributes(positions)
    return [
        RankedItem(
            item=catalog.ids[p],
            rank=j + 1,
            score=scores[j],
            fused=fused_scores[j],
            session_boost=float(boost_c[j]),
            stock_adjustment=float(stock_c[j]),
            predictions={t: v[j] for t, v in task_preds.items()},
            sources=source_names(int(bits[i])),
            is_new=bool(catalog.is_new[p]),
            slot="new" if i in slots else "ranked",
            attributes=attrs[j],
        )
        for j, (i, p) in enumerate(zip(order, positions.tolist(), strict=True))
    ]


def exposure_groups(
    catalog: Catalog, popularity: np.ndarray, by: str = "popularity", head_share: float = 0.2
) -> np.ndarray:
    """``(N,)`` group code of every catalog item, the groups that :func:`group_floor` serves.

    Args:
        catalog: the served catalog (items added at run time included).
        popularity: ``(n,)`` training events per item position (``n <= N``; later items 0).
        by: ``"popularity"``: 1 for the head (the ``head_share`` most popular items), 0 for
            the long tail; or a column of the item table (``category``, ``brand``, a seller or
            a market column): one code per value, ``-1`` where the item has none.
        head_share: share of the catalog that is the head.

    Raises:
        ValueError: ``by`` is neither ``popularity`` nor a column of the item table.
    """
    n = catalog.n_items
    if by == "popularity":
        pop = np.zeros(n)
        pop[: min(len(popularity), n)] = np.asarray(popularity, dtype=np.float64)[:n]
        n_head = round(head_share * n)
        head = np.zeros(n, dtype=np.int64)
        head[np.argsort(-pop, kind="stable")[:n_head]] = 1
        head[pop == 0] = 0  # never sold is never the head
        return head
    table = catalog.table
    if by not in table.columns or by == "item":
        columns = [c for c in table.columns if c != "item"]
        raise ValueError(f"serve.floor_groups '{by}' is neither 'popularity' nor one of {columns}")
    values = table[by].cast(str).to_numpy()[:n]
    known = np.array([v is not None for v in values], dtype=bool)
    codes = np.full(n, -1, dtype=np.int64)
    if known.any():
        codes[known] = np.unique(values[known].astype(str), return_inverse=True)[1].ravel()
    return codes


def group_floor(
    order: list[int], total: np.ndarray, groups: np.ndarray, k: int, floor: float
) -> list[int]:
    """Give every group among the candidates at least ``ceil(floor * k)`` places of the list.

    A minimum share of exposure per group (e.g. the long tail, each category or seller): for
    each group below its floor, in the order of the group's best candidate, its best unlisted
    candidates replace the lowest-placed listed items of groups above their floor (or of no
    group). Added items take the last places, best first, as new-item slots do; a group
    with too few candidates gets what it has. ``floor <= 0`` returns ``order`` unchanged.

    Args:
        order: candidate indices chosen so far (e.g. by :func:`mmr`), best first.
        total: ``(C,)`` final log scores of the candidates.
        groups: ``(C,)`` group code of each candidate (``-1``: none; never gets a floor).
        k: the list's length.
        floor: the minimum share of the ``k`` places each group gets.

    Example:
        >>> group_floor([0, 1, 2], np.array([3.0, 2.0, 1.0, 0.5]), np.array([0, 0, 0, 1]), 3, 0.3)
        [0, 1, 3]
    """
    if floor <= 0 or k <= 0 or not len(order):
        return order
    need = int(np.ceil(floor * k - 1e-9))
    g = np.asarray(groups, dtype=np.int64)
    chosen = list(order[:k])
    listed = np.zeros(len(g), dtype=bool)
    listed[chosen] = True
    counts: dict[int, int] = {}
    for x in g[chosen].tolist():
        counts[x] = counts.get(x, 0) + 1
    # groups by their best candidate, best first
    by_score = np.argsort(-np.asarray(total, dtype=np.float64), kind="stable")
    ranked_groups = g[by_score]
    seen_first = np.unique(ranked_groups, return_index=True)
    group_order = seen_first[0][np.argsort(seen_first[1])]
    added: list[int] = []
    for grp in group_order.tolist():
        if grp < 0 or counts.get(grp, 0) >= need:
            continue
        pool = by_score[(ranked_groups == grp) & ~listed[by_score]][: need - counts.get(grp, 0)]
        for cand in pool.tolist():
            drop = next(
                (
                    i
                    for i in reversed(chosen)
                    if i not in added and (g[i] < 0 or counts.get(int(g[i]), 0) > need)
                ),
                None,
            )
            if drop is None:
                if len(chosen) >= k:
                    break
            else:
                chosen.remove(drop)
                counts[int(g[drop])] -= 1
            chosen.append(cand)
            added.append(cand)
            listed[cand] = True
            counts[grp] = counts.get(grp, 0) + 1
    kept = [i for i in chosen if i not in set(added)]
    return kept + sorted(added, key=lambda i: -float(total[i]))
