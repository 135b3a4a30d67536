"""Multi-behavior ranking: a multi-task model over view / cart / buy, ranking every item.

For logs where what a user viewed and carted says much about what they will buy, and where
there may be no time at all (e.g. the Tmall view/cart/buy release). The recipe, step by step:

1. :meth:`BehaviorLog.from_interactions` — per behavior, the set of (user, item) pairs, over
   dense user and item indices (one :class:`~shoprec.data.encode.IdMap` each).
2. :func:`hold_out_one` — per user, one target-behavior item moved out of the log: the
   validation targets (the test targets come from the dataset's own test file).
3. :func:`training_data` — one row per (user, item) the user touched in any behavior, plus
   uniformly drawn negatives, with a 0/1 label per behavior. Every feature of a row comes from
   the *rest* of the log, so no label leaks into its own features:

   * ``in_<b>`` — did this user view / cart *this* item (the auxiliary behaviors only: the
     target behavior is the label); ``flags_known`` — 1 unless those flags are hidden;
   * ``item_<b>`` — how many *other* users did ``b`` on the item (leave-user-out counts, so
     a rare item's only buyer does not see its own purchase), ``item_rate_<b>`` — the
     smoothed target-per-``b`` rate of the item among other users, ``user_<b>`` — how many
     items the user did ``b`` on;
   * optionally (config) ``user`` and ``item`` id embeddings and ``hist_<b>`` — the user's
     items of behavior ``b`` (a seeded subset of at most ``max_history``) sharing the item
     embedding table, with the candidate itself masked out.

   On a share ``hide_fraction`` of the rows the ``in_<b>`` flags are hidden
   (``flags_known = 0``): only there do the auxiliary tasks (view, cart) learn, through the
   ``aux_weight`` mask, so that they predict the user's behaviors from the rest of the log
   instead of copying an input flag. The target task learns on every row.
4. :func:`feature_specs` / :func:`task_specs` — specs for ``build_model`` (e.g. ``"mmoe"``).
5. :func:`model_scores` / :func:`full_ranking_metrics` — full ranking over all items. Per user
   the candidates are the user's own items of the auxiliary behaviors (not already of the
   target behavior), plus, if ``n_retrieved > 0``, the top items of a retrieval score; the
   model ranks the candidates (its target probability, in ``[0, 1]``); every other item
   follows, ordered by the retrieval score (popularity of the target behavior by default,
   e.g. ALS scores; mapped below ``-1``). The user's own target-behavior items are excluded.

Two traps this recipe's defaults avoid (both measured on Tmall, see benchmarks/RESULTS.md):

* When the held-out purchases are mostly items the user already viewed, every candidate,
  the held-out one included, is a "viewed, not bought" training row with label 0. Id
  embeddings (``user_id``, and to a lesser degree ``item_id`` with histories) let the model
  memorise those pairs, so validation falls as training loss falls; the id-free features
  generalise.
* Training rows that the user did not touch are uniform negatives or bought-but-not-viewed
  items, which makes popular untouched items look better than they are; retrieved
  candidates (``n_retrieved > 0``) then crowd out the user's own items. Hence the default 0.

Example:
    >>> from shoprec.models import build_model
    >>> from shoprec.train.loop import TrainConfig, fit
    >>> log = BehaviorLog.from_interactions(ds.interactions, ("view", "cart", "buy"))
    ... # doctest: +SKIP
    >>> fit_log, users, items = hold_out_one(log, "buy")  # doctest: +SKIP
    >>> cfg = MultiBehaviorConfig()
    >>> data = training_data(fit_log, cfg)  # doctest: +SKIP
    >>> model = build_model("mmoe", feature_specs(fit_log, cfg), task_specs(cfg))
    ... # doctest: +SKIP
    >>> fit(model, data, config=TrainConfig(epochs=3))  # doctest: +SKIP
    >>> full_ranking_metrics(lambda u: model_scores(model, fit_log, u, cfg), fit_log, users,
    ...                      items, target="buy")  # doctest: +SKIP
    {'HR@10': ..., 'NDCG@10': ..., ...}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from shoprec.data.batches import TensorData
from shoprec.data.encode import IdMap
from shoprec.data.schema import Interactions
from shoprec.evaluate.metrics import CSR, ranking_metrics
from shoprec.models.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    SequenceFeature,
    Task,
)
from shoprec.train.loop import predict

log = logging.getLogger(__name__)

__all__ = [
    "AUX_WEIGHT",
    "FLAGS_KNOWN",
    "BehaviorLog",
    "MultiBehaviorConfig",
    "PairData",
    "Retrieval",
    "candidate_mask",
    "feature_specs",
    "full_ranking_metrics",
    "history_baseline_scores",
    "hold_out_one",
    "make_evaluator",
    "model_scores",
    "numeric_features",
    "pair_features",
    "popularity_scores",
    "task_specs",
    "training_data",
]

_FIRST = 2  # model id of dense index 0 (ids 0 and 1 are padding and OOV, as in the Encoder)
AUX_WEIGHT = "aux_weight"  #: batch key of the auxiliary tasks' 0/1 mask
FLAGS_KNOWN = "flags_known"  #: batch key: 1 when the ``in_<b>`` flags are shown

#: A retrieval score: dense user indices ``(C,)`` -> float scores ``(C, n_items)``.
Retrieval = Callable[[np.ndarray], np.ndarray | Tensor]


@dataclass(frozen=True)
class MultiBehaviorConfig:
    """Settings of the recipe (the model's own settings live in its config)."""

    behaviors: tuple[str, ...] = ("view", "cart", "buy")  # in funnel order; one task each
    target: str = "buy"  # the behavior that is ranked for
    user_id: bool = False  # a user-id embedding feature (lets the model memorise pairs)
    item_id: bool = False  # an item-id embedding feature (needed by any history)
    histories: tuple[str, ...] = ()  # behaviors given as id sequences, e.g. ("view", "buy")
    max_history: int = 16  # items kept per behavior history (a seeded subset when longer)
    attention: tuple[str, ...] = ()  # histories pooled by DIN attention; others: mean
    embedding_dim: int = 16  # of user, item and history embeddings
    n_negatives: int = 2  # uniformly drawn untouched items per target-behavior pair
    touched_keep: float = 1.0  # share of touched pairs WITHOUT the target behavior kept
    hide_fraction: float = 0.5  # share of training rows whose in_<b> flags are hidden
    rate_prior: float = 10.0  # pseudo-count of the smoothed item_rate_<b> features
    n_retrieved: int = 0  # retrieval candidates per user besides the user's own items
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target not in self.behaviors:
            raise ValueError(f"target {self.target!r} is not one of {self.behaviors}")
        if len(set(self.behaviors)) != len(self.behaviors):
            raise ValueError(f"behaviors must be unique, got {self.behaviors}")
        unknown = sorted((set(self.attention) | set(self.histories)) - set(self.behaviors))
        if unknown:
            raise ValueError(f"histories / attention name unknown behaviors {unknown}")
        if not set(self.attention) <= set(self.histories):
            raise ValueError(f"attention {self.attention} must name histories {self.histories}")
        if self.histories and not self.item_id:
            raise ValueError("histories share the item-id embedding table: they need item_id")
        if not 0.0 < self.touched_keep <= 1.0:
            raise ValueError(f"touched_keep must be in (0, 1], got {self.touched_keep}")
        if not 0.0 <= self.hide_fraction < 1.0:
            raise ValueError(f"hide_fraction must be in [0, 1), got {self.hide_fraction}")
        if self.max_history < 1 or self.n_negatives < 0 or self.n_retrieved < 0:
            raise ValueError("max_history must be >= 1, n_negatives and n_retrieved >= 0")

    @property
    def auxiliary(self) -> tuple[str, ...]:
        """The behaviors other than the target, in funnel order."""
        return tuple(b for b in self.behaviors if b != self.target)


# --------------------------------------------------------------------------------------------
# The log: per behavior, a sorted set of (user, item) pair keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BehaviorLog:
    """Which (user, item) pairs each behavior holds, over dense indices.

    User ``u`` (dense index) has model id ``u + 2`` and value ``users.values[u]``; the same
    for items. Each behavior's pairs are stored as the sorted unique keys
    ``user * n_items + item`` (int64), so membership of many pairs is one ``searchsorted``.

    Attributes:
        users: user id map (dense index ``i`` <-> ``users.values[i]``).
        items: item id map.
        keys: behavior -> sorted unique int64 pair keys.

    Example:
        >>> import polars as pl
        >>> inter = Interactions.from_frame(pl.DataFrame({
        ...     "user": ["a", "a", "b"], "item": ["x", "y", "x"],
        ...     "behavior": ["view", "buy", "view"]}))
        >>> blog = BehaviorLog.from_interactions(inter, ("view", "buy"))
        >>> blog.n_users, blog.n_items, blog.item_counts("view").tolist()
        (2, 2, [2, 0])
    """

    users: IdMap
    items: IdMap
    keys: Mapping[str, np.ndarray]

    @classmethod
    def from_interactions(
        cls,
        inter: Interactions,
        behaviors: Sequence[str],
        users: IdMap | None = None,
        items: IdMap | None = None,
    ) -> BehaviorLog:
        """Build from canonical interactions (repeated events of a pair count once).

        Args:
            inter: the events (only ``behaviors`` are read).
            behaviors: the behaviors to keep.
            users: the user id map; by default every user of ``inter``'s kept events, sorted.
            items: the item id map; by default every item of ``inter``'s kept events, sorted.

        Returns:
            The log. Events of users or items missing from given maps are dropped (logged).
        """
        names = [str(b) for b in behaviors]
        df = inter.df.filter(pl.col("behavior").is_in(names))
        if users is None:
            users = IdMap("user", tuple(df["user"].unique().sort().to_list()))
        if items is None:
            items = IdMap("item", tuple(df["item"].unique().sort().to_list()))
        u = users.encode(df["user"]) - _FIRST
        i = items.encode(df["item"]) - _FIRST
        known = (u >= 0) & (i >= 0)
        if not known.all():
            log.warning("BehaviorLog: %d events of unknown users or items dropped", (~known).sum())
        beh = df["behavior"].to_numpy()
        keys = {}
        for b in names:
            sel = known & (beh == b)
            keys[b] = np.unique(u[sel].astype(np.int64) * len(items) + i[sel])
        return cls(users, items, keys)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def behaviors(self) -> tuple[str, ...]:
        return tuple(self.keys)

    def pairs(self, behavior: str) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``(user, item)`` index arrays of one behavior, sorted by user then item."""
        k = self.keys[behavior]
        return k // self.n_items, k % self.n_items

    def contains(self, behavior: str, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Bool ``(N,)``: is each (dense user, dense item) pair in ``behavior``?"""
        k = self.keys[behavior]
        q = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        pos = np.searchsorted(k, q)
        return (pos < len(k)) & (k[np.minimum(pos, len(k) - 1)] == q) if len(k) else pos < 0

    def csr(self, behavior: str) -> CSR:
        """The behavior's items per user as a :class:`CSR` over all ``n_users`` rows."""
        u, i = self.pairs(behavior)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=self.n_users))])
        return CSR(indptr.astype(np.int64), i.astype(np.int64))

    def item_counts(self, behavior: str) -> np.ndarray:
        """Int64 ``(n_items,)``: how many users did ``behavior`` on each item."""
        return np.bincount(self.keys[behavior] % self.n_items, minlength=self.n_items)

    def user_counts(self, behavior: str) -> np.ndarray:
        """Int64 ``(n_users,)``: on how many items each user did ``behavior``."""
        return np.bincount(self.keys[behavior] // self.n_items, minlength=self.n_users)

    def without(self, behavior: str, users: np.ndarray, items: np.ndarray) -> BehaviorLog:
        """A copy with the given (dense user, dense item) pairs removed from ``behavior``."""
        q = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        keys = dict(self.keys)
        keys[behavior] = keys[behavior][~np.isin(keys[behavior], q)]
        return BehaviorLog(self.users, self.items, keys)

    def user_index(self, values: Sequence[str] | pl.Series) -> np.ndarray:
        """Dense indices of user values (-1 for unknown users)."""
        return self.users.encode(values) - _FIRST

    def item_index(self, values: Sequence[str] | pl.Series) -> np.ndarray:
        """Dense indices of item values (-1 for unknown items)."""
        return self.items.encode(values) - _FIRST


def hold_out_one(
    blog: BehaviorLog, behavior: str, *, seed: int = 0, min_items: int = 2
) -> tuple[BehaviorLog, np.ndarray, np.ndarray]:
    """Per user with at least ``min_items`` items of ``behavior``, move one random one out.

    The usual leave-one-out validation when the log has no time: the held-out pairs leave
    ``behavior`` only (a held-out purchase stays a view if it was one, as a test purchase is).

    Args:
        blog: the training log.
        behavior: the behavior to hold out from (the target).
        seed: seed of the draw.
        min_items: users with fewer items of ``behavior`` keep them all.

    Returns:
        ``(log without the held-out pairs, users (V,), items (V,))`` as dense indices.

    Example:
        >>> fit_log, users, items = hold_out_one(blog, "buy", seed=0)  # doctest: +SKIP
    """
    u, i = blog.pairs(behavior)
    counts = np.bincount(u, minlength=blog.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    users = np.flatnonzero(counts >= max(min_items, 1))
    rng = np.random.default_rng(seed)
    pick = starts[users] + (rng.random(len(users)) * counts[users]).astype(np.int64)
    items = i[pick]
    return blog.without(behavior, users, items), users.astype(np.int64), items.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Features of (user, item) pairs
# --------------------------------------------------------------------------------------------


def history_table(blog: BehaviorLog, behavior: str, max_len: int, seed: int = 0) -> Tensor:
    """Each user's items of ``behavior`` as model ids, by user model id.

    Args:
        blog: the log.
        behavior: which history.
        max_len: the most items kept; users with more keep a seeded random subset (there
            is no time order to keep the latest by).
        seed: seed of that subset.

    Returns:
        int64 ``(n_users + 2, L)``, ``L = min(max_len, longest history)``, right-padded with 0;
        rows 0 and 1 (padding and OOV user ids) are empty.
    """
    u, i = blog.pairs(behavior)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(u)), u))  # random order within each user
    u, i = u[order], i[order]
    counts = np.bincount(u, minlength=blog.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(u)) - starts[u]
    keep = pos < max_len
    width = max(1, min(max_len, int(counts.max()) if len(counts) else 1))
    table = np.zeros((blog.n_users + _FIRST, width), dtype=np.int64)
    table[u[keep] + _FIRST, pos[keep]] = i[keep] + _FIRST
    return torch.from_numpy(table)


def numeric_features(config: MultiBehaviorConfig) -> list[str]:
    """Names of the numeric features :func:`pair_features` makes, in order."""
    aux = config.auxiliary
    return [
        *(f"in_{b}" for b in aux),
        FLAGS_KNOWN,
        *(f"item_{b}" for b in config.behaviors),
        *(f"item_rate_{b}" for b in aux),
        *(f"user_{b}" for b in config.behaviors),
    ]


@dataclass(frozen=True)
class _Stats:
    """Per-behavior item and user counts of a log, computed once per call site."""

    item: dict[str, np.ndarray]
    user: dict[str, np.ndarray]
    item_scale: dict[str, float]
    user_scale: dict[str, float]

    @classmethod
    def of(cls, blog: BehaviorLog, behaviors: Sequence[str]) -> _Stats:
        item = {b: blog.item_counts(b) for b in behaviors}
        user = {b: blog.user_counts(b) for b in behaviors}
        return cls(
            item,
            user,
            {b: float(np.log1p(max(int(c.max()) if len(c) else 0, 1))) for b, c in item.items()},
            {b: float(np.log1p(max(int(c.max()) if len(c) else 0, 1))) for b, c in user.items()},
        )


def pair_features(
    blog: BehaviorLog,
    users: np.ndarray,
    items: np.ndarray,
    config: MultiBehaviorConfig,
    known: np.ndarray | None = None,
    stats: _Stats | None = None,
) -> dict[str, np.ndarray]:
    """Ids and numeric features of (user, item) pairs, from ``blog`` (see the module doc).

    Args:
        blog: the log the features are read from (the training log).
        users: dense user indices ``(N,)``.
        items: dense item indices ``(N,)``.
        config: the recipe settings.
        known: bool ``(N,)``: rows whose ``in_<b>`` flags are shown (all by default).
        stats: precomputed counts of ``blog`` (computed here when None).

    Returns:
        ``{"user", "item"}`` int64 model ids and every :func:`numeric_features` name, float32
        ``(N,)``. History sequences are added per batch by :class:`PairData`.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    stats = stats or _Stats.of(blog, config.behaviors)
    n = len(users)
    shown = np.ones(n, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    own = {b: blog.contains(b, users, items) for b in config.behaviors}
    out: dict[str, np.ndarray] = {"user": users + _FIRST, "item": items + _FIRST}
    for b in config.auxiliary:
        out[f"in_{b}"] = (own[b] & shown).astype(np.float32)
    out[FLAGS_KNOWN] = shown.astype(np.float32)
    others = {b: stats.item[b][items] - own[b] for b in config.behaviors}  # leave-user-out
    for b in config.behaviors:
        out[f"item_{b}"] = (np.log1p(others[b]) / stats.item_scale[b]).astype(np.float32)
    t = config.target
    a = config.rate_prior
    for b in config.auxiliary:
        total_b = max(float(stats.item[b].sum()), 1.0)
        prior = float(stats.item[t].sum()) / total_b
        rate = (others[t] + a * prior) / (others[b] + a)
        out[f"item_rate_{b}"] = (np.log(rate / max(prior, 1e-9)) / 2.0).astype(np.float32)
    for b in config.behaviors:
        out[f"user_{b}"] = (np.log1p(stats.user[b][users]) / stats.user_scale[b]).astype(np.float32)
    return out


@dataclass
class PairData(TensorData):
    """Pair rows as tensors, plus per-user history tables joined in per batch.

    Each batch gets ``hist_<b>`` = ``histories[b][batch["user"]]`` with the batch's own
    candidate item masked to padding, so a row never sees its own item in its histories. The
    tables are stored once per user, not once per row.

    Attributes:
        columns: row-aligned columns (must include ``user`` and ``item`` model ids).
        histories: behavior -> int64 ``(n_users + 2, L)`` table from :func:`history_table`.
    """

    histories: dict[str, Tensor] = field(default_factory=dict)

    def _join(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        item = batch["item"].unsqueeze(1)  # (B, 1)
        for b, table in self.histories.items():
            h = table[batch["user"]]  # (B, L)
            batch[f"hist_{b}"] = h.masked_fill(h == item, 0)
        return batch

    def take(self, index: Tensor) -> dict[str, Tensor]:
        """Rows at ``index`` with their histories."""
        return self._join(super().take(index))

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, Tensor]]:
        """Batches with histories, in order or in a seeded random order."""
        if shuffle:
            yield from super().batches(batch_size, shuffle=True, generator=generator)
            return
        for start in range(0, len(self), batch_size):
            batch = {k: v[start : start + batch_size] for k, v in self.columns.items()}
            yield self._join(batch)

    def subset(self, index: Tensor) -> PairData:
        return PairData({k: v[index] for k, v in self.columns.items()}, self.histories)


def _histories(blog: BehaviorLog, config: MultiBehaviorConfig) -> dict[str, Tensor]:
    return {
        b: history_table(blog, b, config.max_history, seed=config.seed + k)
        for k, b in enumerate(config.behaviors)
        if b in config.histories
    }


def _to_columns(arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    out = {}
    for k, v in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.long() if k in ("user", "item") else t.float()
    return out


def training_data(blog: BehaviorLog, config: MultiBehaviorConfig) -> PairData:
    """Training rows: every touched (user, item) pair plus drawn negatives, labelled.

    Touched pairs without the target behavior (e.g. viewed but not bought: the hard
    negatives) are kept with probability ``touched_keep``.

    Args:
        blog: the training log (labels and features both come from it).
        config: the recipe settings.

    Returns:
        :class:`PairData` with the :func:`pair_features`, one float 0/1 label column per
        behavior, and ``aux_weight`` (1 where the flags are hidden: the auxiliary tasks'
        mask). Row order: touched pairs sorted by (user, item), then negatives.
    """
    rng = np.random.default_rng(config.seed)
    touched = np.unique(np.concatenate([blog.keys[b] for b in config.behaviors]))
    if config.touched_keep < 1.0:  # thin out the hard negatives, keep every target pair
        hit = np.isin(touched, blog.keys[config.target])
        touched = touched[hit | (rng.random(len(touched)) < config.touched_keep)]
    tu = blog.keys[config.target] // blog.n_items
    n_draw = len(tu) * config.n_negatives
    neg = np.repeat(tu, config.n_negatives) * blog.n_items + rng.integers(
        0, blog.n_items, size=n_draw
    )
    neg = np.unique(neg[~np.isin(neg, touched)])
    keys = np.concatenate([touched, neg])
    users, items = keys // blog.n_items, keys % blog.n_items
    known = rng.random(len(keys)) >= config.hide_fraction
    arrays = pair_features(blog, users, items, config, known=known)
    for b in config.behaviors:
        arrays[b] = blog.contains(b, users, items).astype(np.float32)
    arrays[AUX_WEIGHT] = (~known).astype(np.float32)
    log.info(
        "training_data: %d rows (%d touched, %d negatives), %.0f%% flags hidden",
        len(keys),
        len(touched),
        len(neg),
        100 * (1 - known.mean()) if len(keys) else 0.0,
    )
    return PairData(_to_columns(arrays), _histories(blog, config))


def feature_specs(blog: BehaviorLog, config: MultiBehaviorConfig) -> list[FeatureSpec]:
    """Feature specs of the recipe's batches: the id embeddings and histories the config
    asks for (histories share the item table), then every :func:`numeric_features` name.

    Batches always carry ``user`` and ``item``; a model reads only the features it has specs
    for, so ``user_id=False`` simply leaves the user id unused.
    """
    d = config.embedding_dim
    vocab_items = blog.n_items + _FIRST
    specs: list[FeatureSpec] = []
    if config.user_id:
        specs.append(CategoricalFeature("user", blog.n_users + _FIRST, d))
    if config.item_id:
        specs.append(CategoricalFeature("item", vocab_items, d))
    for b in config.histories:
        pooling = "attention" if b in config.attention else "mean"
        specs.append(SequenceFeature(f"hist_{b}", vocab_items, d, pooling, embedding_of="item"))
    specs.extend(NumericFeature(n) for n in numeric_features(config))
    return specs


def task_specs(config: MultiBehaviorConfig, multi_task: bool = True) -> list[Task]:
    """One binary task per behavior (auxiliary ones masked by ``aux_weight``), or the target
    alone when ``multi_task`` is False."""
    if not multi_task:
        return [Task(config.target)]
    return [
        Task(b) if b == config.target else Task(b, weight_key=AUX_WEIGHT) for b in config.behaviors
    ]


# --------------------------------------------------------------------------------------------
# Candidates and full-ranking scores
# --------------------------------------------------------------------------------------------


def popularity_scores(blog: BehaviorLog, behavior: str) -> Retrieval:
    """A retrieval score: the item's count of ``behavior`` for every user."""
    pop = torch.from_numpy(blog.item_counts(behavior).astype(np.float32))

    def scores(users: np.ndarray) -> Tensor:
        return pop.unsqueeze(0).expand(len(users), -1)

    return scores


def _rows_mask(csr: CSR, users: np.ndarray, n_items: int) -> Tensor:
    """Bool ``(C, n_items)``: row ``r`` marks the CSR items of user ``users[r]``."""
    starts, stops = csr.indptr[users], csr.indptr[users + 1]
    lens = stops - starts
    rows = np.repeat(np.arange(len(users)), lens)
    idx = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
    mask = torch.zeros(len(users), n_items, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(csr.indices[idx])] = True
    return mask


def candidate_mask(
    blog: BehaviorLog,
    users: np.ndarray,
    config: MultiBehaviorConfig,
    retrieval: Tensor,
    csrs: Mapping[str, CSR] | None = None,
) -> tuple[Tensor, Tensor]:
    """Candidates of a chunk of users: own auxiliary-behavior items + top retrieved items.

    Args:
        blog: the log.
        users: dense user indices ``(C,)``.
        config: the recipe settings (``n_retrieved``, behaviors).
        retrieval: float ``(C, n_items)`` retrieval scores of those users.
        csrs: per-behavior CSRs of ``blog`` (computed when None).

    Returns:
        ``(candidates, excluded)``: bool ``(C, n_items)`` masks; the user's target-behavior
        items are excluded and never candidates.
    """
    csrs = csrs or {b: blog.csr(b) for b in config.behaviors}
    excluded = _rows_mask(csrs[config.target], users, blog.n_items)
    cand = torch.zeros_like(excluded)
    for b in config.auxiliary:
        cand |= _rows_mask(csrs[b], users, blog.n_items)
    k = min(config.n_retrieved, blog.n_items)
    if k > 0:
        r = retrieval.masked_fill(excluded | cand, float("-inf"))
        top = r.topk(k, dim=1)
        picked = torch.zeros_like(cand)
        picked.scatter_(1, top.indices, torch.isfinite(top.values))
        cand |= picked
    return cand & ~excluded, excluded


def _tail(retrieval: Tensor) -> Tensor:
    """Retrieval scores moved below ``-1`` per row, order kept: the non-candidates' scores."""
    r = retrieval.float()
    return r - r.max(dim=1, keepdim=True).values - 2.0


def model_scores(
    model: nn.Module,
    blog: BehaviorLog,
    users: np.ndarray,
    config: MultiBehaviorConfig,
    retrieval: Retrieval | None = None,
    *,
    batch_size: int = 8192,
    histories: Mapping[str, Tensor] | None = None,
    stats: _Stats | None = None,
    csrs: Mapping[str, CSR] | None = None,
) -> Tensor:
    """Full-ranking scores ``(C, n_items)`` of a chunk of users from a trained model.

    Candidates (:func:`candidate_mask`) get the model's target probability in ``[0, 1]``;
    every other item gets its retrieval score moved below ``-1``, so it ranks after every
    candidate and in retrieval order. Excluded (target-behavior train) items are left to the
    metric's exclusion.

    Args:
        model: a trained model whose tasks include ``config.target``.
        blog: the log features are read from.
        users: dense user indices ``(C,)``.
        config: the recipe settings.
        retrieval: candidate and tail score; popularity of the target behavior by default.
        batch_size: pairs per forward pass.
        histories, stats, csrs: precomputed parts of ``blog`` to reuse across chunks.

    Returns:
        float32 ``(C, n_items)``.
    """
    users = np.asarray(users, dtype=np.int64)
    retrieval = retrieval or popularity_scores(blog, config.target)
    r = torch.as_tensor(retrieval(users)).float()
    cand, _ = candidate_mask(blog, users, config, r, csrs)
    rows, items = (t.numpy() for t in cand.nonzero(as_tuple=True))
    arrays = pair_features(blog, users[rows], items, config, stats=stats)
    data = PairData(_to_columns(arrays), dict(histories or _histories(blog, config)))
    prob = predict(model, data, batch_size)[config.target]
    scores = _tail(r)
    scores[torch.from_numpy(rows), torch.from_numpy(items)] = prob.float()
    return scores


def history_baseline_scores(
    blog: BehaviorLog,
    users: np.ndarray,
    config: MultiBehaviorConfig,
    tiebreak: str = "rate",
) -> Tensor:
    """A no-learning baseline: the user's own auxiliary-behavior items first.

    Score = sum over auxiliary behaviors ``b`` (funnel position ``k``) of ``2**k * [did b]``
    (so carted-and-viewed > carted > viewed > untouched), plus a tie-break in ``[0, 1)``:
    ``"rate"`` — the item's smoothed target-per-first-behavior rate (e.g. buys per view),
    ``"popularity"`` — its target-behavior count. Only counting, no fitting.

    Args:
        blog: the log.
        users: dense user indices ``(C,)``.
        config: the recipe settings (behaviors, target, ``rate_prior``).
        tiebreak: ``"rate"`` or ``"popularity"``.

    Returns:
        float32 ``(C, n_items)``.
    """
    users = np.asarray(users, dtype=np.int64)
    t = blog.item_counts(config.target).astype(np.float64)
    if tiebreak == "rate" and config.auxiliary:
        first = blog.item_counts(config.auxiliary[0]).astype(np.float64)
        a = config.rate_prior
        prior = t.sum() / max(first.sum(), 1.0)
        tb = (t + a * prior) / (first + a)
    elif tiebreak in ("rate", "popularity"):
        tb = t
    else:
        raise ValueError(f"tiebreak must be 'rate' or 'popularity', got {tiebreak!r}")
    tb = tb / (tb.max() * 1.001) if tb.max() > 0 else tb
    scores = torch.from_numpy(tb.astype(np.float32)).unsqueeze(0).repeat(len(users), 1)
    for k, b in enumerate(config.auxiliary):
        scores += (2.0**k) * _rows_mask(blog.csr(b), users, blog.n_items).float()
    return scores


def full_ranking_metrics(
    scorer: Callable[[np.ndarray], np.ndarray | Tensor],
    blog: BehaviorLog,
    users: np.ndarray,
    targets: np.ndarray,
    *,
    target: str,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """HR@k, NDCG@k (and Recall, MRR) of one held-out item per user, ranked against all items.

    Args:
        scorer: dense user indices ``(C,)`` -> scores ``(C, n_items)``.
        blog: the training log; each user's ``target`` items are excluded from their ranking.
        users: dense user indices ``(U,)`` (-1 for users unknown to the log: counted as misses).
        targets: dense item indices ``(U,)`` (-1 for unknown items: counted as misses).
        target: the target behavior.
        ks: cut-offs.
        chunk_size: users scored at once.

    Returns:
        Means over all ``U`` users, as :func:`~shoprec.evaluate.metrics.ranking_metrics`
        names them (``HR@10``, ``NDCG@10``, ...), plus ``users``.
    """
    users = np.asarray(users, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    ok = (users >= 0) & (targets >= 0)
    if not ok.all():
        log.warning(
            "full_ranking_metrics: %d unknown users or targets count as misses", (~ok).sum()
        )
    excl = blog.csr(target)
    sums: dict[str, float] = {}
    u_ok, t_ok = users[ok], targets[ok]
    for start in range(0, len(u_ok), chunk_size):
        uu, tt = u_ok[start : start + chunk_size], t_ok[start : start + chunk_size]
        scores = torch.as_tensor(scorer(uu))
        rel = CSR(np.arange(len(uu) + 1, dtype=np.int64), tt)
        lens = np.diff(excl.indptr)[uu]
        idx = np.repeat(excl.indptr[uu] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        exc = CSR(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), excl.indices[idx])
        per = ranking_metrics(scores, rel, exc, ks=ks, chunk_size=chunk_size, per_user=True)
        for name, values in per.items():
            sums[name] = sums.get(name, 0.0) + float(np.nansum(values))
    n = max(len(users), 1)
    out = {name: total / n for name, total in sums.items()}
    out["users"] = float(len(users))
    return out


def make_evaluator(
    blog: BehaviorLog,
    users: np.ndarray,
    targets: np.ndarray,
    config: MultiBehaviorConfig,
    retrieval: Retrieval | None = None,
    *,
    ks: Sequence[int] = (10,),
    max_users: int | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """A validation hook for :func:`~shoprec.train.loop.fit`: full-ranking metrics of the
    target behavior, keys ``<target>/HR@k`` and ``<target>/NDCG@k``.

    Args:
        blog: the log the model trains on (the held-out pairs removed).
        users: dense indices of the validation users.
        targets: their held-out items.
        config: the recipe settings.
        retrieval: the candidate and tail score.
        ks: cut-offs.
        max_users: score a seeded sample of this many users (all when None).

    Example:
        >>> ev = make_evaluator(fit_log, users, items, cfg, max_users=3000)  # doctest: +SKIP
        >>> fit(model, data, config=TrainConfig(monitor="buy/NDCG@10"), evaluator=ev)
        ... # doctest: +SKIP
    """
    users = np.asarray(users, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if max_users is not None and max_users < len(users):
        pick = np.sort(np.random.default_rng(config.seed).choice(len(users), max_users, False))
        users, targets = users[pick], targets[pick]
    histories = _histories(blog, config)
    stats = _Stats.of(blog, config.behaviors)
    csrs = {b: blog.csr(b) for b in config.behaviors}

    def evaluate(model: nn.Module) -> dict[str, float]:
        m = full_ranking_metrics(
            lambda uu: model_scores(
                model, blog, uu, config, retrieval, histories=histories, stats=stats, csrs=csrs
            ),
            blog,
            users,
            targets,
            target=config.target,
            ks=ks,
        )
        return {
            f"{config.target}/{k}": v for k, v in m.items() if k.split("@")[0] in {"HR", "NDCG"}
        }

    return evaluate
