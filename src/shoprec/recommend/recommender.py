"""The recommender: retrieve candidates, rank them with the multi-task model, re-rank, explain.

::

    candidates  two-tower nearest items to the shopper's vector (moved towards their recent
                items) + popular items + co-occurrence neighbours of their recent and
                deepest history items + new items (no training events) nearest the shopper;
                more two-tower neighbours fill the union up to min_candidates (500)
    filters     already bought (training or session), out of stock, excluded categories/items
    ranking     the multi-task model's per-task probabilities -> Fusion -> log score, in one
                forward pass over model inputs encoded once per item and per shopper
                (:class:`~shoprec.recommend.features.PairEncoder`)
    re-ranking  + session_boost * (similarity to the recent items), MMR by category,
                the best new item(s) in the last slot(s)

The serving path does no per-request dataframe work and no Python loop over candidates;
apart from the index searches and a few boolean masks over the catalog, its cost grows with
the number of candidates (see ``benchmarks/serve_latency.py``).

Everything the HTTP service answers is a method here, so a notebook needs no server::

    rec = Recommender.from_artifact("runs/sim_mmoe")
    rec.record("u12", "i40", "cart")           # a live event
    for r in rec.recommend("u12", k=10, explain=True):
        print(r.item, r.score, r.explanation.sentence)

Example:
    >>> rec = Recommender.from_artifact("runs/sim_mmoe")  # doctest: +SKIP
    >>> [r.item for r in rec.recommend("u12", k=3)]  # doctest: +SKIP
    ['i512', 'i87', 'i3']
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from shoprec.data.errors import ShoprecError
from shoprec.experiment import Artifact
from shoprec.models.base import output_to_prediction
from shoprec.pipeline import score_pairs
from shoprec.recommend.explain import (
    BecauseItem,
    Explanation,
    FeatureAttribution,
    TaskContribution,
    integrated_gradients,
    sentence,
)
from shoprec.recommend.features import PairEncoder
from shoprec.recommend.fusion import PRICE, Fusion
from shoprec.recommend.retrieve import (
    BEHAVIOR_WEIGHT,
    CATALOG_FILE,
    ItemIndex,
    Retrieval,
    build_retrieval,
    has_retrieval,
)
from shoprec.recommend.session import Event, SessionLog
from shoprec.recommend.two_tower import TwoTowerConfig, embed_users

log = logging.getLogger(__name__)

#: A shopper counts as reached when the margin is at least minus this (float32 round-off:
#: the margin of a shopper's own cut-off item is 0 up to it).
REACH_TOLERANCE = 1e-5
#: Candidate sources, as named in :attr:`RankedItem.sources`.
SOURCES = ("two_tower", "popular", "cooccurrence", "new")
SESSION = "session"


class UnknownItemError(ShoprecError, KeyError):
    """An item id the artifact does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown item"


@dataclass(frozen=True)
class RecommenderConfig:
    fusion: str | None = None  # a Fusion formula, e.g. "buy * price * (1-return)"; None: default
    n_two_tower: int = 200  # candidates from the two-tower index
    min_candidates: int = 500  # more two-tower neighbours fill the union up to this many
    n_popular: int = 50  # candidates from popularity
    n_cooccurrence: int = 100  # candidates from co-occurrence neighbours
    n_new: int = 20  # candidates among new items (no training events)
    exclude_behaviors: tuple[str, ...] = ("buy",)  # drop items the shopper already did this to
    filter_out_of_stock: bool = True  # drop items whose known stock is 0
    diversity: float = 0.3  # MMR weight of category redundancy (0: by score only)
    session_boost: float = 2.0  # log-score bonus of an item identical to the latest event's
    session_weight: float = 0.5  # most a known shopper's query moves to their recent items
    session_decay: float = 0.8  # weight of each older recent event relative to the next one
    recent_events: int = 20  # recent events used per shopper
    history_seeds: int = 20  # history items (deepest behavior first) seeding co-occurrence
    new_item_slots: int = 1  # positions kept for the best new items (0: none)
    explain_steps: int = 64  # Integrated-Gradients steps
    reference_items: int = 2000  # items that stand for "a typical item" in explanations


@dataclass
class RankedItem:
    """One recommendation.

    Attributes:
        item: the item id.
        rank: 1-based position.
        score: the final score, ``fused * exp(session_boost)``.
        fused: the fusion of the task outputs (e.g. expected revenue).
        session_boost: the log-score bonus from the shopper's recent events.
        predictions: task -> probability.
        sources: candidate sources that proposed it (:data:`SOURCES`).
        is_new: the item had no training events.
        slot: ``"ranked"``, or ``"new"`` where it fills a new-item slot.
        attributes: title, category, brand, price, stock where known.
        explanation: filled when asked for.
    """

    item: str
    rank: int
    score: float
    fused: float
    session_boost: float
    predictions: dict[str, float]
    sources: list[str]
    is_new: bool
    slot: str
    attributes: dict[str, Any]
    explanation: Explanation | None = None


@dataclass
class Ranking:
    """What :meth:`Recommender.rank` returns.

    Attributes:
        items: the recommendations, best first.
        candidates: how many candidates the ranking model scored to choose them.
    """

    items: list[RankedItem]
    candidates: int


@dataclass
class SimilarItem:
    """An item like another one: two-tower cosine plus co-occurrence."""

    item: str
    score: float
    similarity: float
    cooccurrence: float
    attributes: dict[str, Any]


@dataclass
class HistoryEntry:
    """One thing a shopper did: from the training events or from the live session."""

    item: str
    behavior: str
    source: str  # "training" or "session"
    timestamp: float | None
    attributes: dict[str, Any]


@dataclass
class AudienceMember:
    """A shopper an item would reach: the margin of its two-tower score over the shopper's
    candidate cut-off (> 0: it enters their candidate list), and the ranking model's view."""

    user: str
    margin: float
    score: float
    predictions: dict[str, float]


@dataclass
class NewItemReach:
    """A new item, how many shoppers' candidate lists it would enter, and its best audience."""

    item: str
    attributes: dict[str, Any]
    reach: int
    audience: list[AudienceMember] = field(default_factory=list)


def _union(positions: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``positions`` (sorted) and the OR of the ``bits`` given to each."""
    if len(positions) == 0:
        return positions.astype(np.int64), bits.astype(np.int64)
    order = np.argsort(positions, kind="stable")
    positions, bits = positions[order], bits[order]
    starts = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]])
    return positions[starts], np.bitwise_or.reduceat(bits, starts)


def _mmr(log_scores: np.ndarray, categories: np.ndarray, k: int, diversity: float) -> list[int]:
    """Greedy maximal marginal relevance with category equality as the similarity.

    Relevance is the log score rescaled to [0, 1] between the ``5k``-th best and the best
    candidate; each pick maximises ``(1 - diversity) * relevance - diversity * redundancy``
    where redundancy is 1 for a category already picked.
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


class Recommender:
    """Candidates, ranking, re-ranking and explanations over one trained artifact.

    Args:
        artifact: the ranking model and its tables.
        retrieval: the candidate sources (:func:`~shoprec.recommend.retrieve.build_retrieval`).
        config: the knobs; see :class:`RecommenderConfig`.
        sessions: the live events to use (a new, empty log by default); share one log between
            recommenders to keep sessions across a model swap.
        catalog: titles, stock etc. per item (``catalog.parquet`` of the artifact by default).
    """

    def __init__(
        self,
        artifact: Artifact,
        retrieval: Retrieval,
        config: RecommenderConfig | None = None,
        *,
        sessions: SessionLog | None = None,
        catalog: pl.DataFrame | None = None,
    ) -> None:
        self.artifact = artifact
        self.retrieval = retrieval
        self.config = c = config or RecommenderConfig()
        self.sessions = sessions if sessions is not None else SessionLog()
        self.model = artifact.model.eval()
        self.builder = artifact.builder
        self.tasks = artifact.task_names
        self.loaded_at = time.time()
        items = self.builder.item_table
        self.items: pl.Series = items["item"]
        self.n_items = len(self.items)
        self._ids: list[str] = self.items.to_list()
        self._pos = dict(zip(self._ids, range(self.n_items), strict=True))

        if catalog is None and (artifact.directory / CATALOG_FILE).exists():
            catalog = pl.read_parquet(artifact.directory / CATALOG_FILE)
        table = items.select("item")
        for col in ("category", "brand", "price"):
            if f"item_{col}" in items.columns:
                table = table.with_columns(items[f"item_{col}"].alias(col))
        if catalog is not None:
            wanted = ("title", "category", "brand", "price", "stock")
            extra = [col for col in wanted if col in catalog.columns]
            extra = [col for col in extra if col not in table.columns or col in ("title", "stock")]
            table = table.join(
                catalog.select("item", *extra), on="item", how="left", maintain_order="left"
            )
        self.item_info = table
        self.price = (
            table["price"].cast(pl.Float64).fill_null(1.0).to_numpy()
            if "price" in table.columns
            else None
        )
        self.categories = (
            table["category"].fill_null("").cast(pl.Categorical).to_physical().to_numpy()
            if "category" in table.columns
            else np.zeros(self.n_items, np.int64)
        )
        self._category_names = (
            table["category"].fill_null("").to_numpy() if "category" in table.columns else None
        )
        self.stock = (
            table["stock"].fill_null(-1).to_numpy().astype(np.int64).copy()
            if "stock" in table.columns
            else np.full(self.n_items, -1, np.int64)
        )
        self._out_of_stock = self.stock == 0  # kept in step with stock by set_stock
        self.fusion = (
            Fusion.parse(c.fusion)
            if c.fusion
            else Fusion.default(self.tasks, self.price is not None)
        ).check(self.tasks)

        seen = artifact.seen
        pos = pl.DataFrame({"item": self.items, "pos": np.arange(self.n_items)})
        hist = seen.join(pos, on="item", how="inner").with_columns(
            pl.col("behavior").replace_strict(BEHAVIOR_WEIGHT, default=1.0).alias("w")
        )
        # Training events grouped by shopper: one frame sorted by user (events keep their
        # order within a user) and each user's row range, so a request slices, never filters.
        self._hist = hist.sort("user", maintain_order=True)
        self._hist_range = self._ranges(self._hist["user"])
        self._hist_pos = self._hist["pos"].to_numpy().astype(np.int64)
        self._hist_excluded = self._hist["behavior"].is_in(list(c.exclude_behaviors)).to_numpy()
        # The seeds of co-occurrence: each user's deepest history events, precomputed.
        seeds = self._hist.sort(["user", "w"], descending=[False, True], maintain_order=True)
        seeds = seeds.filter(pl.int_range(pl.len()).over("user") < c.history_seeds)
        self._seed_range = self._ranges(seeds["user"])
        self._seed_pos = seeds["pos"].to_numpy().astype(np.int64)
        self._seed_w = seeds["w"].to_numpy() / max(BEHAVIOR_WEIGHT.values())
        self.is_new = ~np.isin(np.arange(self.n_items), hist["pos"].unique().to_numpy())
        self._new = np.flatnonzero(self.is_new)
        self._new_index = ItemIndex(retrieval.item_vectors[self._new])
        self._popular = np.argsort(-retrieval.popularity, kind="stable")
        users = self.builder.user_table
        known = users["user"] if users is not None else seen["user"].unique().sort()
        self.known_users: list[str] = known.to_list()
        self._known = set(self.known_users)
        self._user_index = {u: i for i, u in enumerate(self.known_users)}
        # Serving path: the model input of every item and known shopper, encoded once.
        self.features = PairEncoder(self.builder, self.known_users)
        self._info_columns = {col: table[col].to_list() for col in table.columns if col != "item"}
        self._user_vectors: np.ndarray | None = None
        self._unknown_vectors: dict[str, np.ndarray] = {}
        self._reach_thresholds: np.ndarray | None = None
        self.stock_overrides: dict[str, int] = {}
        self._lock = threading.Lock()
        # Integrated Gradients swaps the model's input layers while it runs: a private copy.
        self._explain_model = copy.deepcopy(self.model).eval()
        self._explain_lock = threading.Lock()
        self._users_matrix()  # known shoppers' query vectors, before the first request

    @classmethod
    def from_artifact(
        cls,
        directory: str | Path,
        config: RecommenderConfig | None = None,
        *,
        sessions: SessionLog | None = None,
        build: bool = True,
        two_tower: TwoTowerConfig | None = None,
    ) -> Recommender:
        """Load an artifact folder, training the retrieval model first if it has none.

        Args:
            directory: written by ``shoprec train``.
            config: recommender knobs.
            sessions: live events to share (see the class docstring).
            build: run :func:`build_retrieval` when its files are missing (else raise).
            two_tower: the retrieval model's knobs, when it is built here.
        """
        directory = Path(directory)
        art = Artifact.load(directory)
        if not has_retrieval(directory):
            if not build:
                raise ShoprecError(f"{directory} has no retrieval files; run build_retrieval")
            log.info("no retrieval model in %s yet: training one", directory)
            build_retrieval(directory, two_tower)
        retrieval = Retrieval.load(directory, art.builder, art.seen)
        return cls(art, retrieval, config, sessions=sessions)

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def _ranges(users: pl.Series) -> dict[str, tuple[int, int]]:
        """``user -> (start, stop)`` rows of a column sorted (grouped) by user."""
        runs = users.rle()
        stops = runs.struct.field("len").cum_sum().to_numpy()
        starts = stops - runs.struct.field("len").to_numpy()
        names = runs.struct.field("value").to_list()
        return {str(u): (int(a), int(b)) for u, a, b in zip(names, starts, stops, strict=True)}

    def _user_history(self, user: str) -> pl.DataFrame | None:
        """The shopper's training events (``user, item, behavior, pos, w``), or None."""
        r = self._hist_range.get(user)
        return None if r is None else self._hist.slice(r[0], r[1] - r[0])

    def position(self, item: str) -> int:
        """The item's row in the item table; :class:`UnknownItemError` if unknown."""
        try:
            return self._pos[item]
        except KeyError:
            raise UnknownItemError(f"unknown item '{item}'") from None

    def attributes(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Title, category, brand, price, stock of items by position."""
        rows = []
        for p in np.asarray(positions, dtype=np.int64).tolist():
            row = {col: values[p] for col, values in self._info_columns.items()}
            row["stock"] = int(self.stock[p]) if self.stock[p] >= 0 else None
            rows.append(row)
        return rows

    def _recent(self, user: str) -> tuple[list[Event], np.ndarray, np.ndarray]:
        """Recent events whose item is known, their positions and recency weights (newest 1)."""
        events = [
            e for e in self.sessions.recent(user, self.config.recent_events) if e.item in self._pos
        ]
        pos = np.array([self._pos[e.item] for e in events], dtype=np.int64)
        w = self.config.session_decay ** np.arange(len(events))[::-1].astype(float)
        return events, pos, w

    def _excluded(
        self,
        user: str,
        events: list[Event],
        exclude_categories: Sequence[str] = (),
        exclude_items: Sequence[str] = (),
    ) -> np.ndarray:
        """``(N,)`` True where an item must not be recommended."""
        c = self.config
        banned = np.zeros(self.n_items, dtype=bool)
        r = self._hist_range.get(user)
        if r is not None and c.exclude_behaviors:
            lo, hi = r
            banned[self._hist_pos[lo:hi][self._hist_excluded[lo:hi]]] = True
        for e in events:
            if e.behavior in c.exclude_behaviors:
                banned[self._pos[e.item]] = True
        if c.filter_out_of_stock:
            banned |= self._out_of_stock
        if exclude_categories and self._category_names is not None:
            banned |= np.isin(self._category_names, list(exclude_categories))
        for item in exclude_items:
            if item in self._pos:
                banned[self._pos[item]] = True
        return banned

    def user_vector(self, user: str, recent_pos: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The two-tower query: the user tower's vector moved towards the recent items'
        (weighted) mean vector; an unknown user's query is mostly their recent items."""
        r = self.retrieval
        u = self._tower_vector(user)
        if len(recent_pos):
            m = (weights[:, None] * r.item_vectors[recent_pos]).sum(0)
            m /= max(float(np.linalg.norm(m)), 1e-9)
            n = len(recent_pos)
            share = (self.config.session_weight if user in self._known else 0.9) * n / (n + 1)
            u = (1 - share) * u + share * m
        return (u / max(float(np.linalg.norm(u)), 1e-9)).astype(np.float32)

    def _tower_vector(self, user: str) -> np.ndarray:
        """The user tower's vector: precomputed for known shoppers, cached for others."""
        i = self._user_index.get(user)
        if i is not None:
            return self._users_matrix()[i]
        v = self._unknown_vectors.get(user)
        if v is None:
            r = self.retrieval
            if list(r.user_columns) == self.features.user_columns:
                with torch.inference_mode():
                    v = r.two_tower.user_vectors(self.features.user_row(user))[0].numpy()
            else:
                v = embed_users(r.two_tower, self.builder, [user], r.user_columns)[0]
            if len(self._unknown_vectors) >= 10_000:
                self._unknown_vectors.clear()
            self._unknown_vectors[user] = v
        return v

    def session_similarity(
        self, positions: np.ndarray, recent_pos: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """``(C,)`` max over recent items of recency weight x cosine (clipped at 0), on the
        centred item vectors."""
        if len(recent_pos) == 0:
            return np.zeros(len(positions))
        v = self.retrieval.similarity_vectors
        sims = v[positions] @ v[recent_pos].T  # (C, R)
        return np.clip(sims * weights[None, :], 0.0, None).max(axis=1)

    def _candidates(
        self,
        user: str,
        query: np.ndarray,
        recent_pos: np.ndarray,
        weights: np.ndarray,
        banned: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Union of the sources: positions ``(C,)`` and a source bit mask per position.

        Each source gives its configured count of allowed items; when their union is smaller
        than ``min_candidates``, the next two-tower neighbours fill it up."""
        c = self.config
        r = self.retrieval
        allowed = ~banned
        n_banned = int(np.count_nonzero(banned))
        parts: list[np.ndarray] = []
        bits: list[int] = []

        def add(pos: np.ndarray, source: str, limit: int) -> None:
            parts.append(pos[allowed[pos]][:limit])
            bits.append(1 << SOURCES.index(source))

        tt = self._nearest_allowed(r.index, query, max(c.n_two_tower, c.min_candidates), allowed)
        add(tt, "two_tower", c.n_two_tower)
        add(self._popular[: c.n_popular + n_banned], "popular", c.n_popular)
        seeds, seed_w = recent_pos, 2.0 * weights
        sr = self._seed_range.get(user)
        if sr is not None and c.history_seeds:
            seeds = np.concatenate([seeds, self._seed_pos[sr[0] : sr[1]]])
            seed_w = np.concatenate([seed_w, self._seed_w[sr[0] : sr[1]]])
        nb, _ = r.cooccurrence.neighbours(seeds, seed_w, c.n_cooccurrence + n_banned)
        add(nb, "cooccurrence", c.n_cooccurrence)
        if len(self._new) and c.n_new:
            new = self._nearest_allowed(self._new_index, query, c.n_new, allowed, self._new)
            add(new, "new", c.n_new)
        # The union, sorted by position, with the OR of the source bits of each position:
        # work in the number of candidates, never in the size of the catalog.
        cand, mask = _union(
            np.concatenate(parts), np.repeat(np.array(bits, np.int64), [len(x) for x in parts])
        )
        if len(cand) < c.min_candidates and len(tt) > c.n_two_tower:
            more = tt[c.n_two_tower :]
            if len(cand):  # leave out those already in (cand is sorted)
                more = more[cand[np.minimum(np.searchsorted(cand, more), len(cand) - 1)] != more]
            more = more[: c.min_candidates - len(cand)]
            cand, mask = _union(
                np.concatenate([cand, more]),
                np.concatenate([mask, np.full(len(more), 1 << SOURCES.index("two_tower"))]),
            )
        return cand, mask

    @staticmethod
    def _nearest_allowed(
        index: ItemIndex,
        query: np.ndarray,
        n: int,
        allowed: np.ndarray,
        positions: np.ndarray | None = None,
    ) -> np.ndarray:
        """Item positions of the ``n`` nearest allowed rows of ``index`` to ``query``,
        nearest first (fewer if it has fewer): searched deeper until enough pass the
        filters. ``positions`` maps the index's rows to item positions (identity if None)."""
        depth = min(n + 64, len(index))
        while True:
            _, rows = index.search(query[None, :], depth)
            found = rows[0][rows[0] >= 0]
            if positions is not None:
                found = positions[found]
            found = found[allowed[found]]
            if len(found) >= n or depth >= len(index):
                return found[:n]
            depth = min(4 * depth, len(index))

    def resolve_fusion(self, fusion: str | Fusion | None) -> Fusion:
        """The configured fusion, or ``fusion`` (a formula or :class:`Fusion`) checked
        against the model's tasks (``ValueError`` if it cannot be computed)."""
        if fusion is None:
            return self.fusion
        f = Fusion.parse(fusion) if isinstance(fusion, str) else fusion
        if f.price_weight and self.price is None:
            raise ValueError("the fusion uses the price, but this catalog has no prices")
        return f.check(self.tasks)

    def _score(
        self, user: str, positions: np.ndarray, fusion: Fusion
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per-task predictions ``(C,)`` and the fusion's log terms ``(C,)`` for one user."""
        preds = self.predict(user, positions)
        price = self.price[positions] if self.price is not None else None
        return preds, fusion.log_terms(preds, price)

    def predict(self, user: str, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The ranking model's predictions ``(C,)`` per task for ``user`` x the items at
        ``positions``, in one forward pass over cached item and user inputs (equal to
        :func:`~shoprec.pipeline.score_pairs` on the same pairs)."""
        batch = self.features.batch(user, positions)
        with torch.inference_mode():
            out = self.model(batch)
            return {t.name: output_to_prediction(t, out[t.name]).numpy() for t in self.model.tasks}

    # ------------------------------------------------------------------------ public API
    def record(self, user: str, item: str, behavior: str, timestamp: float | None = None) -> Event:
        """Add a live event; the shopper's next recommendation uses it."""
        return self.sessions.add(user, item, behavior, timestamp)

    def has_item(self, item: str) -> bool:
        """Whether the artifact knows this item."""
        return item in self._pos

    def is_known_user(self, user: str) -> bool:
        """Whether the model was trained with this shopper."""
        return user in self._known

    def recommend(
        self,
        user: str,
        k: int = 10,
        *,
        exclude_categories: Sequence[str] = (),
        exclude_items: Sequence[str] = (),
        fusion: str | Fusion | None = None,
        explain: bool = False,
    ) -> list[RankedItem]:
        """The top-``k`` items for ``user`` (an unknown user gets a cold-start list).

        Args:
            user: the shopper's id.
            k: how many items.
            exclude_categories: categories to leave out.
            exclude_items: items to leave out.
            fusion: a :class:`Fusion` or formula to use instead of the configured one.
            explain: attach an :class:`Explanation` to each item.

        Raises:
            ValueError: ``k < 1`` or a fusion the model's tasks cannot make.
        """
        return self.rank(
            user,
            k,
            exclude_categories=exclude_categories,
            exclude_items=exclude_items,
            fusion=fusion,
            explain=explain,
        ).items

    def rank(
        self,
        user: str,
        k: int = 10,
        *,
        exclude_categories: Sequence[str] = (),
        exclude_items: Sequence[str] = (),
        fusion: str | Fusion | None = None,
        explain: bool = False,
    ) -> Ranking:
        """:meth:`recommend`, plus how many candidates the ranking model scored.

        Args and raises as :meth:`recommend`.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        c = self.config
        f = self.resolve_fusion(fusion)
        events, recent_pos, w = self._recent(user)
        banned = self._excluded(user, events, exclude_categories, exclude_items)
        query = self.user_vector(user, recent_pos, w)
        cand, bits = self._candidates(user, query, recent_pos, w, banned)
        if len(cand) == 0:
            return Ranking([], 0)
        preds, terms = self._score(user, cand, f)
        fused = np.sum(list(terms.values()), axis=0)
        boost = c.session_boost * self.session_similarity(cand, recent_pos, w)
        total = fused + boost
        order = _mmr(total, self.categories[cand], k, c.diversity)
        slot_items: set[int] = set()
        need = min(c.new_item_slots, k) - int(self.is_new[cand[order]].sum())
        if need > 0:  # the best new items take the last places
            fresh = self.is_new[cand]
            fresh[order] = False
            idx = np.flatnonzero(fresh)
            extra = idx[np.argsort(-total[idx], kind="stable")][:need].tolist()
            room = max(0, len(order) + len(extra) - k)
            drop = set([i for i in reversed(order) if not self.is_new[cand[i]]][:room])
            order = [i for i in order if i not in drop] + extra
            slot_items = set(extra)
        attrs = self.attributes(cand[order])
        chosen = np.asarray(order, dtype=np.int64)
        task_preds = {t: preds[t][chosen].tolist() for t in self.tasks}
        scores = np.exp(total[chosen]).tolist()
        fused_scores = np.exp(fused[chosen]).tolist()
        boosts = boost[chosen].tolist()
        out = []
        for j, (i, a) in enumerate(zip(order, attrs, strict=True)):
            p = int(cand[i])
            out.append(
                RankedItem(
                    item=self._ids[p],
                    rank=j + 1,
                    score=scores[j],
                    fused=fused_scores[j],
                    session_boost=boosts[j],
                    predictions={t: v[j] for t, v in task_preds.items()},
                    sources=[s for b, s in enumerate(SOURCES) if bits[i] >> b & 1],
                    is_new=bool(self.is_new[p]),
                    slot="new" if i in slot_items else "ranked",
                    attributes=a,
                )
            )
        if explain:
            ref = self._reference(user, f, recent_pos, w)
            for r in out:
                r.explanation = self._explain(
                    user, self._pos[r.item], f, events, recent_pos, w, ref
                )
        return Ranking(out, len(cand))

    def similar(self, item: str, k: int = 10) -> list[SimilarItem]:
        """Items like ``item``: cosine of the (centred) two-tower item vectors plus the
        co-occurrence score, best first.

        Raises:
            UnknownItemError: the item is not in the artifact.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        p = self.position(item)
        r = self.retrieval
        cos_all = r.similarity_vectors @ r.similarity_vectors[p]  # (N,)
        cos_all[p] = -np.inf
        near = np.argpartition(-cos_all, min(k + 50, self.n_items - 1) - 1)[: k + 50]
        nb, nb_score = r.cooccurrence.neighbours(np.array([p]), k=k + 50)
        cand = np.unique(np.concatenate([near, nb]))
        cand = cand[cand != p]
        cos = cos_all[cand]
        co = np.zeros(len(cand))
        co[np.searchsorted(cand, nb)] = nb_score  # nb is a subset of cand
        score = cos + co
        top = np.argsort(-score, kind="stable")[:k]
        attrs = self.attributes(cand[top])
        return [
            SimilarItem(self.items[int(cand[i])], float(score[i]), float(cos[i]), float(co[i]), a)
            for i, a in zip(top, attrs, strict=True)
        ]

    def history(self, user: str, limit: int = 50) -> list[HistoryEntry]:
        """The shopper's live events (newest first), then their training events (deepest
        behavior per item first; training events carry no time here)."""
        session = [e for e in reversed(self.sessions.recent(user))]
        out = [
            HistoryEntry(
                e.item,
                e.behavior,
                SESSION,
                e.timestamp,
                self.attributes([self._pos[e.item]])[0] if e.item in self._pos else {},
            )
            for e in session[:limit]
        ]
        hist = self._user_history(user)
        if hist is not None and len(out) < limit:
            deep = (
                hist.sort("w", descending=True)
                .unique("pos", keep="first", maintain_order=True)
                .head(limit - len(out))
            )
            attrs = self.attributes(deep["pos"].to_numpy())
            out += [
                HistoryEntry(item, b, "training", None, a)
                for item, b, a in zip(deep["item"], deep["behavior"], attrs, strict=True)
            ]
        return out

    def explain(self, user: str, item: str, *, fusion: str | Fusion | None = None) -> Explanation:
        """Why ``item`` would be recommended to ``user`` (see :mod:`shoprec.recommend.explain`).

        Raises:
            UnknownItemError: the item is not in the artifact.
        """
        p = self.position(item)
        f = self.resolve_fusion(fusion)
        events, recent_pos, w = self._recent(user)
        ref = self._reference(user, f, recent_pos, w)
        return self._explain(user, p, f, events, recent_pos, w, ref)

    def _reference(
        self, user: str, fusion: Fusion, recent_pos: np.ndarray, w: np.ndarray
    ) -> dict[str, tuple[float, float]]:
        """Mean log term and typical value per term over the reference items."""
        n = self.config.reference_items
        ref = (
            np.arange(self.n_items)
            if self.n_items <= n
            else np.sort(np.random.default_rng(0).choice(self.n_items, n, replace=False))
        )
        preds, terms = self._score(user, ref, fusion)
        out: dict[str, tuple[float, float]] = {}
        for name, t in terms.items():
            if name == PRICE:
                typical = float(np.exp(np.mean(np.log(np.clip(self.price[ref], 1e-7, None)))))
            else:
                typical = float(np.exp(np.mean(np.log(np.clip(preds[name], 1e-7, None)))))
            out[name] = (float(t.mean()), typical)
        sim = self.session_similarity(ref, recent_pos, w)
        out[SESSION] = (float(self.config.session_boost * sim.mean()), float(sim.mean()))
        return out

    def _explain(
        self,
        user: str,
        p: int,
        fusion: Fusion,
        events: list[Event],
        recent_pos: np.ndarray,
        w: np.ndarray,
        ref: Mapping[str, tuple[float, float]],
    ) -> Explanation:
        positions = np.array([p])
        preds, terms = self._score(user, positions, fusion)
        sim = float(self.session_similarity(positions, recent_pos, w)[0])
        terms[SESSION] = np.array([self.config.session_boost * sim])
        tasks = []
        for name, t in terms.items():
            if name == PRICE:
                value = float(self.price[p])
            elif name == SESSION:
                value = sim
            else:
                value = float(preds[name][0])
            tasks.append(TaskContribution(name, value, ref[name][1], float(t[0]) - ref[name][0]))
        tasks.sort(key=lambda t: -abs(t.contribution))
        log_score = float(sum(float(t[0]) for t in terms.values()))
        ref_log = float(sum(m for m, _ in ref.values()))

        batch = self.builder.pairs([user], self.items[[p]]).columns
        notes: list[str] = []
        try:
            with self._explain_lock:
                ig = integrated_gradients(
                    self._explain_model, batch, fusion.model_log_score, self.config.explain_steps
                )
        except ValueError as e:  # a model whose inputs IG cannot reach: explain the rest
            log.warning("no feature attributions: %s", e)
            notes.append(str(e))
            ig = None
        raw = self.builder.frame([user], self.items[[p]]).row(0, named=True)
        features = sorted(
            (
                FeatureAttribution(n, raw.get(n), a)
                for n, a in (ig.attributions if ig else {}).items()
            ),
            key=lambda f: -abs(f.attribution),
        )
        gates = None
        if hasattr(self.model, "gate_weights"):
            g = self.model.gate_weights(batch)
            gates = {t: [round(float(x), 6) for x in v[0]] for t, v in g.items()}
        exp = Explanation(
            user=user,
            item=self.items[p],
            fusion=fusion.formula(),
            score=float(np.exp(log_score)),
            log_score=log_score,
            reference_log_score=ref_log,
            tasks=tasks,
            model_log_score=ig.value if ig else None,
            baseline_model_log_score=ig.baseline_value if ig else None,
            features=features,
            gates=gates,
            because=self._because(user, p, events),
            notes=notes,
        )
        if user not in self._known:
            exp.notes.append("new shopper: the model scores them by attributes and live events")
        exp.sentence = sentence(exp, fusion.penalties)
        return exp

    def _because(self, user: str, p: int, events: list[Event]) -> BecauseItem | None:
        """The history item (training or live) closest to item ``p``."""
        hist = self._user_history(user)
        pos = [self._pos[e.item] for e in events]
        beh = [e.behavior for e in events]
        if hist is not None:
            pos += hist["pos"].to_list()
            beh += hist["behavior"].to_list()
        if not pos:
            return None
        frame = (
            pl.DataFrame({"pos": pos, "behavior": beh})
            .filter(pl.col("pos") != p)
            .with_columns(
                pl.col("behavior").replace_strict(BEHAVIOR_WEIGHT, default=1.0).alias("w")
            )
            .sort("w", descending=True)
            .unique("pos", keep="first")
        )
        if frame.height == 0:
            return None
        v = self.retrieval.similarity_vectors
        sims = v[frame["pos"].to_numpy()] @ v[p]
        j = int(np.argmax(sims))
        q = int(frame["pos"][j])
        title = self.item_info["title"][q] if "title" in self.item_info.columns else None
        return BecauseItem(self.items[q], title, frame["behavior"][j], float(sims[j]))

    # -------------------------------------------------------------------- merchant view
    def set_stock(self, stock: Mapping[str, int]) -> list[str]:
        """Set live stock levels (0 = out of stock); returns the ids it does not know.
        The levels set are kept in :attr:`stock_overrides` (a reload re-applies them)."""
        unknown = [i for i in stock if i not in self._pos]
        with self._lock:
            for item, n in stock.items():
                if item in self._pos:
                    self.stock[self._pos[item]] = int(n)
                    self._out_of_stock[self._pos[item]] = int(n) == 0
                    self.stock_overrides[item] = int(n)
        return unknown

    def new_items(self) -> list[str]:
        """Items without training events (launched after the model's data)."""
        return self.items.filter(pl.Series(self.is_new)).to_list()

    def _users_matrix(self) -> np.ndarray:
        with self._lock:
            if self._user_vectors is None:
                r = self.retrieval
                if list(r.user_columns) == self.features.user_columns and self.features.users:
                    with torch.inference_mode():
                        self._user_vectors = r.two_tower.user_vectors(self.features.users).numpy()
                else:
                    self._user_vectors = embed_users(
                        r.two_tower, self.builder, self.known_users, r.user_columns
                    )
            return self._user_vectors

    def _thresholds(self, depth: int = 50) -> np.ndarray:
        """Each known user's ``depth``-th best two-tower score over all items."""
        users = self._users_matrix()
        with self._lock:
            if self._reach_thresholds is None:
                scores, _ = self.retrieval.index.search(users, depth)
                self._reach_thresholds = scores[:, -1]
            return self._reach_thresholds

    def audience(self, item: str, k: int = 5) -> list[AudienceMember]:
        """The known shoppers an item would reach most surely: the largest *margin* of the
        item's two-tower score over the shopper's 50th-best item score (the cut-off of
        their candidate list; :meth:`new_item_reach` counts the margins >= 0, up to
        :data:`REACH_TOLERANCE`). Each
        comes with the ranking model's predictions and fused score for the pair.

        Raises:
            UnknownItemError: the item is not in the artifact.
        """
        p = self.position(item)
        users = self._users_matrix()
        if not len(users):
            return []
        margin = users @ self.retrieval.item_vectors[p] - self._thresholds()  # (U,)
        top = np.argsort(-margin, kind="stable")[:k]
        names = [self.known_users[i] for i in top]
        preds = score_pairs(self.model, self.builder, names, self.items[[p]])
        preds = {t: v[:, 0] for t, v in preds.items()}
        price = np.full(len(names), self.price[p]) if self.price is not None else None
        fused = self.fusion.score(preds, price)
        return [
            AudienceMember(
                name,
                float(margin[i]),
                float(fused[j]),
                {t: float(preds[t][j]) for t in self.tasks},
            )
            for j, (i, name) in enumerate(zip(top, names, strict=True))
        ]

    def new_item_reach(self, limit: int = 20, audience: int = 3) -> list[NewItemReach]:
        """New items by how many known shoppers' top-50 two-tower candidates they enter."""
        new = np.flatnonzero(self.is_new)
        if len(new) == 0:
            return []
        users = self._users_matrix()
        thr = self._thresholds()
        margins = users @ self.retrieval.item_vectors[new].T - thr[:, None]  # (U, M)
        reach = (margins >= -REACH_TOLERANCE).sum(0)  # (M,)
        order = np.argsort(-reach, kind="stable")[:limit]
        attrs = self.attributes(new[order])
        return [
            NewItemReach(
                self.items[int(new[i])],
                a,
                int(reach[i]),
                self.audience(self.items[int(new[i])], audience) if audience else [],
            )
            for i, a in zip(order, attrs, strict=True)
        ]

    def top_users(self, limit: int = 30) -> list[tuple[str, int]]:
        """Known shoppers with the most training events (for pickers)."""
        counts = sorted(((b - a, u) for u, (a, b) in self._hist_range.items()), reverse=True)[
            :limit
        ]
        return [(u, n) for n, u in counts]

    def describe(self) -> dict[str, Any]:
        """What this recommender serves, for health checks."""
        return {
            "artifact": str(self.artifact.directory),
            "model": self.model.model_name,
            "tasks": self.tasks,
            "fusion": self.fusion.formula(),
            "items": self.n_items,
            "new_items": int(self.is_new.sum()),
            "users": len(self.known_users),
            "index": self.retrieval.index.backend,
            "loaded_at": self.loaded_at,
        }
