"""The merchant's view: which shoppers an item would reach, how far new items reach.

An item *reaches* a known shopper when its two-tower score for them is at least their
candidate cut-off (their 50th-best two-tower score over the catalog): it would then enter
their candidate list. :meth:`Merchant.audience` ranks shoppers by that margin and shows the
scorer's view of each pair (scored through the recipe's scorer, with the shoppers' live
events); :meth:`Merchant.new_item_reach` counts the reached shoppers of every new item.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from shoprec.recommend.types import AudienceMember, NewItemReach

if TYPE_CHECKING:
    from shoprec.recommend.recommender import Recommender

#: A shopper counts as reached when the margin is at least minus this (float32 round-off:
#: the margin of a shopper's own cut-off item is 0 up to it).
REACH_TOLERANCE = 1e-5
#: The candidate cut-off: a shopper's this-many-th best two-tower score.
REACH_DEPTH = 50


class Merchant:
    """Audience and reach over one recommender's known shoppers (vectors cached on first use).

    Args:
        rec: the recommender.
    """

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec
        self._users: np.ndarray | None = None
        self._thresholds: np.ndarray | None = None
        self._lock = threading.Lock()

    def user_vectors(self) -> np.ndarray:
        """``(U, D)`` two-tower vectors of the known shoppers (``history.users`` order)."""
        with self._lock:
            if self._users is None:
                self._users = self.rec.retrieval.user_vectors(self.rec.training.users)
            return self._users

    def thresholds(self) -> np.ndarray:
        """``(U,)`` each known shopper's :data:`REACH_DEPTH`-th best two-tower score."""
        users = self.user_vectors()
        with self._lock:
            if self._thresholds is None:
                scores, _ = self.rec.retrieval.index.search(users, REACH_DEPTH)
                self._thresholds = scores[:, -1]
            return self._thresholds

    def forget_thresholds(self) -> None:
        """Recompute the cut-offs on next use (after products were added)."""
        with self._lock:
            self._thresholds = None

    def audience(self, item: str, k: int = 5) -> list[AudienceMember]:
        """The known shoppers an item would reach most surely: the largest margins of the
        item's two-tower score over their cut-off, each with the scorer's predictions and
        fused score for the pair.

        Raises:
            UnknownItemError: the item is not in the catalog.
        """
        rec = self.rec
        p = rec.position(item)
        users = self.user_vectors()
        if not len(users):
            return []
        margin = users @ rec.retrieval.item_vectors[p] - self.thresholds()  # (U,)
        top = np.argsort(-margin, kind="stable")[:k]
        names = [rec.training.users[i] for i in top]
        frames = [f for f in (rec.live(u).frame for u in names) if f is not None]
        events = pl.concat(frames) if frames else None
        raw = rec.scorer.score(names, np.array([p]), events=events)
        preds = {t: np.asarray(v, dtype=np.float64)[:, 0] for t, v in raw.items()}
        price = np.full(len(names), rec.catalog.price[p]) if rec.catalog.price is not None else None
        item_values = {k: np.repeat(v, len(names)) for k, v in rec.item_values([p]).items()}
        fused = rec.fusion.score(preds, price, item_values)  # stock variables: the item's
        return [
            AudienceMember(
                name, float(margin[i]), float(fused[j]), {t: float(v[j]) for t, v in preds.items()}
            )
            for j, (i, name) in enumerate(zip(top, names, strict=True))
        ]

    def new_item_reach(self, limit: int = 20, audience: int = 3) -> list[NewItemReach]:
        """New items by how many known shoppers' candidate cut-offs they pass."""
        rec = self.rec
        new = rec.catalog.new_positions
        if len(new) == 0:
            return []
        margins = self.user_vectors() @ rec.retrieval.item_vectors[new].T  # (U, M)
        reach = (margins - self.thresholds()[:, None] >= -REACH_TOLERANCE).sum(0)  # (M,)
        order = np.argsort(-reach, kind="stable")[:limit]
        attrs = rec.catalog.attributes(new[order])
        ids = [rec.catalog.ids[int(new[i])] for i in order]
        return [
            NewItemReach(item, a, int(reach[i]), self.audience(item, audience) if audience else [])
            for item, i, a in zip(ids, order, attrs, strict=True)
        ]
