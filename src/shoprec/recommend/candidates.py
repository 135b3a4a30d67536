"""Candidates: the union of the retrieval sources, each already past the filters.

::

    two_tower     nearest items to the shopper's query vector (moved towards recent items)
    popular       by behavior-weighted event counts
    cooccurrence  neighbours of the recent items and of the deepest history items
    new           new items (no training events) nearest the query
    history       the shopper's own items that the filters allow (repeat purchases when the
                  serve config excludes nothing), live ones first, then deepest first
    catalog       every other allowed item, when the catalog has at most rank_all_below items

More two-tower neighbours fill the union up to ``min_candidates``. The union is built in the
number of candidates (sorted positions and a bit mask of sources per position), never in the
size of the catalog, except for the whole-catalog source of small catalogs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shoprec.recommend.retrieve import ItemIndex, choose_index_kind
from shoprec.recommend.types import SimilarItem

if TYPE_CHECKING:
    from shoprec.recommend.catalog import Catalog
    from shoprec.recommend.history import TrainingHistory
    from shoprec.recommend.retrieve import Retrieval
    from shoprec.recommend.types import RecommenderConfig

#: Candidate sources, as named in :attr:`~shoprec.recommend.RankedItem.sources`.
SOURCES = ("two_tower", "popular", "cooccurrence", "new", "history", "catalog")


def bit(source: str) -> int:
    """The bit of ``source`` in a candidate's source mask."""
    return 1 << SOURCES.index(source)


def union(positions: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``positions`` (sorted) and the OR of the ``bits`` given to each.

    Example:
        >>> p, b = union(np.array([5, 2, 5]), np.array([1, 2, 4]))
        >>> p.tolist(), b.tolist()
        ([2, 5], [2, 5])
    """
    if len(positions) == 0:
        return positions.astype(np.int64), bits.astype(np.int64)
    order = np.argsort(positions, kind="stable")
    positions, bits = positions[order], bits[order]
    starts = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]])
    return positions[starts], np.bitwise_or.reduceat(bits, starts)


def source_names(mask: int) -> list[str]:
    """The sources whose bits are set in ``mask``."""
    return [s for b, s in enumerate(SOURCES) if mask >> b & 1]


def nearest_allowed(
    index: ItemIndex,
    query: np.ndarray,
    n: int,
    allowed: np.ndarray,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Item positions of the ``n`` nearest allowed rows of ``index`` to ``query``, nearest
    first (fewer if it has fewer): searched deeper until enough pass the filters.
    ``positions`` maps the index's rows to item positions (identity if None)."""
    depth = min(n + 64, len(index))
    while True:
        _, rows = index.search(query[None, :], depth)
        found = rows[0][rows[0] >= 0]
        if positions is not None:
            found = positions[found]
        found = found[found < len(allowed)]  # rows added after this request's filters
        found = found[allowed[found]]
        if len(found) >= n or depth >= len(index):
            return found[:n]
        depth = min(4 * depth, len(index))


class CandidateSources:
    """The sources over one catalog and retrieval; call :meth:`refresh` after items are added.

    Args:
        catalog: the served catalog.
        retrieval: the two-tower index, co-occurrences and popularity.
        history: the training events by shopper.
        config: the source sizes.
    """

    def __init__(
        self,
        catalog: Catalog,
        retrieval: Retrieval,
        history: TrainingHistory,
        config: RecommenderConfig,
    ) -> None:
        self.catalog = catalog
        self.retrieval = retrieval
        self.history = history
        self.config = config
        #: (positions of the new items, their index, the retrieval it was built from)
        self.new_index: tuple[np.ndarray, ItemIndex, Retrieval] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Bring up to date what depends on the catalog's size: the popularity order and the
        new-item index.

        The first call reads the new-item index saved for exactly these vectors and new
        items, or builds and saves it (:meth:`Retrieval.new_item_index`: minutes at 1M
        items, a second to read). Later calls, after products were added at run time,
        append the added items to it (a copy, so searches running meanwhile keep the old
        one); a changed set of new items, or one grown into another index kind, is looked up
        or built again.
        """
        r, new = self.retrieval, self.catalog.new_positions
        self.popular = np.argsort(-r.popularity, kind="stable")
        current = self.new_index
        if current is not None and current[2] is r:
            old_pos, index = current[0], current[1]
            n = len(old_pos)
            if len(new) == n and np.array_equal(new, old_pos):
                return
            grown = len(new) > n and np.array_equal(new[:n], old_pos)  # items appended
            kind = choose_index_kind(len(new)) if index.backend == "faiss" else index.kind
            if grown and kind == index.kind:
                self.new_index = (new, index.extended(r.item_vectors[new[n:]]), r)
                return
        self.new_index = (new, r.new_item_index(new), r)

    def __call__(
        self,
        user: str,
        query: np.ndarray,
        recent_pos: np.ndarray,
        weights: np.ndarray,
        banned: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(C,)`` (sorted) and a source bit mask per position.

        Args:
            user: the shopper.
            query: their two-tower query vector ``(D,)``.
            recent_pos: positions of their recent live events, oldest first.
            weights: recency weights of those events (newest 1).
            banned: ``(N,)`` True where an item must not be recommended.
        """
        c = self.config
        r = self.retrieval
        allowed = ~banned
        n_banned = int(np.count_nonzero(banned))
        parts: list[np.ndarray] = []
        bits: list[int] = []

        def add(pos: np.ndarray, source: str, limit: int) -> None:
            pos = pos[pos < len(allowed)]
            parts.append(pos[allowed[pos]][:limit])
            bits.append(bit(source))

        tt = nearest_allowed(r.index, query, max(c.n_two_tower, c.min_candidates), allowed)
        add(tt, "two_tower", c.n_two_tower)
        add(self.popular[: c.n_popular + n_banned], "popular", c.n_popular)
        deep, deep_w = self.history.deepest(user, c.history_seeds)
        seeds = np.concatenate([recent_pos, deep])
        nb, _ = r.cooccurrence.neighbours(
            seeds, np.concatenate([2.0 * weights, deep_w]), c.n_cooccurrence + n_banned
        )
        add(nb, "cooccurrence", c.n_cooccurrence)
        new_pos, new_index, _ = self.new_index or (np.zeros(0, np.int64), None, None)
        if len(new_pos) and c.n_new:
            add(nearest_allowed(new_index, query, c.n_new, allowed, new_pos), "new", c.n_new)
        if c.n_history:
            own, _ = self.history.deepest(user, c.n_history + n_banned)
            add(np.concatenate([recent_pos[::-1], own]), "history", c.n_history)
        cand, mask = union(
            np.concatenate(parts), np.repeat(np.array(bits, np.int64), [len(x) for x in parts])
        )
        if len(allowed) <= c.rank_all_below:  # a small catalog: rank every allowed item
            rest = np.flatnonzero(allowed)
            rest = np.setdiff1d(rest, cand, assume_unique=True)
            return union(
                np.concatenate([cand, rest]),
                np.concatenate([mask, np.full(len(rest), bit("catalog"), np.int64)]),
            )
        if len(cand) < c.min_candidates and len(tt) > c.n_two_tower:
            more = tt[c.n_two_tower :]
            if len(cand):  # leave out those already in (cand is sorted)
                more = more[cand[np.minimum(np.searchsorted(cand, more), len(cand) - 1)] != more]
            more = more[: c.min_candidates - len(cand)]
            cand, mask = union(
                np.concatenate([cand, more]),
                np.concatenate([mask, np.full(len(more), bit("two_tower"), np.int64)]),
            )
        return cand, mask


def similar_items(catalog: Catalog, retrieval: Retrieval, p: int, k: int) -> list[SimilarItem]:
    """Items like the one at position ``p``: cosine of the centred two-tower vectors plus
    the co-occurrence score, best first."""
    v = retrieval.similarity_vectors
    n = len(v)
    cos_all = v @ v[p]  # (N,)
    cos_all[p] = -np.inf
    near = np.argpartition(-cos_all, min(k + 50, n - 1) - 1)[: k + 50]
    nb, nb_score = retrieval.cooccurrence.neighbours(np.array([p]), k=k + 50)
    cand = np.unique(np.concatenate([near, nb]))
    cand = cand[cand != p]
    cos = cos_all[cand]
    co = np.zeros(len(cand))
    co[np.searchsorted(cand, nb)] = nb_score  # nb is a subset of cand
    score = cos + co
    top = np.argsort(-score, kind="stable")[:k]
    attrs = catalog.attributes(cand[top])
    return [
        SimilarItem(catalog.ids[int(cand[i])], float(score[i]), float(cos[i]), float(co[i]), a)
        for i, a in zip(top, attrs, strict=True)
    ]


def query_vector(
    user: np.ndarray,
    item_vectors: np.ndarray,
    recent_pos: np.ndarray,
    weights: np.ndarray,
    most: float,
) -> np.ndarray:
    """The two-tower query: the user tower's vector moved towards the recent items'
    (recency-weighted) mean vector, by ``most * R / (R + 1)`` for ``R`` recent items (an
    unknown shopper's ``most`` is high: their query is mostly their recent items).

    Returns:
        ``(D,)`` float32 unit vector.
    """
    u = user
    if len(recent_pos):
        m = (weights[:, None] * item_vectors[recent_pos]).sum(0)
        m /= max(float(np.linalg.norm(m)), 1e-9)
        share = most * len(recent_pos) / (len(recent_pos) + 1)
        u = (1 - share) * u + share * m
    return (u / max(float(np.linalg.norm(u)), 1e-9)).astype(np.float32)
