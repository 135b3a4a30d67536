"""Filters before ranking and the re-ranking after it.

::

    filters     items of an excluded behavior (training or session), out of stock (known
                stock 0), excluded categories and items
    re-ranking  + session_boost * (similarity to the recent items), MMR by category, the
                best new item(s) in the last slot(s)

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
) -> list[RankedItem]:
    """The chosen candidates (indices ``order`` into ``cand``) as :class:`RankedItem` rows."""
    chosen = np.asarray(order, dtype=np.int64)
    positions = cand[chosen]
    task_preds = {t: v[chosen].tolist() for t, v in preds.items()}
    fused_c, boost_c = fused[chosen], boost[chosen]
    scores, fused_scores = np.exp(fused_c + boost_c).tolist(), np.exp(fused_c).tolist()
    attrs = catalog.attributes(positions)
    return [
        RankedItem(
            item=catalog.ids[p],
            rank=j + 1,
            score=scores[j],
            fused=fused_scores[j],
            session_boost=float(boost_c[j]),
            predictions={t: v[j] for t, v in task_preds.items()},
            sources=source_names(int(bits[i])),
            is_new=bool(catalog.is_new[p]),
            slot="new" if i in slots else "ranked",
            attributes=attrs[j],
        )
        for j, (i, p) in enumerate(zip(order, positions.tolist(), strict=True))
    ]
