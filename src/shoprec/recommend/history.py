"""Each shopper's training events, grouped once so that a request slices instead of filtering.

The artifact's ``seen.parquet`` (user, item, behavior) is sorted by user with every user's
row range kept; a second view keeps each (user, item) once with its deepest behavior, deepest
first. The filters (already bought), the co-occurrence seeds, the ``history`` candidate
source, "because you bought X" and the merchant's shopper list all read these arrays.

Example:
    >>> seen = pl.DataFrame({"user": ["u", "u"], "item": ["a", "b"], "behavior": ["view", "buy"]})
    >>> h = TrainingHistory(seen, ["a", "b"], exclude_behaviors=["buy"])
    >>> h.excluded_positions("u").tolist(), h.deepest("u")[0].tolist()
    ([1], [1, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from shoprec.recommend.retrieve import BEHAVIOR_WEIGHT
from shoprec.recommend.types import HistoryEntry

if TYPE_CHECKING:
    from shoprec.recommend.catalog import Catalog
    from shoprec.recommend.session import Event


def _ranges(users: pl.Series) -> dict[str, tuple[int, int]]:
    """``user -> (start, stop)`` rows of a column sorted (grouped) by user."""
    if users.len() == 0:
        return {}
    runs = users.rle()
    stops = runs.struct.field("len").cum_sum().to_numpy()
    starts = stops - runs.struct.field("len").to_numpy()
    names = runs.struct.field("value").to_list()
    return {str(u): (int(a), int(b)) for u, a, b in zip(names, starts, stops, strict=True)}


class TrainingHistory:
    """Training events by shopper, over item positions.

    Args:
        seen: training events (``user, item, behavior``); items outside ``items`` are dropped.
        items: item ids by position.
        exclude_behaviors: behaviors whose items are not recommended to the same shopper.
    """

    def __init__(
        self, seen: pl.DataFrame, items: Sequence[str], exclude_behaviors: Sequence[str] = ()
    ) -> None:
        positions = pl.DataFrame(
            {"item": list(items), "pos": np.arange(len(items), dtype=np.int64)},
            schema={"item": pl.String, "pos": pl.Int64},
        )
        top = max(BEHAVIOR_WEIGHT.values())
        hist = (
            seen.select(pl.col("user").cast(pl.String), pl.col("item").cast(pl.String), "behavior")
            .join(positions, on="item", how="inner", maintain_order="left")
            .with_columns(
                (pl.col("behavior").replace_strict(BEHAVIOR_WEIGHT, default=1.0) / top).alias("w")
            )
        )
        self.frame = hist.sort("user", maintain_order=True)
        self.ranges = _ranges(self.frame["user"])
        self.positions = self.frame["pos"].to_numpy().astype(np.int64)
        self.excluded = self.frame["behavior"].is_in(list(exclude_behaviors)).to_numpy()
        deep = self.frame.sort(["user", "w"], descending=[False, True], maintain_order=True)
        deep = deep.unique(["user", "pos"], keep="first", maintain_order=True)
        self.deep_ranges = _ranges(deep["user"])
        self.deep_positions = deep["pos"].to_numpy().astype(np.int64)
        self.deep_weights = deep["w"].to_numpy()
        self.deep_behaviors = deep["behavior"].to_list()
        self.users: list[str] = seen["user"].cast(pl.String).unique().sort().to_list()
        self.user_index = {u: i for i, u in enumerate(self.users)}
        self.warm = np.zeros(len(items), dtype=bool)
        self.warm[self.positions] = True
        counts = self.frame.group_by("user", maintain_order=True).len()
        counts = counts.sort(["len", "user"], descending=[True, False])
        self._top = list(zip(counts["user"].to_list(), counts["len"].to_list(), strict=True))

    def is_known(self, user: str) -> bool:
        return user in self.user_index

    def events(self, user: str) -> pl.DataFrame | None:
        """The shopper's training events (``user, item, behavior, pos, w``), or None."""
        r = self.ranges.get(user)
        return None if r is None else self.frame.slice(r[0], r[1] - r[0])

    def excluded_positions(self, user: str) -> np.ndarray:
        """Positions of the shopper's training items of an excluded behavior."""
        r = self.ranges.get(user)
        if r is None:
            return np.zeros(0, np.int64)
        return self.positions[r[0] : r[1]][self.excluded[r[0] : r[1]]]

    def deepest(self, user: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The shopper's distinct training items, deepest behavior first: positions and
        behavior weights in ``[0, 1]`` (buy = 1)."""
        r = self.deep_ranges.get(user)
        if r is None:
            return np.zeros(0, np.int64), np.zeros(0)
        stop = r[1] if limit is None else min(r[1], r[0] + limit)
        return self.deep_positions[r[0] : stop], self.deep_weights[r[0] : stop]

    def deepest_behaviors(self, user: str, limit: int | None = None) -> list[str]:
        """The behaviors of :meth:`deepest`'s items, in the same order."""
        r = self.deep_ranges.get(user)
        if r is None:
            return []
        stop = r[1] if limit is None else min(r[1], r[0] + limit)
        return self.deep_behaviors[r[0] : stop]

    def top_users(self, limit: int = 30) -> list[tuple[str, int]]:
        """Shoppers with the most training events, and how many."""
        return self._top[:limit]


def history_entries(
    training: TrainingHistory, catalog: Catalog, live: list[Event], user: str, limit: int = 50
) -> list[HistoryEntry]:
    """The shopper's live events (newest first), then their training items (deepest behavior
    per item first; training events carry no time here)."""
    out = [
        HistoryEntry(
            e.item,
            e.behavior,
            "session",
            e.timestamp,
            catalog.attributes([catalog.pos[e.item]])[0] if e.item in catalog.pos else {},
        )
        for e in list(reversed(live))[:limit]
    ]
    if len(out) < limit:
        deep, _ = training.deepest(user, limit - len(out))
        behaviors = training.deepest_behaviors(user, limit - len(out))
        out += [
            HistoryEntry(catalog.ids[p], b, "training", None, a)
            for p, b, a in zip(deep.tolist(), behaviors, catalog.attributes(deep), strict=True)
        ]
    return out
