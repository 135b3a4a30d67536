"""Recommendations from a trained artifact: candidates, ranking, re-ranking, explanations.

* :class:`Recommender` — ``Recommender.from_artifact(path).recommend(user, k)``;
* :class:`Fusion` — the final score as a product of task outputs and the price;
* :func:`build_retrieval` — train the two-tower model and write the retrieval files;
* :class:`SessionLog` — live events that the next recommendation uses.
"""

from shoprec.recommend.explain import Explanation, integrated_gradients
from shoprec.recommend.fusion import Fusion
from shoprec.recommend.recommender import (
    SOURCES,
    AudienceMember,
    HistoryEntry,
    NewItemReach,
    RankedItem,
    Ranking,
    Recommender,
    RecommenderConfig,
    SimilarItem,
    UnknownItemError,
)
from shoprec.recommend.retrieve import build_retrieval, has_retrieval
from shoprec.recommend.session import Event, SessionLog
from shoprec.recommend.two_tower import TwoTower, TwoTowerConfig

__all__ = [
    "SOURCES",
    "AudienceMember",
    "Event",
    "Explanation",
    "Fusion",
    "HistoryEntry",
    "NewItemReach",
    "RankedItem",
    "Ranking",
    "Recommender",
    "RecommenderConfig",
    "SessionLog",
    "SimilarItem",
    "TwoTower",
    "TwoTowerConfig",
    "UnknownItemError",
    "build_retrieval",
    "has_retrieval",
    "integrated_gradients",
]
