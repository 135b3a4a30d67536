"""Users encoded from what they did: a history encoder over one domain, or over several.

:class:`~shoprec.models.history_encoder.HistoryEncoder` (no user-id table; a pooled, an
attention or a SASRec-style encoder over the user's recent items; sampled softmax over the
catalog with log-Q correction) behind the recipe interface. The scorer encodes a user from
their known history plus any live events, so a shopper the model never saw is served from
what they just did, and a shopper with no event in the target domain from their other
domains.

Methods (explicit steps over the one :func:`~shoprec.train.loop.fit` loop):

* ``target_only``: rows and histories of the target domain (the neural base);
* ``joint``: one encoder over the histories of every domain, rows of every domain,
  ``J = J_S + lambda J_T`` (``lambda``; a config ``search:`` over ``recipe.lambda`` picks it on
  validation);
* ``finetune``: pretrain on the source rows (stopped on a source hold-out), freeze the listed
  parts (``freeze``), then fit on the target rows, histories of every domain.

``blend`` lists shares of item-neighbour scores (:class:`~shoprec.transfer.neighbours.
ItemNeighbours` over the same histories) mixed into the model's distribution; each is scored
on validation after training and the best is kept (0 = the model alone).

Rows: without timestamps (or with several domains), one row per training pair, the history
being a seeded random subset of the user's other items; with ``rows: bags``, one row per
(user, domain) whose positives are all the user's items of that domain (``targets``) and
whose history is the user's items of every domain read, the same bag included: with
``model: {loss: full, history_dropout: 0.5}`` the multinomial denoising autoencoder of Liang
et al. (WWW 2018), the encoder paid to predict the items it was not shown; with timestamps
and one domain (``sequential``), one row per user, the last ``max_history + 1`` items in
time order, the next item predicted at every position (SASRec). Validation: the split's
target events of users with training events, else one item per user with two or more (the
newest when sequential, else a random one) held out of training. Example::

    name: sport_history
    data: {dataset: amazon_cross_domain}
    split: {kind: given, valid_hold_out: false}
    recipe:
      name: sequence
      target: sport
      sources: [cloth]              # [] = the target alone
      method: joint                 # target_only | joint | finetune
      lambda: 1.0
      blend: [0.0, 0.5]
      model: {encoder: attention, n_negatives: 1024}   # HistoryEncoderConfig fields
    train: {epochs: 10, batch_size: 512, lr: 0.002, patience: 2}

Scores: each user's distribution over the target items (softmax of the logits, optionally
blended), so they are probabilities comparable across users; a user with no usable history
gets the smoothed target popularity.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from pydantic import ConfigDict, Field, field_validator, model_validator
from safetensors.torch import load_file, save_file

from shoprec.data.batches import TensorData
from shoprec.errors import DataError
from shoprec.models import config_from_dict
from shoprec.models.features import CategoricalFeature, SequenceFeature, Task
from shoprec.models.history_encoder import HistoryEncoder, HistoryEncoderConfig
from shoprec.recipes.base import Recipe, RecipeOptions, Scorer, TrainingRun, positions_or_all
from shoprec.recipes.cross_domain import NeighbourOptions, Pairs, _Holdout, _new_pairs
from shoprec.train.loop import fit
from shoprec.train.weighting import FixedWeights
from shoprec.transfer.cross_domain import DomainIndex, freeze
from shoprec.transfer.neighbours import ItemNeighbours

if TYPE_CHECKING:
    from shoprec.data.schema import Dataset, Interactions
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

__all__ = ["SequenceOptions", "SequenceRecipe", "SequenceScorer"]

_FORMAT = "shoprec.sequence"
_VERSION = 1
_TINY = 1e-38
_K = 10
ALL = "all"  # the one domain of data without a domain column


class SequenceOptions(RecipeOptions):
    """The ``recipe:`` keys of ``sequence`` (besides ``name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    target: str | None = None  # the domain ranked; None: every event, one domain
    sources: tuple[str, ...] = ()  # other domains whose history also encodes the user
    method: Literal["target_only", "joint", "finetune"] = "target_only"
    lambda_: float = Field(1.0, alias="lambda", gt=0)  # joint: J = J_S + lambda J_T
    freeze: tuple[str, ...] = ()  # finetune: HistoryEncoder.parts() frozen after pretraining
    sequential: bool | None = None  # SASRec rows; None: when the events have timestamps
    dim: int = Field(64, gt=0)  # embedding width
    max_history: int = Field(50, gt=0)  # history items per user (newest, or a random subset)
    rows: Literal["pairs", "bags"] = "pairs"  # a row per pair, or per (user, domain) bag
    init: Literal["random", "svd"] = "random"  # item tables; svd: co-occurrence factors
    svd_power: float = Field(0.0, ge=0.0, le=1.0)  # svd: item factors V diag(s)^power
    model: dict[str, Any] = Field(default_factory=dict)  # HistoryEncoderConfig fields
    blend: tuple[float, ...] = (0.0,)  # neighbour shares tried on validation
    neighbours: NeighbourOptions = Field(default_factory=NeighbourOptions)
    repeats: bool = False  # validation counts items the user already has
    seed: int = 0  # hold-outs and history subsets

    @field_validator("sources", "freeze", mode="before")
    @classmethod
    def _tuple(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else tuple(value)

    @field_validator("blend", mode="before")
    @classmethod
    def _blend(cls, value: Any) -> Any:
        values = (value,) if isinstance(value, int | float) else tuple(value)
        if not values or any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError(f"blend shares must lie in [0, 1], got {list(values)}")
        return values

    @field_validator("model")
    @classmethod
    def _model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "domain_sizes" in value or "max_len" in value:
            raise ValueError("'model.domain_sizes' / 'model.max_len' come from the data and "
                             "max_history; leave them out")  # fmt: skip
        config_from_dict(HistoryEncoderConfig, value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SequenceOptions:
        if self.target is None and self.sources:
            raise ValueError("'sources' needs a 'target' domain")
        if self.target is not None and self.target in self.sources:
            raise ValueError(f"source {list(self.sources)} and target '{self.target}' overlap")
        if self.method != "target_only" and not self.sources:
            raise ValueError(f"method {self.method} needs 'sources'")
        if self.freeze and self.method != "finetune":
            raise ValueError("'freeze' goes with method: finetune")
        if self.rows == "bags" and (self.sequential or self.model.get("encoder") == "sasrec"):
            raise ValueError("rows: bags take a set encoder (mean or attention), not sequential")
        return self

    @property
    def domains(self) -> list[str]:
        """Sources, then the target (the last domain index)."""
        return [*self.sources, self.target or ALL]


# ------------------------------------------------------------------------------ rows


def _frame(inter: Interactions | None, domains: Sequence[str], by_domain: bool) -> pl.DataFrame:
    """``user, item, domain, ts`` of the named domains (first event of each pair), oldest
    first within a user (ts in ms; null without time)."""
    schema = {"user": pl.String, "item": pl.String, "domain": pl.String, "ts": pl.Int64}
    if inter is None or inter.df.height == 0:
        return pl.DataFrame(schema=schema)
    df = inter.df
    if by_domain and "domain" not in df.columns:
        raise DataError("recipe 'sequence' with a target domain needs a 'domain' column")
    dom = pl.col("domain").cast(pl.String) if by_domain else pl.lit(ALL)
    out = df.select(
        pl.col("user").cast(pl.String),
        pl.col("item").cast(pl.String),
        dom.alias("domain"),
        pl.col("timestamp").cast(pl.Int64).alias("ts"),
    ).filter(pl.col("domain").is_in(list(domains)))
    return out.with_row_index("_r").sort("ts", "_r", nulls_last=True).unique(
        ["user", "item", "domain"], keep="first", maintain_order=True).drop("_r")  # fmt: skip


def history_rows(pairs: Pairs, order: np.ndarray, n_users: int, width: int) -> np.ndarray:
    """``(n_users + 1, width)``: each user's newest ``width`` items by ``order`` (oldest
    first, left-padded with 0). With a random ``order``: a random subset."""
    out = np.zeros((n_users + 1, width), dtype=np.int64)
    if len(pairs) == 0:
        return out
    idx = np.lexsort((-order, pairs.u))  # by user, newest first
    u, i = pairs.u[idx], pairs.i[idx]
    start = np.searchsorted(u, u, side="left")
    rank = np.arange(len(u)) - start  # 0 = newest
    keep = rank < width
    out[u[keep], width - 1 - rank[keep]] = i[keep]
    return out


def pair_rows(pairs: Pairs, hist: np.ndarray) -> TensorData:
    """One row per pair: the user's history without the pair's item, the item, its domain."""
    h = hist[pairs.u]
    h = np.where(h == pairs.i[:, None], 0, h)
    return TensorData({
        "history": torch.as_tensor(h), "item": torch.as_tensor(pairs.i),
        "domain": torch.as_tensor(pairs.d),
    })  # fmt: skip


def bag_rows(pairs: Pairs, order: np.ndarray, hist: np.ndarray, n_users: int,
             width: int) -> TensorData:  # fmt: skip
    """One row per (user, domain) with events: ``history`` the user's history rows ``hist``
    (every domain read), ``targets`` up to ``width`` of the user's items of the domain (the
    newest by ``order``), ``item`` one of them, ``domain`` its index."""
    hs, ts, ds = [], [], []
    for d in np.unique(pairs.d):
        mask = pairs.d == d
        t = history_rows(pairs.where(mask), order[mask], n_users, width)
        users = np.flatnonzero(t[:, -1] > 0)  # left-padded: the last column is filled
        hs.append(hist[users])
        ts.append(t[users])
        ds.append(np.full(len(users), d, dtype=np.int64))
    if not hs:
        hs, ts, ds = [hist[:0]], [np.zeros((0, width), np.int64)], [np.zeros(0, np.int64)]
    targets = np.concatenate(ts)
    return TensorData({
        "history": torch.as_tensor(np.concatenate(hs)), "targets": torch.as_tensor(targets),
        "item": torch.as_tensor(targets[:, -1].copy()),
        "domain": torch.as_tensor(np.concatenate(ds)),
    })  # fmt: skip


def sequence_rows(pairs: Pairs, order: np.ndarray, n_users: int, width: int) -> TensorData:
    """One row per user (SASRec): the last ``width + 1`` items in time order; ``history`` the
    first ``width``, ``item`` the next item at each position (0 = none)."""
    seq = history_rows(pairs, order, n_users, width + 1)[1:]
    seq = seq[(seq > 0).sum(1) >= 2]
    hist, nxt = seq[:, :-1], seq[:, 1:]
    nxt = np.where(hist > 0, nxt, 0)
    return TensorData({
        "history": torch.as_tensor(hist), "item": torch.as_tensor(nxt),
        "domain": torch.full((len(seq),), int(pairs.d[0]) if len(pairs) else 0),
    })  # fmt: skip


# ---------------------------------------------------------------------------- scorer


class SequenceScorer(Scorer):
    """Target-domain item scores from a user's history (known + live) in the domains read.

    Attributes:
        index: user and per-domain item ids (the target is the last domain).
        settings: method, domains, blend, sequential, ``max_history``, ``dim``, network.
        model: the trained :class:`HistoryEncoder`, in eval mode.
        neighbours: item neighbours when the chosen blend is above 0.
    """

    recipe = "sequence"

    def __init__(
        self,
        tasks: Sequence[str],
        target: str,
        index: DomainIndex,
        settings: dict[str, Any],
        known: Pairs,
        order: np.ndarray,
        model: HistoryEncoder,
        neighbours: ItemNeighbours | None = None,
    ) -> None:
        t = len(index.domains) - 1
        super().__init__(tasks, target, index.items[t])
        self.index = index
        self.domain = index.domains[t] if settings.get("by_domain") else None
        self.settings = dict(settings)
        self.model = model.eval()
        self.neighbours = neighbours
        self._t = t
        self._lo = index.starts[t] + 1
        self._known, self._order = known, np.asarray(order, dtype=np.int64)
        self._users = np.asarray(index.users, dtype=str)
        self._rows = history_rows(known, self._order, index.n_users, int(settings["max_history"]))
        self._hist = ItemNeighbours.histories(known.u, known.i, index.n_users + 1,
                                              index.n_items + 1)  # fmt: skip
        tgt = known.of([t])
        counts = np.bincount(tgt.i - self._lo, minlength=self.n_items).astype(np.float64)
        self._popularity = ((counts + 1.0) / (counts.sum() + self.n_items)).astype(np.float32)
        self._item_ids: pl.DataFrame | None = None

    def user_ids(self, users: Sequence[str]) -> np.ndarray:
        """``(U,)`` user ids of the index (0 for a user it never saw)."""
        q = np.asarray([str(x) for x in users], dtype=str)
        if len(self._users) == 0 or len(q) == 0:
            return np.zeros(len(q), dtype=np.int64)
        pos = np.searchsorted(self._users, q).clip(0, len(self._users) - 1)
        return np.where(self._users[pos] == q, pos + 1, 0).astype(np.int64)

    def _live(self, users: Sequence[str], events: pl.DataFrame | None) -> tuple[np.ndarray, ...]:
        """Live events of ``users`` as (request row, item id), oldest first. Events may carry
        a ``domain`` column; without it an item id is looked up in the target first."""
        none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        if events is None or events.height == 0:
            return none
        if self._item_ids is None:
            ix = self.index
            self._item_ids = pl.concat(
                pl.DataFrame({
                    "item": list(ix.items[k]), "domain": [ix.domains[k]] * ix.domain_sizes[k],
                    "_id": np.arange(ix.domain_sizes[k], dtype=np.int64) + ix.starts[k] + 1,
                    "_pref": 0 if k == self._t else 1 + k,
                })
                for k in range(len(ix.domains))
            )  # fmt: skip
        by_dom = "domain" in events.columns and self.settings.get("by_domain")
        ev = events.select(
            pl.col("user").cast(pl.String), pl.col("item").cast(pl.String),
            *([pl.col("domain").cast(pl.String)] if by_dom else []),
        ).with_row_index("_order")  # fmt: skip
        rows = pl.DataFrame({"user": [str(x) for x in users]}).with_row_index("_row")
        hit = (
            ev.join(rows, on="user", how="inner")
            .join(self._item_ids, on=["item", "domain"] if by_dom else ["item"], how="inner")
            .sort("_order", "_pref")
            .unique("_order", keep="first", maintain_order=True)
            .sort("_order")
        )
        if hit.height == 0:
            return none
        return hit["_row"].to_numpy().astype(np.int64), hit["_id"].to_numpy().astype(np.int64)

    def history(
        self, uids: np.ndarray, live_rows: np.ndarray | None = None,
        live_items: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``(U, max_history)`` history rows: known items, then live ones (newest last)."""
        rows = self._rows[uids].copy()
        if live_rows is None or len(live_rows) == 0:
            return rows
        width = rows.shape[1]
        for r in np.unique(live_rows):  # only the users with live events
            new = live_items[live_rows == r]
            old = rows[r][rows[r] > 0]
            both = np.concatenate([old[~np.isin(old, new)], new])[-width:]
            rows[r] = 0
            rows[r, width - len(both) :] = both
        return rows

    def distribution(
        self, uids: np.ndarray, live_rows: np.ndarray | None = None,
        live_items: np.ndarray | None = None, blend: float | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``(U, n_items)`` float32: each user's distribution over the target items."""
        uids = np.asarray(uids, dtype=np.int64)
        rows = self.history(uids, live_rows, live_items)
        with torch.no_grad():
            out = []
            for lo in range(0, len(uids), 2048):
                batch = {"history": torch.as_tensor(rows[lo : lo + 2048])}
                logits = self.model.score_domain(self.model.user_vectors(batch, self._t), self._t)
                out.append(torch.softmax(logits.float(), dim=1).numpy())
            p = np.concatenate(out) if out else np.zeros((0, self.n_items), np.float32)
        b = float(self.settings.get("blend", 0.0) if blend is None else blend)
        if b > 0 and self.neighbours is not None:
            hist = self._hist[uids]
            if live_rows is not None and len(live_rows):
                hist = hist + ItemNeighbours.histories(live_rows, live_items, len(uids),
                                                       hist.shape[1])  # fmt: skip
                hist.data[:] = 1.0
            p = (1.0 - b) * p + b * self._neighbour_distribution(hist)
        empty = (rows > 0).sum(1) == 0
        p[empty] = self._popularity
        np.maximum(p, _TINY, out=p)
        return p.astype(np.float32, copy=False)

    def _neighbour_distribution(self, hist: sp.csr_matrix) -> np.ndarray:
        assert self.neighbours is not None
        s = self.neighbours.score(hist, self._lo, self._lo + self.n_items).numpy()
        total = s.sum(1, keepdims=True)
        return np.where(total > 0, s / np.where(total > 0, total, 1.0), self._popularity)

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Each user's probability of each target item at ``positions`` (all if None); a user
        unknown to the scorer is encoded from their live events, or gets popularity."""
        cols = positions_or_all(positions, self.n_items)
        rows, items = self._live(users, events)
        p = self.distribution(self.user_ids(users), rows, items)[:, cols]
        return {task: p for task in self.tasks}

    def describe(self) -> dict[str, Any]:
        extra = {"method": self.settings["method"], "domains": list(self.index.domains),
                 "encoder": self.model.config.encoder}  # fmt: skip
        return {**super().describe(), **extra}

    # ---- persistence

    def save(self, directory: Path) -> None:
        """``sequence.json`` (settings, tasks), ``index.json`` (ids), ``known.parquet`` (id
        pairs and their order), ``model.safetensors`` and, with a blend, ``neighbours/``."""
        directory = Path(directory)
        meta = {"format": _FORMAT, "version": _VERSION, "tasks": self.tasks,
                "target": self.target, "settings": self.settings}  # fmt: skip
        (directory / "sequence.json").write_text(json.dumps(meta, indent=2) + "\n")
        self.index.save(directory / "index.json")
        k = self._known
        pl.DataFrame({"user": k.u, "item": k.i, "domain": k.d, "order": self._order}).write_parquet(
            directory / "known.parquet"
        )
        state = {n: v.detach().contiguous() for n, v in self.model.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        if self.neighbours is not None:
            self.neighbours.save(directory / "neighbours")

    @classmethod
    def load(cls, directory: Path) -> SequenceScorer:
        directory = Path(directory)
        meta = json.loads((directory / "sequence.json").read_text())
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(f"{directory} does not hold a {_FORMAT} v{_VERSION} scorer")
        index = DomainIndex.load(directory / "index.json")
        f = pl.read_parquet(directory / "known.parquet")
        known = Pairs(*(f[c].to_numpy().astype(np.int64) for c in ("user", "item", "domain")))
        settings = meta["settings"]
        model = _network(index, int(settings["dim"]), settings["network"])
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        nb_dir = directory / "neighbours"
        nb = ItemNeighbours.load(nb_dir) if nb_dir.exists() else None
        return cls(meta["tasks"], meta["target"], index, settings, known,
                   f["order"].to_numpy(), model, nb)  # fmt: skip


def svd_init(
    model: HistoryEncoder, pairs: Pairs, n_users: int, n_items: int, power: float = 0.0
) -> None:
    """Item tables from the top singular vectors of the binary user x item matrix ``X``
    (``V diag(s)^power``, rows scaled to mean norm 1; power 0: PureSVD's ``x V V^T``,
    Cremonesi et al., RecSys 2010), and the encoder's residual MLP silenced (its last layer
    zero), so that before training a user ranks items by ``<mean of their items' factors,
    item factor>``, a low-rank item-item model; training starts from there."""
    from scipy.sparse.linalg import svds

    dim = model.item_embedding.weight.shape[1]
    x = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs.u, pairs.i)),
                      shape=(n_users, n_items))  # fmt: skip
    x.data[:] = 1.0
    k = min(dim, min(x.shape) - 1)
    if k < 1 or x.nnz == 0:
        return
    _, s, vt = svds(x, k=k, random_state=0)
    emb = np.zeros((n_items, dim), dtype=np.float32)
    emb[:, :k] = vt.T * s**power
    norm = np.linalg.norm(emb, axis=1)
    emb /= max(float(norm[norm > 0].mean()) if (norm > 0).any() else 1.0, 1e-12)
    emb[0] = 0.0
    with torch.no_grad():
        for table in model.parts()["item_embeddings"]:
            table.weight.copy_(torch.from_numpy(emb))
        mlp = getattr(model, "pool_mlp", None)
        if mlp is not None:
            mlp[-1].weight.zero_()
            mlp[-1].bias.zero_()


def _network(index: DomainIndex, dim: int, fields: dict[str, Any]) -> HistoryEncoder:
    """A :class:`HistoryEncoder` over the index's domains (one task per domain)."""
    vocab = index.n_items + 1
    features = [CategoricalFeature("item", vocab, dim),
                SequenceFeature("history", vocab, dim, "mean", embedding_of="item")]  # fmt: skip
    config = config_from_dict(HistoryEncoderConfig,
                              {**fields, "domain_sizes": list(index.domain_sizes)})  # fmt: skip
    return HistoryEncoder(features, [Task(d) for d in index.domains], config)


# ---------------------------------------------------------------------------- recipe


class SequenceRecipe(Recipe):
    """Rank a domain's items from the user's histories (see the module docstring)."""

    name = "sequence"
    Options = SequenceOptions
    default_tasks = ("buy",)
    scorer_class = SequenceScorer

    def fit(self, dataset: Dataset, split: Split) -> TrainingRun:
        """Encode the domains, hold out validation, train (pretrain / joint), pick the blend.

        Raises:
            DataError: a named domain has no training events, or nothing to validate on.
        """
        o: SequenceOptions = self.options
        if len(self.tasks) != 1:
            raise DataError(f"recipe 'sequence' ranks one task; tasks are {self.tasks}")
        w = self.config.weighting
        if w.name != "fixed" or w.options:
            raise DataError("recipe 'sequence' weighs its domains with recipe.lambda; leave "
                            "the weighting section out")  # fmt: skip
        tick = time.perf_counter()
        by_domain = o.target is not None
        domains = o.domains
        t = len(domains) - 1
        tr = _frame(split.train, domains, by_domain)
        for name in domains:
            if tr.filter(pl.col("domain") == name).height == 0:
                raise DataError(f"recipe 'sequence': domain '{name}' has no training events")
        va = _frame(split.valid, domains, by_domain)
        sequential = (o.sequential if o.sequential is not None
                      else split.train.has_time and len(domains) == 1)  # fmt: skip
        if sequential and len(domains) > 1:
            raise DataError("recipe 'sequence': sequential rows take one domain (no sources)")
        index = DomainIndex.fit(pl.concat([tr, va]), domains=domains)
        train = Pairs(*index.encode(tr))
        rng = np.random.default_rng(o.seed)
        # order of each pair within its user: time (then file order), or random (set data)
        train_order = (np.arange(len(train)) if sequential
                       else rng.permutation(len(train)))  # fmt: skip
        valid = _new_pairs(Pairs(*index.encode(va)), train, o.repeats)
        held = valid.where(np.isin(valid.u, train.u)).of([t])
        fit_mask = np.ones(len(train), dtype=bool)
        drawn = False
        if len(held) == 0:  # one target item of each user with two or more
            tgt = np.flatnonzero(train.d == t)
            key = -train_order[tgt] if sequential else rng.permutation(len(tgt))
            idx = tgt[np.lexsort((key, train.u[tgt]))]  # by user; newest / random first
            _, first, count = np.unique(train.u[idx], return_index=True, return_counts=True)
            fit_mask[idx[first[count >= 2]]] = False
            held, drawn = train.where(~fit_mask), True
        if len(held) == 0:
            raise DataError(
                f"recipe 'sequence': no '{domains[t]}' validation event of a user "
                "with training events, and no user with two items to hold one out"
            )
        fit_pairs, fit_order = train.where(fit_mask), train_order[fit_mask]
        target_valid = _Holdout.of(index, held, fit_pairs, t, o.repeats)
        torch.manual_seed(self.config.train.train_config().seed)
        model = _network(index, o.dim, {**o.model, "max_len": o.max_history})
        counts = np.bincount(fit_pairs.i, minlength=index.n_items + 1)
        model.set_item_frequency(counts)
        if o.init == "svd":
            svd_init(model, fit_pairs, index.n_users + 1, index.n_items + 1, o.svd_power)
        settings: dict[str, Any] = {
            "method": o.method, "domains": domains, "by_domain": by_domain,
            "sequential": bool(sequential), "max_history": o.max_history, "dim": o.dim,
            "blend": 0.0, "seed": o.seed,
        }  # fmt: skip
        probe = SequenceScorer(self.tasks, self.target, index, settings, fit_pairs, fit_order,
                               model)  # fmt: skip

        def served(_: Any = None, blend: float = 0.0) -> dict[str, float]:
            probe.model = model.eval()
            return target_valid.scores(
                lambda u: torch.from_numpy(probe.distribution(u, blend=blend))
            )

        info: dict[str, Any] = {
            "method": o.method, "domains": domains, "sequential": bool(sequential),
            "users": index.n_users, "items": dict(zip(domains, index.domain_sizes, strict=True)),
            "pairs": {"train": len(fit_pairs), "valid": len(held)},
            "valid_drawn_from_train": drawn,
        }  # fmt: skip
        start: tuple[float, dict[str, torch.Tensor]] | None = None
        if o.init == "svd":  # the initial tables are a model too: epoch 0 on validation
            start = (served()["ndcg"], {k: v.clone() for k, v in model.state_dict().items()})
            info["init_valid"] = round(start[0], 5)
        result = self._train(model, index, fit_pairs, fit_order, sequential, served, info)
        if start is not None and start[0] > result.best_score:
            model.load_state_dict(start[1])  # training never beat its starting point
            result.best_epoch, result.best_score = 0, start[0]
            info["kept_init"] = True
        settings["network"] = json.loads(json.dumps(asdict(model.config)))
        # The blend with item neighbours, chosen on validation (0 = the model alone).
        nb = None
        tried = {}
        for b in o.blend:
            if b > 0 and nb is None:
                nb = self._neighbours(index, fit_pairs)
                probe.neighbours = nb
            tried[b] = served(blend=b)
        best = max(tried, key=lambda b: tried[b]["ndcg"])
        settings["blend"] = float(best)
        info["blend_tried"] = {str(b): round(v["ndcg"], 5) for b, v in tried.items()}
        known = train + valid
        known_order = np.concatenate([train_order, len(train) + np.arange(len(valid))])
        nb = self._neighbours(index, known) if best > 0 else None  # every known event
        scorer = SequenceScorer(self.tasks, self.target, index, settings, known, known_order,
                                model, nb)  # fmt: skip
        info["fit_s"] = round(time.perf_counter() - tick, 2)
        scores = tried[best]
        task = self.target
        valid_scores = {f"{task}/ndcg@{_K}": scores["ndcg"], f"{task}/hr@{_K}": scores["hr"],
                        "users": float(len(target_valid))}  # fmt: skip
        log.info("sequence %s: validation %s (blend %s)", o.method, valid_scores, best)
        return TrainingRun(
            scorer=scorer, valid=valid_scores, monitor=f"{task}/ndcg@{_K}",
            history=result.history, best_epoch=result.best_epoch, info=info,
        )  # fmt: skip

    # ---- steps

    def _neighbours(self, index: DomainIndex, pairs: Pairs) -> ItemNeighbours:
        sizes = index.domain_sizes
        item_domain = np.repeat([0, *range(len(sizes))], [1, *sizes])
        nb = ItemNeighbours(self.options.neighbours.config())
        return nb.fit(pairs.u, pairs.i, index.n_items + 1, item_domain)

    def _train(
        self,
        model: HistoryEncoder,
        index: DomainIndex,
        train: Pairs,
        order: np.ndarray,
        sequential: bool,
        served: Callable[..., dict[str, float]],
        info: dict[str, Any],
    ) -> Any:
        """The method's steps over the one loop; epochs selected on the target's validation."""
        o: SequenceOptions = self.options
        t = len(index.domains) - 1
        sources = tuple(range(t))
        cfg = self.config.train.train_config(monitor="ndcg")
        width = o.max_history
        hist = history_rows(train, order, index.n_users, width)
        if sequential:
            return fit(model, sequence_rows(train, order, index.n_users, width), config=cfg,
                       evaluator=served)  # fmt: skip
        if o.rows == "bags":
            shuffle = np.random.default_rng(o.seed + 2)  # which items fill a bag over width

            def rows(p: Pairs) -> TensorData:
                return bag_rows(p, shuffle.permutation(len(p)), hist, index.n_users, width)

        else:

            def rows(p: Pairs) -> TensorData:
                return pair_rows(p, hist)

        if o.method == "finetune":
            # 1. pretrain on the source rows; a source hold-out stops it
            src = train.of(sources)
            pick = np.random.default_rng(o.seed + 1).permutation(len(src))
            _, first, count = np.unique(src.u[pick], return_index=True, return_counts=True)
            out = np.zeros(len(src), dtype=bool)
            out[pick[first[count >= 2]]] = True
            src_valid = [(k, _Holdout.of(index, src.where(out), src.where(~out), k, o.repeats))
                         for k in sources]  # fmt: skip

            def on_source(_: Any) -> dict[str, float]:
                got = []
                for k, h in src_valid:
                    if len(h):

                        def score(u: np.ndarray, k: int = k) -> torch.Tensor:
                            with torch.no_grad():
                                b = {"history": torch.as_tensor(hist[u])}
                                return model.score_domain(model.user_vectors(b, k), k)

                        got.append(h.scores(score))
                return {m: float(np.mean([g[m] for g in got])) for m in ("ndcg", "hr")}

            pre = fit(model, rows(src.where(~out)), config=cfg, evaluator=on_source)
            info["pretrain_best_epoch"] = pre.best_epoch
            # 2. freeze what should stay
            if o.freeze:
                freeze(model, parts=o.freeze)
                info["frozen"] = list(o.freeze)
            # 3. fine-tune on the target rows
            return fit(model, rows(train.of([t])), config=cfg, evaluator=served)
        if o.method == "joint":
            names = index.domains
            weighting = FixedWeights({**{names[k]: 1.0 for k in sources}, names[t]: o.lambda_})
            return fit(model, rows(train), config=cfg, evaluator=served,
                       weighting=weighting)  # fmt: skip
        return fit(model, rows(train.of([t])), config=cfg, evaluator=served)
