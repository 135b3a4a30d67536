"""The recommender: one small facade over any recipe's artifact.

::

    catalog.py     the item table by position, live stock, products added at run time
    candidates.py  two-tower, popular, co-occurrence, new, own history, a small catalog whole
    scoring        artifact.scorer.score([user], candidates, events=<live events>) -> Fusion
                   (default: the scorer's target task, what offline evaluation ranks by)
    rerank.py      filters, session boost, stock (forecast), MMR by category, new-item slots
    explain.py     task terms, the scorer's attribution / gate hooks, "because"
    merchant.py    audience, new-item reach

Nothing here knows which model the recipe trained; everything the HTTP service answers is a
method here::

    rec = Artifact.load("runs/sim_mmoe").recommender()   # or Recommender.from_artifact(path)
    rec.record("u12", "i40", "cart")                     # a live event
    [r.item for r in rec.recommend("u12", k=10)]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shoprec.artifact import Artifact
from shoprec.errors import ShoprecError
from shoprec.inventory.stock import (
    ForecastTables,
    ItemForecast,
    NoForecastError,
    StockSignals,
    item_forecast,
    load_forecast,
    reorder_table,
)
from shoprec.models.two_tower import TwoTowerConfig
from shoprec.recommend import rerank
from shoprec.recommend.candidates import CandidateSources, query_vector, similar_items
from shoprec.recommend.catalog import Catalog, UnknownItemError
from shoprec.recommend.explain import Explainer, Explanation
from shoprec.recommend.fusion import PRICE, VARIABLES, Fusion
from shoprec.recommend.history import TrainingHistory, history_entries
from shoprec.recommend.merchant import Merchant
from shoprec.recommend.retrieve import Retrieval
from shoprec.recommend.session import Event, LiveEvents, SessionLog
from shoprec.recommend.types import (
    AudienceMember,
    HistoryEntry,
    NewItemReach,
    RankedItem,
    Ranking,
    RecommenderConfig,
    SimilarItem,
)

__all__ = ["Recommender", "RecommenderConfig", "UnknownItemError"]

log = logging.getLogger(__name__)


class Recommender:
    """Candidates, scoring, re-ranking and explanations over one artifact.

    Args:
        artifact: the loaded artifact (its scorer, item table and training events).
        retrieval: its candidate sources (:meth:`Retrieval.of_artifact`).
        config: the knobs (:class:`RecommenderConfig`; defaults when None).
        sessions: live events (a new log by default; share one to keep them across reloads).
    """

    def __init__(
        self,
        artifact: Artifact,
        retrieval: Retrieval,
        config: RecommenderConfig | None = None,
        *,
        sessions: SessionLog | None = None,
    ) -> None:
        self.artifact = artifact
        self.scorer = artifact.scorer
        self.retrieval = retrieval
        self.config = c = config or RecommenderConfig()
        self.sessions = sessions if sessions is not None else SessionLog()
        self.tasks, self.target = list(self.scorer.tasks), self.scorer.target
        self.loaded_at = time.time()
        self.user_key = user_key(artifact)
        ids = artifact.items["item"].cast(pl.String).to_list()
        if ids != list(self.scorer.items):
            raise ShoprecError(f"{artifact.directory}: items.parquet and the scorer's items differ")
        excl = c.exclude_behaviors
        self.exclude_behaviors = (self.target,) if excl is None else tuple(excl)
        self.training = TrainingHistory(artifact.seen, ids, self.exclude_behaviors)
        self.catalog = Catalog(artifact.items, ~self.training.warm)
        self.stock_signals: StockSignals | None = None
        self.load_forecast(c.forecast, required=c.forecast is not None)
        self.fusion = self.resolve_fusion(c.fusion or Fusion.default(self.tasks, self.target))
        self.candidates = CandidateSources(self.catalog, retrieval, self.training, c)
        self.explainer = Explainer(self)
        self.merchant = Merchant(self)
        self._anyone = retrieval.user_vectors(["\x00unknown"])[0]  # the OOV user's vector
        self.merchant.user_vectors()  # known shoppers' query vectors, before the first request
        if c.group_floor > 0:
            self.floor_groups()  # an unknown floor_groups column fails here, not per request

    @classmethod
    def from_artifact(
        cls,
        artifact_or_path: Artifact | str | Path,
        config: RecommenderConfig | None = None,
        *,
        sessions: SessionLog | None = None,
        build: bool = True,
        two_tower: TwoTowerConfig | None = None,
    ) -> Recommender:
        """The recommender over an :class:`~shoprec.artifact.Artifact` (or its folder) with
        ``config`` (default: its ``serve:`` section), running :func:`build_retrieval` (with
        ``two_tower``) first if it has no retrieval files and ``build`` is true."""
        art = artifact_or_path
        art = art if isinstance(art, Artifact) else Artifact.load(art)
        retrieval = Retrieval.of_artifact(art, build=build, two_tower=two_tower)
        config = config or RecommenderConfig.of_artifact(art)
        return cls(art, retrieval, config, sessions=sessions)

    @property
    def items(self) -> list[str]:
        return self.catalog.ids

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    @property
    def is_new(self) -> np.ndarray:
        return self.catalog.is_new

    @property
    def known_users(self) -> list[str]:
        return self.training.users

    @property
    def stock_overrides(self) -> dict[str, int]:
        return self.catalog.stock_overrides

    @property
    def model_name(self) -> str:
        """The scorer's model (its ``describe()``), or the recipe's name."""
        return str(self.scorer.describe().get("model") or self.scorer.recipe)

    def position(self, item: str) -> int:
        return self.catalog.position(item)

    def has_item(self, item: str) -> bool:
        return self.catalog.has_item(item)

    def attributes(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        return self.catalog.attributes(positions)

    def new_items(self) -> list[str]:
        return self.catalog.new_items()

    def set_stock(self, stock: Mapping[str, int]) -> list[str]:
        """Set live stock levels (0 = out of stock); returns the ids it does not know."""
        return self.catalog.set_stock(stock)

    @property
    def forecast(self) -> ForecastTables | None:
        """The demand forecast the re-ranking and the merchant endpoints read (or None)."""
        return self.stock_signals.tables if self.stock_signals is not None else None

    def load_forecast(self, path: str | Path | None = None, *, required: bool = True) -> None:
        """Read a ``shoprec forecast`` folder (default ``<artifact>/forecast``) for the
        stock-aware re-ranking; items whose stock the catalog does not know take the stock
        of its reorder list (as if set with :meth:`set_stock`).

        Raises:
            InventoryError: ``required`` and no forecast there, or one that cannot be used.
        """
        folder = Path(path) if path is not None else self.artifact.directory / "forecast"
        if not required and not (folder / "forecast.parquet").is_file():
            return
        signals = StockSignals(
            load_forecast(folder), self.catalog.ids, lead_time_weeks=self.config.lead_time_weeks
        )
        fill = (self.catalog.stock[: len(signals.forecast_stock)] < 0) & np.isfinite(
            signals.forecast_stock
        )
        self.stock_signals = signals
        if fill.any():
            self.catalog.set_stock(
                {self.catalog.ids[p]: int(signals.forecast_stock[p]) for p in np.flatnonzero(fill)}
            )
        n = int(signals.has_forecast.sum())
        log.info("forecast %s: stock-aware re-ranking on %d items", folder, n)

    def stock_state(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """``stock``, ``weeks_of_cover``, ``p_stockout`` ``(C,)`` of items now (NaN where
        unknown: no stock level or no forecast)."""
        positions = np.asarray(positions, dtype=np.int64)
        stock = self.catalog.stock[positions]
        if self.stock_signals is None:
            s = np.where(stock >= 0, stock.astype(np.float64), np.nan)
            unknown = np.full(len(s), np.nan)
            return {"stock": s, "weeks_of_cover": unknown, "p_stockout": unknown.copy()}
        return self.stock_signals.signals(positions, stock)

    def stock_term(self, positions: np.ndarray) -> np.ndarray:
        """``(C,)`` the stock re-ranking's log-score term (:func:`.rerank.stock_adjustment`)."""
        c = self.config
        if self.stock_signals is None or (not c.stockout_penalty and not c.overstock_boost):
            return np.zeros(len(positions))
        st = self.stock_state(positions)
        return rerank.stock_adjustment(
            st["p_stockout"], st["weeks_of_cover"], stockout_penalty=c.stockout_penalty,
            overstock_weeks=c.overstock_weeks, overstock_boost=c.overstock_boost,
        )  # fmt: skip

    def item_values(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The fusion's item variables (:data:`~.fusion.VARIABLES` but the price) ``(C,)``,
        neutral where unknown (1; 0 for ``p_stockout``), so an item without stock or forecast
        is neither pushed down nor up by them."""
        st = self.stock_state(positions)
        neutral = {"p_stockout": 0.0}
        return {
            k: np.nan_to_num(v, nan=neutral.get(k, 1.0)) for k, v in st.items() if k in VARIABLES
        }

    def _need_forecast(self) -> ForecastTables:
        if self.forecast is None:
            raise NoForecastError(
                f"No demand forecast is loaded for {self.artifact.directory}: run `shoprec "
                "forecast CONFIG --out <artifact>/forecast` (or set serve.forecast to its "
                "folder) and reload."
            )
        return self.forecast

    def reorder(
        self, *, lead_time_weeks: float | None = None, service_level: float | None = None
    ) -> pl.DataFrame:
        """Reorder advice at the live stock for every item with a forecast and a known stock
        (:func:`~shoprec.inventory.stock.reorder_table`, at-risk items first).

        Args:
            lead_time_weeks: one lead time for all (default: each item's own from the
                forecast's reorder list, else ``config.lead_time_weeks``).
            service_level: default ``config.service_level``.

        Raises:
            NoForecastError: no forecast is loaded.
            InventoryError: a negative lead time, one beyond the horizon, a bad level.
        """
        fc = self._need_forecast()
        known = np.flatnonzero(self.catalog.stock >= 0)
        stock = pl.DataFrame(
            {"item": [self.catalog.ids[p] for p in known], "stock": self.catalog.stock[known]},
            schema={"item": pl.String, "stock": pl.Float64},
        )
        rt = fc.reorder
        if lead_time_weeks is None and rt is not None and "lead_time_weeks" in rt.columns:
            own = rt.select("item", pl.col("lead_time_weeks").cast(pl.Float64))
            stock = stock.join(own, on="item", how="left")
        c = self.config
        return reorder_table(
            fc.latest, stock,
            lead_time_weeks=c.lead_time_weeks if lead_time_weeks is None else lead_time_weeks,
            service_level=c.service_level if service_level is None else service_level,
            risk_threshold=c.stockout_risk, periods_per_week=fc.periods_per_week,
        )  # fmt: skip

    def item_forecast(
        self,
        item: str,
        *,
        horizon: int | None = None,
        lead_time_weeks: float | None = None,
        service_level: float | None = None,
    ) -> ItemForecast:
        """One item's history, forecast band and reorder advice at its live stock.

        Raises:
            UnknownItemError: an item neither the catalog nor the forecast knows.
            NoForecastError: no forecast is loaded.
            InventoryError: no forecast for the item, a horizon beyond the forecast's, a
                bad lead time or service level.
        """
        fc = self._need_forecast()
        p = self.catalog.pos.get(item)
        if p is None and fc.latest.filter(pl.col("item") == item).height == 0:
            raise UnknownItemError(f"unknown item '{item}'")
        known = p is not None and self.catalog.stock[p] >= 0
        stock = float(self.catalog.stock[p]) if known else None
        return item_forecast(
            fc, item, stock, horizon=horizon, lead_time_weeks=lead_time_weeks,
            default_lead_time_weeks=self.config.lead_time_weeks,
            service_level=self.config.service_level if service_level is None else service_level,
            risk_threshold=self.config.stockout_risk,
        )  # fmt: skip

    def add_items(self, items: pl.DataFrame | Sequence[Mapping[str, Any]]) -> list[str]:
        """Add products at run time (:meth:`Catalog.add_items`; ``CatalogError`` if the
        recipe cannot score them); returns their ids."""
        frame = items if isinstance(items, pl.DataFrame) else pl.DataFrame(list(items))
        self.catalog.add_items(frame, self.scorer, self.retrieval)
        self.candidates.refresh()
        self.merchant.forget_thresholds()
        return frame["item"].cast(pl.String).to_list()

    def is_known_user(self, user: str) -> bool:
        """Whether the artifact's training events have this shopper."""
        return self.training.is_known(user)

    def record(self, user: str, item: str, behavior: str, timestamp: float | None = None) -> Event:
        """Add a live event; the shopper's next recommendation uses it."""
        return self.sessions.add(user, item, behavior, timestamp)

    def live(self, user: str) -> LiveEvents:
        """The shopper's live events on known items, as a request uses them."""
        return LiveEvents.of(self.sessions, user, self.catalog.pos, self.config)

    def user_vector(self, user: str, live: LiveEvents) -> np.ndarray:
        """The two-tower query (:func:`~.candidates.query_vector`)."""
        i = self.training.user_index.get(user)
        u = self.merchant.user_vectors()[i] if i is not None else self._anyone
        most = self.config.session_weight if i is not None else 0.9
        return query_vector(u, self.retrieval.item_vectors, live.positions, live.weights, most)

    def resolve_fusion(self, fusion: str | Fusion | None) -> Fusion:
        """The configured fusion, or ``fusion`` (a formula or :class:`Fusion`) checked
        against the scorer's tasks (``ValueError`` if it cannot be computed)."""
        if fusion is None:
            return self.fusion
        f = Fusion.parse(fusion) if isinstance(fusion, str) else fusion
        if f.price_weight and self.catalog.price is None:
            raise ValueError("the fusion uses the price, but this catalog has no prices")
        return f.check(self.tasks)

    def score(
        self, user: str, positions: np.ndarray, fusion: Fusion, events: pl.DataFrame | None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The scorer's outputs ``(C,)`` per task and the fusion's log terms ``(C,)``."""
        raw = self.scorer.score([user], np.asarray(positions, dtype=np.int64), events=events)
        preds = {t: np.asarray(v, dtype=np.float64)[0] for t, v in raw.items()}
        price = self.catalog.price[positions] if self.catalog.price is not None else None
        reads = {*fusion.variables, *fusion.penalties} & (set(VARIABLES) - {PRICE})
        values = self.item_values(positions) if reads else None
        return preds, fusion.log_terms(preds, price, values)

    def predict(self, user: str, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The scorer's outputs ``(C,)`` per task for ``user`` (with their live events)."""
        raw = self.scorer.score([user], np.asarray(positions, np.int64), self.live(user).frame)
        return {t: np.asarray(v, dtype=np.float64)[0] for t, v in raw.items()}

    def recommend(self, user: str, k: int = 10, **kwargs: Any) -> list[RankedItem]:
        """The top-``k`` items for ``user`` (an unknown user gets a cold-start list); the
        keyword arguments are :meth:`rank`'s."""
        return self.rank(user, k, **kwargs).items

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
        """The top-``k`` items for ``user`` and how many candidates the scorer scored;
        ``fusion`` (a formula) replaces the configured one, ``explain`` attaches an
        :class:`Explanation` to each item. ``ValueError``: ``k < 1`` or a fusion the
        scorer's tasks cannot make."""
        if k < 1:
            raise ValueError("k must be at least 1")
        c, cat = self.config, self.catalog
        f = self.resolve_fusion(fusion)
        live = self.live(user)
        banned = rerank.excluded(
            cat, self.training, user, live.held_positions, live.held_behaviors,
            self.exclude_behaviors, filter_out_of_stock=c.filter_out_of_stock,
            exclude_categories=exclude_categories, exclude_items=exclude_items,
        )  # fmt: skip
        query = self.user_vector(user, live)
        cand, bits = self.candidates(user, query, live.positions, live.weights, banned)
        if len(cand) == 0:
            return Ranking([], 0)
        preds, terms = self.score(user, cand, f, live.frame)
        fused = np.sum(list(terms.values()), axis=0)
        sim = rerank.session_similarity(self.retrieval.similarity_vectors, cand, live)
        boost = c.session_boost * sim
        stock = self.stock_term(cand)  # risk of running out (down), overstock (up); 0: none
        total = fused + boost + stock
        order = rerank.mmr(total, cat.categories[cand], k, c.diversity)
        if c.group_floor > 0:  # a minimum share of the list per exposure group
            groups = self.floor_groups()[cand]
            order = rerank.group_floor(order, total, groups, k, c.group_floor)
        # a slot for new items only where the recipe scores them from their content; others
        # would fill it with an item scored by the untrained unknown-item embedding
        n_slots = c.new_item_slots if hasattr(self.scorer, "add_items") else 0
        order, slots = rerank.new_item_slots(order, cat.is_new[cand], total, k, n_slots)
        out = rerank.ranked_items(cat, cand, bits, order, preds, fused, boost, slots, stock)
        if explain:
            ref = self.explainer.reference(user, f, live)
            for r in out:
                r.explanation = self.explainer.explain(user, cat.pos[r.item], f, live, ref)
        return Ranking(out, len(cand))

    def floor_groups(self) -> np.ndarray:
        """``(N,)`` exposure group of every catalog item (:func:`.rerank.exposure_groups`),
        recomputed when products were added at run time."""
        cached = getattr(self, "_floor_groups", None)
        if cached is None or len(cached) != self.catalog.n_items:
            popularity = np.bincount(self.training.positions, minlength=self.catalog.n_items)
            cached = rerank.exposure_groups(self.catalog, popularity, self.config.floor_groups)
            self._floor_groups = cached
        return cached

    def explain(self, user: str, item: str, *, fusion: str | Fusion | None = None) -> Explanation:
        """Why ``item`` would be recommended to ``user`` (``UnknownItemError`` if unknown)."""
        p = self.position(item)
        f = self.resolve_fusion(fusion)
        live = self.live(user)
        return self.explainer.explain(user, p, f, live, self.explainer.reference(user, f, live))

    def similar(self, item: str, k: int = 10) -> list[SimilarItem]:
        """Items like ``item``: two-tower cosine plus co-occurrence, best first."""
        if k < 1:
            raise ValueError("k must be at least 1")
        return similar_items(self.catalog, self.retrieval, self.position(item), k)

    def history(self, user: str, limit: int = 50) -> list[HistoryEntry]:
        """The shopper's live events (newest first), then their training items."""
        events = self.sessions.recent(user)
        return history_entries(self.training, self.catalog, events, user, limit)

    def audience(self, item: str, k: int = 5) -> list[AudienceMember]:
        """The known shoppers an item would reach most surely (:mod:`.merchant`)."""
        return self.merchant.audience(item, k)

    def new_item_reach(self, limit: int = 20, audience: int = 3) -> list[NewItemReach]:
        """New items by how many known shoppers' candidate lists they enter."""
        return self.merchant.new_item_reach(limit, audience)

    def top_users(self, limit: int = 30) -> list[tuple[str, int]]:
        """Known shoppers with the most training events (for pickers)."""
        return self.training.top_users(limit)

    def describe(self) -> dict[str, Any]:
        """What this recommender serves, for health checks."""
        return {
            **self.scorer.describe(),  # recipe, tasks, target
            "artifact": str(self.artifact.directory),
            "model": self.model_name,
            "fusion": self.fusion.formula(),
            "items": self.n_items,
            "new_items": int(self.catalog.is_new.sum()),
            "users": len(self.known_users),
            "index": self.retrieval.index.backend,
            "forecast": str(self.forecast.directory) if self.forecast is not None else None,
            "loaded_at": self.loaded_at,
        }


def user_key(artifact: Artifact) -> Callable[[str], str]:
    """Raw shopper id -> the id the artifact knows: the keyed hash when it was trained with
    ``data.hash_user_ids`` (the key from the same environment variable), else the id itself.

    The service and the CLI map every incoming id through it, so the event store, the session
    log and the scorer only ever see what the training data held.
    """
    data = artifact.config_dict.get("data") or {}
    if not (isinstance(data, dict) and data.get("hash_user_ids")):
        return str
    from shoprec.data.schema import hash_id, user_id_salt

    salt = user_id_salt(str(data.get("user_id_salt_env") or "SHOPREC_USER_ID_SALT"))
    return lambda raw: hash_id(raw, salt)
