"""Recommendations from any recipe's artifact: candidates, scoring, re-ranking, explanations.

* :class:`Recommender` — ``Recommender.from_artifact(path).recommend(user, k)`` (or
  ``Artifact.load(path).recommender()``), scoring only through the artifact's scorer;
* :class:`Catalog` — the item table, live stock, products added at run time;
* :class:`Fusion` — the final score as a product of task outputs (and the price);
* :func:`build_retrieval` — the two-tower model, item index and co-occurrences of an
  artifact, from its item table and training events only;
* :class:`SessionLog` — live events that the next recommendation uses.
"""

from shoprec.recommend.candidates import SOURCES
from shoprec.recommend.catalog import Catalog, CatalogError, DuplicateItemError, UnknownItemError
from shoprec.recommend.explain import Explanation, integrated_gradients
from shoprec.recommend.fusion import Fusion
from shoprec.recommend.recommender import Recommender
from shoprec.recommend.retrieve import Retrieval, build_retrieval, has_retrieval
from shoprec.recommend.session import Event, SessionLog
from shoprec.recommend.two_tower import RetrievalFeatures
from shoprec.recommend.types import (
    AudienceMember,
    HistoryEntry,
    NewItemReach,
    RankedItem,
    Ranking,
    RecommenderConfig,
    SimilarItem,
)

__all__ = [
    "SOURCES",
    "AudienceMember",
    "Catalog",
    "CatalogError",
    "DuplicateItemError",
    "Event",
    "Explanation",
    "Fusion",
    "HistoryEntry",
    "NewItemReach",
    "RankedItem",
    "Ranking",
    "Recommender",
    "RecommenderConfig",
    "Retrieval",
    "RetrievalFeatures",
    "SessionLog",
    "SimilarItem",
    "UnknownItemError",
    "build_retrieval",
    "has_retrieval",
    "integrated_gradients",
]
