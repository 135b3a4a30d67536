"""Cross-domain transfer: rank a sparse target domain's items from a rich source domain.

One user base shops in several domains (markets, categories); the target domain has few
events, or none at all for some users. Each method is a few explicit steps over
:mod:`shoprec.transfer.cross_domain` and :mod:`shoprec.transfer.neighbours`:

* ``target_only``: :class:`~shoprec.models.cross_domain.CrossDomainModel` on the target's
  events alone (the baseline transfer must beat);
* ``finetune``: pretrain on the source, freeze the listed parts (``freeze``), fine-tune on the
  target with histories of both domains;
* ``joint``: ``J = J_S + lambda * J_T`` over both domains' events (``lambda``);
* ``experts``: the same with shared and per-domain experts (``model.n_shared_experts``,
  ``model.n_domain_experts``; a PLE / STAR-style multi-domain model);
* ``neighbours``: :class:`~shoprec.transfer.neighbours.ItemNeighbours` over both domains'
  items (nothing to train: item similarities from shared users).

A user's history in every domain the method reads shapes their target scores, so a user with
no target history at all is ranked from their source history: the point of the recipe.

Data: any dataset whose interactions have a ``domain`` column (``amazon_cross_domain``, the
simulated shop's markets, the shop's own file with a domain column, a ``domain_pairs``
release). Every event of the named domains is a (user, item) pair, whatever its behavior
(``data.behaviors`` keeps only some). The split comes from the config: ``given`` (the
release's test files), ``leave_last_out``, ``time``, ``random``... Validation (epochs, and
the scores a search compares) ranks the split's target-domain validation events of users
with training events, each user over all their held-out items (``repeats: true`` counts items
they already had); without such events one random target item of each user with at least two
is held out of training. Selection scores what is served (popularity for users without
history included). The final scorer knows every training and validation event. Evaluation
ranks the target domain's items: they are the scorer's items (the artifact's
``items.parquet``). Live events (``score(..., events=)``, in any domain the method reads)
extend a user's history. Example::

    name: sport_from_cloth
    data: {dataset: amazon_cross_domain}
    split: {kind: given, valid_hold_out: false}   # the recipe holds out a target item per user
    recipe:
      name: cross_domain
      source: cloth
      target: sport
      method: joint                  # target_only | finetune | joint | experts | neighbours
      lambda: 1.0
      dim: 64
      model: {history_dropout: 0.5, use_user_id: false}   # CrossDomainConfig fields
    train: {epochs: 12, batch_size: 256, lr: 0.01, patience: 2}

Scores: every method gives each user a distribution over the target items (the model's
softmax, or the item-neighbour scores normalised per user; ``blend`` mixes the two), so
scores are probabilities in (0, 1], comparable across users; a user with no usable history
gets the smoothed target popularity.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from pydantic import ConfigDict, Field, field_validator, model_validator
from safetensors.torch import load_file, save_file

from shoprec.errors import DataError
from shoprec.evaluate import metrics
from shoprec.models import config_from_dict
from shoprec.models.cross_domain import CrossDomainConfig, CrossDomainModel
from shoprec.recipes.base import (
    Recipe,
    RecipeOptions,
    Scorer,
    TrainingRun,
    events_of,
    positions_or_all,
)
from shoprec.train.loop import fit
from shoprec.train.weighting import FixedWeights
from shoprec.transfer.cross_domain import (
    PARTS,
    DomainIndex,
    freeze,
    history_matrix,
    score_items,
    tie_items,
    user_rows,
    user_vectors,
)
from shoprec.transfer.neighbours import ItemNeighbours, NeighbourConfig

if TYPE_CHECKING:
    from shoprec.data.schema import Dataset, Interactions
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "CrossDomainOptions",
    "CrossDomainRecipe",
    "CrossDomainScorer",
    "NeighbourOptions",
]

METHODS = ("target_only", "finetune", "joint", "experts", "neighbours")
TRAINED = ("target_only", "finetune", "joint", "experts")
_FORMAT = "shoprec.cross_domain"
_VERSION = 1
_TINY = 1e-38  # the smallest score: every score stays > 0 (float32 keeps it)
_K = 10  # cut-off of the validation scores that select epochs


# ------------------------------------------------------------------------------ options


class NeighbourOptions(RecipeOptions):
    """:class:`~shoprec.transfer.neighbours.NeighbourConfig` fields (see there)."""

    shrink: float = Field(10.0, ge=0)  # damps item pairs with few common users
    alpha: float = Field(0.5, ge=0, le=1)  # 0.5: cosine; higher penalises popular history items
    top_k: int | None = Field(20, ge=1)  # neighbours kept per item and domain (None: all)
    popularity_tiebreak: bool = True  # items no history item points to, by popularity

    def config(self) -> NeighbourConfig:
        return NeighbourConfig(**self.model_dump())


class CrossDomainOptions(RecipeOptions):
    """The ``recipe:`` keys of ``cross_domain`` (besides ``name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str | tuple[str, ...]  # the rich domain(s)
    target: str  # the domain whose items are ranked
    method: Literal["target_only", "finetune", "joint", "experts", "neighbours"] = "joint"
    lambda_: float = Field(1.0, alias="lambda", gt=0)  # joint / experts: J = J_S + lambda J_T
    freeze: tuple[str, ...] = ()  # finetune: parts frozen after pretraining (PARTS)
    dim: int = Field(64, gt=0)  # embedding width of the model
    model: dict[str, Any] = Field(default_factory=dict)  # CrossDomainConfig fields
    neighbours: NeighbourOptions = Field(default_factory=NeighbourOptions)
    blend: float | None = Field(None, ge=0, le=1)  # share of neighbour scores in a model's
    source_history: bool = True  # neighbours: False reads the target's events only
    shared_items: bool = False  # one embedding per item id across domains (tie_items)
    max_history: int = Field(50, gt=0)  # history items per user (a seeded subset if more)
    max_positives: int = Field(64, gt=0)  # target items per training row
    repeats: bool = False  # validation counts items the user already has (repeat buys)
    seed: int = 0  # validation hold-outs and history subsets

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("freeze")
    @classmethod
    def _freeze(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown part(s) {unknown} to freeze; known: {list(PARTS)}")
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "domain_sizes" in value:
            raise ValueError("'model.domain_sizes' comes from the data; leave it out")
        config_from_dict(CrossDomainConfig, value)  # unknown keys -> ValueError naming them
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CrossDomainOptions:
        if not self.sources:
            raise ValueError("'source' names no domain")
        if self.target in self.sources:
            raise ValueError(f"source {list(self.sources)} and target '{self.target}' overlap")
        if self.freeze and self.method != "finetune":
            raise ValueError("'freeze' goes with method: finetune")
        if self.blend is not None and self.method not in TRAINED:
            raise ValueError(
                f"'blend' mixes neighbour scores into a trained model's; {self.method} trains none"
            )
        if not self.source_history and self.method != "neighbours":
            raise ValueError(
                "'source_history: false' goes with method: neighbours "
                "(a trained model without the source is method: target_only)"
            )
        return self

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else tuple(self.source)

    @property
    def domains(self) -> list[str]:
        """Source domain(s), then the target (the target is the last domain index)."""
        return [*self.sources, self.target]

    def network(self, domain_sizes: Sequence[int]) -> CrossDomainConfig:
        """The :class:`CrossDomainConfig` of this method over domains of these sizes."""
        fields = dict(self.model)
        if self.method == "experts":
            fields.setdefault("n_shared_experts", 2)
            fields.setdefault("n_domain_experts", 1)
        return config_from_dict(CrossDomainConfig, {**fields, "domain_sizes": list(domain_sizes)})


# --------------------------------------------------------------------------------- pairs


@dataclass
class Pairs:
    """Parallel ``(N,)`` arrays of user id, item id and domain index (DomainIndex ids)."""

    u: np.ndarray
    i: np.ndarray
    d: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), z.copy())

    def where(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.u[mask], self.i[mask], self.d[mask])

    def of(self, domains: Sequence[int]) -> Pairs:
        return self.where(np.isin(self.d, list(domains)))

    def __add__(self, other: Pairs) -> Pairs:
        return Pairs(*(np.concatenate([a, b]) for a, b in zip(
            (self.u, self.i, self.d), (other.u, other.i, other.d), strict=True)))  # fmt: skip

    def __len__(self) -> int:
        return len(self.u)


def _frame(inter: Interactions | None, domains: Sequence[str]) -> pl.DataFrame:
    """Distinct ``user, item, domain`` strings of the named domains."""
    schema = {"user": pl.String, "item": pl.String, "domain": pl.String}
    if inter is None:
        return pl.DataFrame(schema=schema)
    df = inter.df
    if "domain" not in df.columns:
        raise DataError("the cross_domain recipe needs a 'domain' column in the events")
    return (
        df.select(pl.col(c).cast(pl.String) for c in schema)
        .filter(pl.col("domain").is_in(list(domains)))
        .unique(maintain_order=True)
    )


def _hold_one(p: Pairs, domain: int, least: int, seed: int) -> np.ndarray:
    """Mask of one random pair of ``domain`` per user with at least ``least`` pairs there."""
    idx = np.flatnonzero(p.d == domain)
    idx = idx[np.random.default_rng(seed).permutation(len(idx))]
    _, first, count = np.unique(p.u[idx], return_index=True, return_counts=True)
    mask = np.zeros(len(p), dtype=bool)
    mask[idx[first[count >= least]]] = True
    return mask


def _new_pairs(held: Pairs, known: Pairs, repeats: bool = False) -> Pairs:
    """``held`` less pairs with an unknown user or item and, unless ``repeats``, pairs
    already in ``known``."""
    ok = (held.u > 0) & (held.i > 0)
    if not repeats:
        key = lambda p: p.u * (1 << 32) + p.i  # noqa: E731
        ok &= ~np.isin(key(held), key(known))
    return held.where(ok)


@dataclass
class _Holdout:
    """Validation targets of one domain: users, their held-out items (columns of the domain)
    and the items left out of their ranking. Scored per user over every relevant item, as
    the test protocol (:func:`~shoprec.evaluate.metrics.ranking_metrics`)."""

    users: np.ndarray  # (U,) user ids
    relevant: metrics.Sparse  # (U rows) held-out columns
    exclude: metrics.Sparse | None  # (U rows) known columns

    @classmethod
    def of(
        cls, index: DomainIndex, held: Pairs, known: Pairs, domain: int, repeats: bool = False
    ) -> _Holdout:
        """Held-out pairs of ``domain``; each user's ``known`` items of the domain are left
        out of their ranking unless ``repeats``."""
        held = held.of([domain])
        lo, size = index.starts[domain] + 1, index.domain_sizes[domain]
        users = np.unique(held.u)

        def rows(p: Pairs) -> metrics.Sparse:
            return ItemNeighbours.histories(p.u, p.i - lo, index.n_users + 1, size)[users]

        exclude = None if repeats else rows(known.of([domain]))
        return cls(users, rows(held), exclude)

    def __len__(self) -> int:
        return len(self.users)

    def scores(
        self, score: Callable[[np.ndarray], torch.Tensor], chunk: int = 1024
    ) -> dict[str, float]:
        """``ndcg`` / ``hr`` at 10 of full ranking over the domain's items, mean over users
        (scored ``chunk`` users at a time)."""
        if len(self) == 0:
            return {"ndcg": float("nan"), "hr": float("nan")}
        per: dict[str, list[np.ndarray]] = {"ndcg": [], "hr": []}
        for lo in range(0, len(self), chunk):
            hi = min(lo + chunk, len(self))
            exclude = None if self.exclude is None else self.exclude[lo:hi]
            m = metrics.ranking_metrics(
                score(self.users[lo:hi]), self.relevant[lo:hi], exclude,
                ks=(_K,), per_user=True,
            )  # fmt: skip
            for name in per:
                per[name].append(np.asarray(m[f"{name}@{_K}"]))
        ndcg, hr = np.concatenate(per["ndcg"]), np.concatenate(per["hr"])
        return {"ndcg": float(np.nanmean(ndcg)), "hr": float(np.nanmean(hr))}


# -------------------------------------------------------------------------------- scorer


class CrossDomainScorer(Scorer):
    """Target-domain item scores from a user's history in every domain the method reads.

    Attributes:
        index: user and per-domain item ids (the target is the last domain).
        domain: the target domain's name; :attr:`items` are its items.
        settings: method, history domains, ``max_history``, ``seed``, ``blend``, ``dim``
            and the model's config.
        model: the trained model (trained methods), in eval mode.
        neighbours: the item neighbours (``neighbours``, or a trained method with ``blend``).
    """

    recipe = "cross_domain"

    def __init__(
        self,
        tasks: Sequence[str],
        target: str,
        index: DomainIndex,
        settings: dict[str, Any],
        known: Pairs,
        model: CrossDomainModel | None = None,
        neighbours: ItemNeighbours | None = None,
    ) -> None:
        t = len(index.domains) - 1
        super().__init__(tasks, target, index.items[t])
        self.index = index
        self.domain = index.domains[t]
        self.settings = dict(settings)
        self.model = model
        self.neighbours = neighbours
        self._t = t
        self._lo = index.starts[t] + 1
        self._known = known
        self._users = np.asarray(index.users, dtype=str)
        self._items_frame: pl.DataFrame | None = None
        hd = list(settings["history_domains"])
        mine = known.of(hd)
        # (n_users + 1, n_items + 1) binary history of the domains the method reads
        self._hist = ItemNeighbours.histories(mine.u, mine.i, index.n_users + 1, index.n_items + 1)
        self._rows = None
        if model is not None:
            self._rows = history_matrix(
                mine.u, mine.i, index.n_users, int(settings["max_history"]), seed=settings["seed"]
            )
        tgt = known.of([t])
        counts = np.bincount(tgt.i - self._lo, minlength=self.n_items).astype(np.float64)
        self._popularity = ((counts + 1.0) / (counts.sum() + self.n_items)).astype(np.float32)

    # ---- ids

    def user_ids(self, users: Sequence[str]) -> np.ndarray:
        """``(U,)`` user ids of the index (0 for a user it never saw)."""
        q = np.asarray([str(x) for x in users], dtype=str)
        if len(self._users) == 0 or len(q) == 0:
            return np.zeros(len(q), dtype=np.int64)
        pos = np.searchsorted(self._users, q).clip(0, len(self._users) - 1)
        return np.where(self._users[pos] == q, pos + 1, 0).astype(np.int64)

    def _live(
        self, users: Sequence[str], events: pl.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Live events of ``users`` as (request row, item id) pairs, oldest first; items of
        no domain the method reads are dropped. Events may carry a ``domain`` column; without
        it an item id is looked up in the target domain first."""
        mine = events_of(events, users)
        if mine is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        table = self._item_table()
        rows = pl.DataFrame({"user": [str(x) for x in users]}).with_row_index("_row")
        ev = mine.select(pl.col("user").cast(pl.String), pl.col("item").cast(pl.String),
                         *([pl.col("domain").cast(pl.String)] if "domain" in mine.columns else [])
                         ).with_row_index("_order")  # fmt: skip
        on = ["item", "domain"] if "domain" in ev.columns else ["item"]
        hit = (
            ev.join(table, on=on, how="inner")
            .sort("_order", "_pref")
            .unique("_order", keep="first", maintain_order=True)
            .join(rows, on="user", how="inner")
            .sort("_order")
        )
        return hit["_row"].to_numpy().astype(np.int64), hit["_id"].to_numpy().astype(np.int64)

    def _item_table(self) -> pl.DataFrame:
        """``item, domain, _id, _pref`` of every item of the domains the method reads (the
        target's first: ``_pref`` 0), built once."""
        if self._items_frame is None:
            ix = self.index
            self._items_frame = pl.concat(
                pl.DataFrame({
                    "item": list(ix.items[k]),
                    "domain": [ix.domains[k]] * ix.domain_sizes[k],
                    "_id": np.arange(ix.domain_sizes[k], dtype=np.int64) + ix.starts[k] + 1,
                    "_pref": 0 if k == self._t else 1 + k,
                })
                for k in self.settings["history_domains"]
            )  # fmt: skip
        return self._items_frame

    # ---- scores

    def distribution(
        self,
        uids: np.ndarray,
        live_rows: np.ndarray | None = None,
        live_items: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(U, n_items)`` float32: each user's distribution over the target items.

        Args:
            uids: ``(U,)`` user ids (0: unknown).
            live_rows: ``(E,)`` row in ``uids`` of each live event (optional).
            live_items: ``(E,)`` item id of each live event.
        """
        uids = np.asarray(uids, dtype=np.int64)
        n_rows, n_cols = len(uids), self.index.n_items + 1
        hist = self._hist[uids]
        if live_rows is not None and len(live_rows):
            extra = ItemNeighbours.histories(live_rows, live_items, n_rows, n_cols)
            hist = hist + extra
            hist.data[:] = 1.0
        empty = np.diff(hist.indptr) == 0
        out = np.empty((n_rows, self.n_items), dtype=np.float32)
        blend = self.settings.get("blend")
        if self.model is not None:
            p = self._model_distribution(uids, hist, live_rows, live_items)
            if blend:
                p = (1.0 - blend) * p + blend * self._neighbour_distribution(hist)
        else:
            p = self._neighbour_distribution(hist)
        out[:] = p
        use_id = self.model is not None and self.model.config.use_user_id
        cold = empty & ~((uids > 0) & use_id)
        out[cold] = self._popularity
        np.maximum(out, _TINY, out=out)
        return out

    def _neighbour_distribution(self, hist: sp.csr_matrix) -> np.ndarray:
        assert self.neighbours is not None
        s = self.neighbours.score(hist, self._lo, self._lo + self.n_items).numpy()
        total = s.sum(1, keepdims=True)
        return np.where(total > 0, s / np.where(total > 0, total, 1.0), self._popularity)

    def _model_distribution(
        self,
        uids: np.ndarray,
        hist: sp.csr_matrix,
        live_rows: np.ndarray | None,
        live_items: np.ndarray | None,
    ) -> np.ndarray:
        assert self.model is not None and self._rows is not None
        rows = self._rows[uids].copy()  # (U, L)
        if live_rows is not None and len(live_rows):
            width = rows.shape[1]
            for r in np.unique(live_rows):  # only users with live events
                newest = live_items[live_rows == r][::-1]
                old = self._hist[uids[r]].indices if uids[r] > 0 else np.zeros(0, np.int64)
                both = np.concatenate([newest, rows[r][rows[r] > 0], old])
                _, first = np.unique(both, return_index=True)
                keep = both[np.sort(first)][:width]
                rows[r] = 0
                rows[r, : len(keep)] = keep
        with torch.no_grad():
            vecs = user_vectors(self.model, uids, rows, self._t)
            logits = score_items(self.model, vecs, self._t)
            return torch.softmax(logits.float(), dim=1).numpy()

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Each user's probability of each target item at ``positions`` (all if None).

        A user the scorer never saw, with live events, is scored from those events; with
        none, from the smoothed target popularity.
        """
        cols = positions_or_all(positions, self.n_items)
        live_rows, live_items = self._live(users, events)
        p = self.distribution(self.user_ids(users), live_rows, live_items)[:, cols]
        return {task: p for task in self.tasks}

    def user_vectors(self, users: Sequence[str]) -> torch.Tensor:
        """``(U, dim)`` target-domain user vectors of a trained model, from the users' known
        histories (e.g. the input of an EMCDR mapping between two domains' models).

        Raises:
            ValueError: the method trains no model (``neighbours``).
        """
        if self.model is None or self._rows is None:
            raise ValueError(f"method {self.settings['method']} has no user vectors")
        uids = self.user_ids(users)
        return user_vectors(self.model, uids, self._rows[uids], self._t)

    def target_cold(self, users: Sequence[str], events: pl.DataFrame | None = None) -> np.ndarray:
        """``(U,)`` bool: the user has no target-domain event (known or live), so their list
        comes from their source history alone (or popularity, without one)."""
        uids = self.user_ids(users)
        tgt = self._known.of([self._t])
        has = np.isin(uids, tgt.u) & (uids > 0)
        rows, items = self._live(users, events)
        has[rows[(items >= self._lo) & (items < self._lo + self.n_items)]] = True
        return ~has

    def because(self, user: str, position: int, k: int = 3) -> list[str]:
        """The user's own items (any domain the method reads) that point to the target item
        at ``position`` most: the strongest item-neighbour similarities, or for a model the
        history items whose embeddings are closest to the item's. Best first; empty for a
        user without history."""
        uid = int(self.user_ids([user])[0])
        if uid == 0:
            return []
        mine = self._hist[uid].indices
        if len(mine) == 0:
            return []
        item = self._lo + int(position)
        if self.neighbours is not None and self.neighbours.similarity is not None:
            weight = self.neighbours.similarity[mine, item].toarray().ravel()
        else:
            assert self.model is not None
            with torch.no_grad():
                vec = self.model.item_vectors(torch.as_tensor([item, *mine.tolist()]))
                vec = torch.nn.functional.normalize(vec, dim=1)
                weight = (vec[1:] @ vec[0]).numpy()
        order = np.argsort(-weight, kind="stable")[:k]
        return [self._item_name(int(mine[j])) for j in order if weight[j] > 0]

    def _item_name(self, item_id: int) -> str:
        ix = self.index
        k = int(np.searchsorted(np.asarray(ix.starts), item_id, side="left")) - 1
        return ix.items[k][item_id - ix.starts[k] - 1]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "method": self.settings["method"],
            "source": list(self.index.domains[:-1]),
            "domain": self.domain,
        }

    # ---- persistence

    def forget_users(self, users: Sequence[str]) -> dict[str, int]:
        """Their known (user, item) pairs dropped (history in every domain), their user
        embedding rows zeroed and their id in the index replaced by a placeholder that keeps
        the sorted index sorted (the previous id, a NUL and a counter: no one's id)."""
        from dataclasses import replace

        from shoprec.forget import TOMBSTONE

        ids = self.user_ids(users)
        ids = np.unique(ids[ids > 0])
        if ids.size == 0:
            return {"ids": 0, "pair_rows": 0, "embedding_rows": 0}
        names = list(self.index.users)
        for j in (ids - 1).tolist():  # ascending: each placeholder sorts after the one before
            names[j] = (names[j - 1] if j else "") + TOMBSTONE + str(j)
        keep = ~np.isin(self._known.u, ids)
        rows = 0
        if self.model is not None and hasattr(self.model, "user_embedding"):
            with torch.no_grad():
                self.model.user_embedding.weight[torch.from_numpy(ids)] = 0.0
            rows = int(ids.size)
        self.__init__(  # type: ignore[misc]
            self.tasks, self.target, replace(self.index, users=tuple(names)), self.settings,
            self._known.where(keep), self.model, self.neighbours,
        )  # fmt: skip
        return {"ids": int(ids.size), "pair_rows": int((~keep).sum()), "embedding_rows": rows}

    def save(self, directory: Path) -> None:
        """``cross_domain.json`` (settings, tasks), ``index.json`` (ids), ``known.parquet``
        (every known (user, item) id pair), ``model.safetensors`` and / or ``neighbours/``."""
        directory = Path(directory)
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "tasks": self.tasks,
            "target": self.target,
            "settings": self.settings,
        }
        (directory / "cross_domain.json").write_text(json.dumps(meta, indent=2) + "\n")
        self.index.save(directory / "index.json")
        k = self._known
        pl.DataFrame({"user": k.u, "item": k.i, "domain": k.d}).write_parquet(
            directory / "known.parquet"
        )
        if self.model is not None:
            state = {n: v.detach().contiguous() for n, v in self.model.state_dict().items()}
            save_file(state, str(directory / "model.safetensors"))
        if self.neighbours is not None:
            self.neighbours.save(directory / "neighbours")

    @classmethod
    def load(cls, directory: Path) -> CrossDomainScorer:
        directory = Path(directory)
        meta = json.loads((directory / "cross_domain.json").read_text())
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(f"{directory} does not hold a {_FORMAT} v{_VERSION} scorer")
        index = DomainIndex.load(directory / "index.json")
        frame = pl.read_parquet(directory / "known.parquet")
        known = Pairs(*(frame[c].to_numpy().astype(np.int64) for c in ("user", "item", "domain")))
        settings = meta["settings"]
        model = None
        if (directory / "model.safetensors").exists():
            features, tasks = index.specs(int(settings["dim"]))
            model = CrossDomainModel(
                features, tasks, config_from_dict(CrossDomainConfig, settings["network"])
            )
            model.load_state_dict(load_file(str(directory / "model.safetensors")))
            model.eval()
        nb = (
            ItemNeighbours.load(directory / "neighbours")
            if (directory / "neighbours").exists()
            else None
        )
        return cls(meta["tasks"], meta["target"], index, settings, known, model, nb)


# -------------------------------------------------------------------------------- recipe


class CrossDomainRecipe(Recipe):
    """A target domain's items ranked with help from a source domain (see module docstring)."""

    name = "cross_domain"
    Options = CrossDomainOptions
    default_tasks = ("buy",)

    scorer_class = CrossDomainScorer

    def fit(self, dataset: Dataset, split: Split) -> TrainingRun:
        """Encode both domains, hold out validation targets, train (or count), select.

        Raises:
            DataError: a named domain has no training events, or no validation target.
        """
        o: CrossDomainOptions = self.options
        if len(self.tasks) != 1:
            raise DataError(
                f"the cross_domain recipe ranks one task (the target domain's items); "
                f"tasks are {self.tasks}"
            )
        w = self.config.weighting
        if w.name != "fixed" or w.options:
            raise DataError("the cross_domain recipe weighs its domains with recipe.lambda; "
                            "leave the weighting section out")  # fmt: skip
        tick = time.perf_counter()
        domains = o.domains
        t = len(domains) - 1
        train_frame = _frame(split.train, domains)
        found = set(train_frame["domain"].unique().to_list())
        everything = sorted(set(split.train.df["domain"].cast(pl.String).unique().to_list()))
        for name in domains:
            if name not in found:
                raise DataError(
                    f"domain '{name}' has no training events; domains in the data: {everything}"
                )
        valid_frame = _frame(split.valid, domains)
        index = DomainIndex.fit(pl.concat([train_frame, valid_frame]), domains=domains)
        train = Pairs(*index.encode(train_frame))
        valid = _new_pairs(Pairs(*index.encode(valid_frame)), train, o.repeats)
        # Validation: the split's target events of users with training events (a user with
        # none is served popularity, whatever the model, so says nothing about it) ...
        held = valid.where(np.isin(valid.u, train.u))
        fit_pairs, drawn = train, False
        if not (held.d == t).any():  # ... or one random target item of each user with two+
            mask = _hold_one(train, t, 2, o.seed)
            fit_pairs, held, drawn = train.where(~mask), train.where(mask), True
        if not (held.d == t).any():
            raise DataError(
                f"no '{o.target}' validation event of a user with training events, and no user "
                f"with two or more '{o.target}' items to hold one out: nothing to validate on"
            )
        known = train + valid  # what the final scorer knows of each user
        hd = self._history_domains(t)
        info: dict[str, Any] = {
            "method": o.method,
            "domains": domains,
            "users": index.n_users,
            "items": dict(zip(domains, index.domain_sizes, strict=True)),
            "pairs": {"train": len(fit_pairs), "valid": len(held.of([t])), "known": len(known)},
            "valid_drawn_from_train": drawn,
        }
        target_valid = _Holdout.of(index, held, fit_pairs, t, o.repeats)
        settings = {
            "method": o.method,
            "domains": domains,
            "history_domains": list(hd),
            "max_history": o.max_history,
            "seed": o.seed,
            "blend": o.blend,
            "dim": o.dim,
        }
        history: list[dict[str, Any]] = []
        best_epoch = None
        model = self._build(index) if o.method != "neighbours" else None
        nb = None
        if o.method == "neighbours" or o.blend is not None:
            nb = self._neighbours(index, fit_pairs.of(hd))
        # Validation scores of what is served (model, neighbours or their blend; popularity
        # for users without history), from the events the model is selected with.
        probe = CrossDomainScorer(self.tasks, self.target, index, settings, fit_pairs, model, nb)

        def served(_: Any = None) -> dict[str, float]:
            return target_valid.scores(lambda u: torch.from_numpy(probe.distribution(u)))

        if model is not None:
            result = self._train(model, index, fit_pairs, hd, served, info)
            history, best_epoch = result.history, result.best_epoch
            settings["network"] = json.loads(json.dumps(asdict(model.config)))  # lists
        scores = served()
        if nb is not None:  # the final neighbours count every known event
            nb = self._neighbours(index, known.of(hd))
        scorer = CrossDomainScorer(self.tasks, self.target, index, settings, known, model, nb)
        info["fit_s"] = round(time.perf_counter() - tick, 2)
        task = self.target
        valid_scores = {
            f"{task}/ndcg@{_K}": scores["ndcg"],
            f"{task}/hr@{_K}": scores["hr"],
            "users": float(len(target_valid)),
        }
        log.info("cross_domain %s: validation %s", o.method, valid_scores)
        return TrainingRun(
            scorer=scorer,
            valid=valid_scores,
            monitor=f"{task}/ndcg@{_K}",
            history=history,
            best_epoch=best_epoch,
            info=info,
        )

    # ---- steps

    def _history_domains(self, t: int) -> tuple[int, ...]:
        o: CrossDomainOptions = self.options
        if o.method == "target_only" or not o.source_history:
            return (t,)
        return tuple(range(t + 1))

    def _neighbours(self, index: DomainIndex, pairs: Pairs) -> ItemNeighbours:
        sizes = index.domain_sizes
        item_domain = np.repeat([0, *range(len(sizes))], [1, *sizes])  # id 0, then domains
        nb = ItemNeighbours(self.options.neighbours.config())
        return nb.fit(pairs.u, pairs.i, index.n_items + 1, item_domain)

    def _build(self, index: DomainIndex) -> CrossDomainModel:
        """A fresh model of a trained method (seeded by ``train.seed``)."""
        o: CrossDomainOptions = self.options
        features, tasks = index.specs(o.dim)
        torch.manual_seed(self.config.train.train_config().seed)
        model = CrossDomainModel(features, tasks, o.network(index.domain_sizes))
        if o.shared_items:
            tie_items(model, index.shared_item_rows())
        return model

    def _train(
        self,
        model: CrossDomainModel,
        index: DomainIndex,
        train: Pairs,
        hd: tuple[int, ...],
        served: Callable[[Any], dict[str, float]],
        info: dict[str, Any],
    ) -> Any:
        """Fit a trained method's model; epochs are selected by ``served`` (the target's
        validation scores of the scorer that will be served)."""
        o: CrossDomainOptions = self.options
        t = len(index.domains) - 1
        sources = tuple(range(t))
        cfg = self.config.train.train_config(monitor="ndcg")

        def hist_of(pairs: Pairs, domains: tuple[int, ...]) -> np.ndarray:
            p = pairs.of(domains)
            return history_matrix(p.u, p.i, index.n_users, o.max_history, seed=o.seed)

        def rows_of(pairs: Pairs, domains: tuple[int, ...], hist: np.ndarray) -> Any:
            p = pairs.of(domains)
            return user_rows(p.u, p.i, p.d, hist, max_pos=o.max_positives)

        if o.method == "finetune":
            # Pretrain on the source rows; a source hold-out (kept out of them) stops it.
            src_held = np.zeros(len(train), dtype=bool)
            for k in sources:
                src_held |= _hold_one(train, k, 2, o.seed + 2 + k)
            pre = train.where(~src_held)
            src_hist = hist_of(pre, sources)
            outs = [(k, _Holdout.of(index, train.where(src_held), pre, k, o.repeats))
                    for k in sources]  # fmt: skip

            def on_source(_: Any) -> dict[str, float]:
                got = [
                    h.scores(
                        lambda u, k=k: score_items(model, user_vectors(model, u, src_hist[u], k), k)
                    )
                    for k, h in outs
                    if len(h)
                ]
                return {m: float(np.mean([g[m] for g in got])) for m in ("ndcg", "hr")}

            r = fit(model, rows_of(pre, sources, src_hist), config=cfg, evaluator=on_source)
            info["pretrain_best_epoch"] = r.best_epoch
            if o.freeze:
                freeze(model, parts=o.freeze)
                info["frozen"] = list(o.freeze)
        hist = hist_of(train, hd)
        row_domains = (t,) if o.method in ("target_only", "finetune") else hd
        weighting = None
        if o.method in ("joint", "experts"):
            names = index.domains
            weighting = FixedWeights({**{names[k]: 1.0 for k in sources}, names[t]: o.lambda_})
        result = fit(model, rows_of(train, row_domains, hist), config=cfg, evaluator=served,
                     weighting=weighting)  # fmt: skip
        model.eval()
        info.update(best_epoch=result.best_epoch, train_s=round(result.train_seconds, 2))
        return result
