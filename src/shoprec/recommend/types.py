"""The recommender's settings and what its methods return (plain dataclasses)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from shoprec.errors import ShoprecError

if TYPE_CHECKING:
    from shoprec.artifact import Artifact
    from shoprec.recommend.explain import Explanation

log = logging.getLogger(__name__)

_NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_Fraction = Annotated[float, Field(ge=0, le=1)]
_Probability = Annotated[float, Field(gt=0, lt=1)]


@dataclass(frozen=True)
class RecommenderConfig:
    """The knobs of :class:`~shoprec.recommend.Recommender` (the ``serve:`` config section).

    The defaults serve what offline evaluation measures: the scorer's target task ranks
    (``fusion``), the target's training items are left out (``exclude_behaviors``), and a
    catalog of up to ``rank_all_below`` items is ranked whole, so retrieval cannot miss.
    """

    fusion: str | None = None  # a Fusion formula, e.g. "buy * price"; None: the target task
    exclude_behaviors: tuple[str, ...] | None = None  # drop items the shopper did this to
    # (None: the target's behavior, as offline evaluation; (): repeats allowed)
    rank_all_below: int = 2000  # catalogs with at most this many items are ranked whole
    n_two_tower: int = 200  # candidates from the two-tower index
    min_candidates: int = 500  # more two-tower neighbours fill the union up to this many
    n_popular: int = 50  # candidates from popularity
    n_cooccurrence: int = 100  # candidates from co-occurrence neighbours
    n_new: int = 20  # candidates among new items (no training events)
    n_history: int = 50  # the shopper's own allowed history items (repeat purchases)
    filter_out_of_stock: bool = True  # drop items whose known stock is 0
    diversity: float = 0.3  # MMR weight of category redundancy (0: by score only)
    session_boost: float = 2.0  # log-score bonus of an item identical to the latest event's
    session_weight: float = 0.5  # most a known shopper's query moves to their recent items
    session_decay: float = 0.8  # weight of each older recent event relative to the next one
    recent_events: int = 20  # recent events used per shopper
    history_seeds: int = 20  # history items (deepest behavior first) seeding co-occurrence
    new_item_slots: int = 1  # positions kept for the best new items (0: none); used only
    # by recipes that score new items from their content (the scorer has add_items)
    group_floor: float = 0.0  # each exposure group gets at least this share of the top k
    # (0: off), e.g. 0.2 with floor_groups "popularity": 2 of 10 places for the long tail
    floor_groups: str = "popularity"  # "popularity" (head: the 20% most sold items; tail: the
    # rest) or an item-table column (category, brand, seller, market, ...)
    explain_steps: int = 64  # Integrated-Gradients steps (scorers that offer attributions)
    reference_items: int = 2000  # items that stand for "a typical item" in explanations
    # stock-aware re-ranking (needs a forecast: `shoprec forecast`; see shoprec.inventory)
    forecast: str | None = None  # forecast folder; None: <artifact>/forecast when it exists
    lead_time_weeks: _NonNegative = 2.0  # restock lead time of items without their own
    stockout_penalty: _NonNegative = 1.0  # log-score term x log(1 - p_stockout): pushes down
    # items whose forecast demand over the lead time may exceed their stock (0: off)
    overstock_weeks: _Positive = 12.0  # weeks of cover above which stock counts as overstock
    overstock_boost: _Fraction = 0.0  # most log-score bonus for overstock, reached at twice
    # overstock_weeks (0: off; at most 1: it nudges, never leads)
    service_level: _Probability = 0.9  # reorder list: P(no stock-out) the quantity aims for
    stockout_risk: _Fraction = 0.5  # p_stockout from which an item is "at risk"

    @classmethod
    def of_artifact(cls, art: Artifact) -> RecommenderConfig:
        """The artifact's ``serve:`` config section (defaults if it cannot be read)."""
        try:
            return art.config.serve.recommender_config()
        except (ShoprecError, ValueError, TypeError) as e:
            log.warning("the serve section of %s is unusable (%s): defaults", art.directory, e)
            return cls()


@dataclass
class RankedItem:
    """One recommendation.

    Attributes:
        item: the item id.
        rank: 1-based position.
        score: the final score, ``fused * exp(session_boost + stock_adjustment)``.
        fused: the fusion of the task outputs (by default the target task's score).
        session_boost: the log-score bonus from the shopper's recent events.
        predictions: task -> the scorer's output.
        sources: candidate sources that proposed it (:data:`~.candidates.SOURCES`).
        is_new: the item had no training events.
        slot: ``"ranked"``, or ``"new"`` where it fills a new-item slot.
        attributes: title, category, brand, price, stock where known.
        stock_adjustment: the log-score term from stock and the forecast (< 0: pushed down
            for its risk of running out, > 0: pushed up as overstock; 0 without a forecast).
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
    stock_adjustment: float = 0.0
    explanation: Explanation | None = None


@dataclass
class Ranking:
    """What :meth:`Recommender.rank` returns.

    Attributes:
        items: the recommendations, best first.
        candidates: how many candidates the scorer scored to choose them.
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
    candidate cut-off (> 0: it enters their candidate list), and the scorer's view."""

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
