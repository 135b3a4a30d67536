"""New users: what to recommend to someone the model has never trained on.

Four sources of evidence, from most to least specific, each a small function that gives a
user vector or a ranked list; :func:`recommend_new_user` takes whatever is known and never
raises for a user with nothing at all:

1. **The first few events of a session** (:func:`session_vector`): the model's user vector
   from an unknown user id and a history of the items just seen (for
   :class:`~shoprec.models.cross_domain.CrossDomainModel`, the towers over the mean item
   embedding), or the plain mean of the item embeddings (:func:`mean_item_vector`).
2. **Another domain** (:func:`from_other_domain`): an EMCDR mapping of the user's source
   vector into the target (:func:`~shoprec.transfer.cross_domain.fit_mapping`).
3. **User attributes** (:class:`AttributePopularity`): the items most bought by known users
   with the same attribute values (e.g. age band and country), backing off attribute by
   attribute to the whole shop.
4. **Nothing**: popularity (:func:`popularity_ranking`).

Example:
    >>> pop = popularity_ranking(np.array([3, 1, 5]))
    >>> recommend_new_user(pop, k=2).tolist()
    [2, 0]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from shoprec.models.cross_domain import CrossDomainModel
from shoprec.models.emcdr import EMCDRMapping
from shoprec.transfer.cross_domain import score_items, user_vectors

log = logging.getLogger(__name__)

__all__ = [
    "AttributePopularity",
    "from_other_domain",
    "mean_item_vector",
    "popularity_ranking",
    "recommend_new_user",
    "session_vector",
]


def popularity_ranking(counts: np.ndarray) -> np.ndarray:
    """Item columns by descending count (ties by column), e.g. from ``np.bincount``."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    return np.lexsort((np.arange(len(counts)), -counts))


@torch.no_grad()
def session_vector(model: CrossDomainModel, items: Sequence[int], domain: int) -> Tensor:
    """The model's vector ``(D,)`` in ``domain`` for an unknown user who just touched
    ``items`` (item ids of any domain; 0 and repeats are fine). With no items at all it is the
    vector of a user with no history (from the towers' biases)."""
    ids = np.asarray([i for i in items if i > 0], dtype=np.int64)[None, :]
    if ids.shape[1] == 0:
        ids = np.zeros((1, 1), dtype=np.int64)
    return user_vectors(model, np.zeros(1, dtype=np.int64), ids, domain)[0]


@torch.no_grad()
def mean_item_vector(table: nn.Embedding | Tensor, items: Sequence[int]) -> Tensor | None:
    """Mean embedding ``(D,)`` of the known ``items`` (ids > 0), or None if there is none."""
    weight = table.weight if isinstance(table, nn.Embedding) else table
    ids = torch.as_tensor([i for i in items if 0 < i < weight.shape[0]], dtype=torch.long)
    return weight[ids].mean(0) if len(ids) else None


@torch.no_grad()
def from_other_domain(mapping: EMCDRMapping, source_vector: Tensor) -> Tensor:
    """Target-domain vector ``(D,)`` (or ``(B, D)``) mapped from the source vector(s)."""
    mapping.eval()
    x = source_vector if source_vector.dim() == 2 else source_vector.unsqueeze(0)
    out = mapping.map(x.float())
    return out if source_vector.dim() == 2 else out[0]


@dataclass
class AttributePopularity:
    """Most bought items among users with the same attribute values, with back-off.

    ``fit`` counts, for every prefix of ``attributes`` (e.g. ``("country", "age_band")`` gives
    country+age band, then country, then everyone), the items bought by each group.
    ``rank`` uses the longest prefix whose group has at least ``min_users`` users.

    Args:
        attributes: attribute columns, most general first.
        min_users: smallest group trusted on its own.

    Example:
        >>> users = pl.DataFrame({"user": ["a", "b"], "country": ["UK", "FR"]})
        >>> pairs = pl.DataFrame({"user": ["a", "b", "b"], "item": [0, 1, 1]})
        >>> ap = AttributePopularity(["country"], min_users=1).fit(pairs, users, n_items=2)
        >>> ap.rank({"country": "FR"}).tolist(), ap.rank({}).tolist()
        ([1, 0], [1, 0])
    """

    attributes: Sequence[str]
    min_users: int = 20
    global_: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tables_: dict[tuple[str, ...], dict[tuple[object, ...], np.ndarray]] = field(
        default_factory=dict
    )

    def fit(self, pairs: pl.DataFrame, users: pl.DataFrame, n_items: int) -> AttributePopularity:
        """Count items per attribute group.

        Args:
            pairs: ``user, item`` with ``item`` an integer column in ``[0, n_items)``.
            users: ``user`` plus the attribute columns.
            n_items: number of item columns.

        Returns:
            self.
        """
        joined = pairs.join(users, on="user", how="left")
        self.global_ = popularity_ranking(np.bincount(joined["item"].to_numpy(), minlength=n_items))
        self.tables_ = {}
        for depth in range(1, len(self.attributes) + 1):
            cols = tuple(self.attributes[:depth])
            table: dict[tuple[object, ...], np.ndarray] = {}
            for key, group in joined.group_by(list(cols)):
                if group["user"].n_unique() < self.min_users:
                    continue
                counts = np.bincount(group["item"].to_numpy(), minlength=n_items).astype(float)
                counts += 1e-3 * np.bincount(joined["item"].to_numpy(), minlength=n_items)
                table[tuple(key)] = popularity_ranking(counts)
            self.tables_[cols] = table
        return self

    def rank(self, attributes: Mapping[str, object]) -> np.ndarray:
        """Item columns ranked for a user with these attribute values (unknown or missing
        values back off to a shorter prefix, finally to overall popularity)."""
        for depth in range(len(self.attributes), 0, -1):
            cols = tuple(self.attributes[:depth])
            if any(c not in attributes for c in cols):
                continue
            key = tuple(attributes[c] for c in cols)
            found = self.tables_.get(cols, {}).get(key)
            if found is not None:
                return found
        return self.global_


def recommend_new_user(
    popularity: np.ndarray,
    k: int = 10,
    *,
    model: CrossDomainModel | None = None,
    domain: int = 0,
    session_items: Sequence[int] = (),
    source_vector: Tensor | None = None,
    mapping: EMCDRMapping | None = None,
    attributes: Mapping[str, object] | None = None,
    attribute_popularity: AttributePopularity | None = None,
    exclude: Sequence[int] = (),
) -> np.ndarray:
    """Top ``k`` item columns of ``domain`` for a user the model has not trained on.

    Evidence used, first available wins: session events (with a model), a source-domain
    vector (with a mapping and a model), attributes (with an :class:`AttributePopularity`),
    else ``popularity``. Never raises for a user with no events at all.

    Args:
        popularity: item columns of the domain by descending popularity
            (:func:`popularity_ranking`); the fallback.
        k: list length (shorter only if the domain has fewer items).
        model: a trained :class:`~shoprec.models.cross_domain.CrossDomainModel`.
        domain: domain index; columns are item ids minus the domain's first id.
        session_items: item ids (model ids, any domain) the user touched so far.
        source_vector: the user's vector in another domain.
        mapping: EMCDR mapping from that domain to ``domain``.
        attributes: the user's attribute values.
        attribute_popularity: fitted on the domain's known users.
        exclude: columns never to recommend (e.g. items just bought).

    Returns:
        ``(k,)`` int64 item columns, best first.
    """
    ranking: np.ndarray | None = None
    if model is not None and any(i > 0 for i in session_items):
        vec = session_vector(model, session_items, domain)
        ranking = _rank(model, vec, domain)
    elif model is not None and mapping is not None and source_vector is not None:
        ranking = _rank(model, from_other_domain(mapping, source_vector), domain)
    elif attribute_popularity is not None and attributes:
        ranking = attribute_popularity.rank(attributes)
    if ranking is None:
        ranking = np.asarray(popularity, dtype=np.int64)
    if len(exclude):
        ranking = ranking[~np.isin(ranking, np.asarray(exclude, dtype=np.int64))]
    return ranking[:k].astype(np.int64)


def _rank(model: CrossDomainModel, vector: Tensor, domain: int) -> np.ndarray:
    scores = score_items(model, vector.unsqueeze(0), domain)[0]
    return torch.argsort(scores, descending=True, stable=True).numpy()
