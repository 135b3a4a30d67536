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
   instead of copying an input flag. The target task learns on every row, except with
   ``hide_mode="copies"``: there every row is shown once (the target learns, with its flags,
   as a single-task model would) and a share ``hide_fraction`` of the rows is added again
   with every flag hidden (only the auxiliary tasks learn there, ``target_weight`` mask).
4. :func:`feature_specs` / :func:`task_specs` — specs for ``build_model`` (e.g. ``"mmoe"``).
5. :func:`model_scores` / :func:`full_ranking_metrics` — full ranking over all items. Per user
   the candidates are the user's own items of the auxiliary behaviors (not already of the
   target behavior), plus, if ``n_retrieved > 0``, the top items of a retrieval score; the
   model ranks the candidates (its target probability, in ``[0, 1]``); every other item
   follows, ordered by the retrieval score (popularity of the target behavior by default,
   e.g. ALS scores; mapped below ``-1``). The user's own target-behavior items are excluded.

Behind the front door (``recipe: {name: multibehavior}``, :class:`MultiBehaviorRecipe`) the
behaviors are the config's tasks (or ``recipe.behaviors``), any number of them and with or
without timestamps (view / cart / buy, click / buy, ...); the target is the last task. ``fit``
runs steps 1-4 with the registry model of ``model:`` and the one loop, selecting the epoch by
full-ranking ``<target>/ndcg@k`` on the split's valid part (or a :func:`hold_out_one` draw),
and refits on train + valid. Its :class:`MultiBehaviorScorer` keeps the log, the model and the
settings (Parquet, JSON, safetensors) and scores users x items as step 5 ranks them, with
positive scores (probabilities for the candidates, a popularity fallback below them) and the
live events of the serving store added to each user's behaviors.

Two options make the auxiliary tasks carry what the target lacks and keep the ranking at or
above the no-learning rule "the user's own carted > viewed items first" (issue 13):

* ``hide_mode`` — ``"rows"`` hides every ``in_<b>`` flag of a share ``hide_fraction`` of the
  rows together; ``"own"`` hides each flag on its own draw, and task ``b`` learns where its
  own flag is hidden while it still sees the others (cart learns "carted, given viewed").
* ``rule_blend`` (``rule_weights``) — a candidate's target score becomes
  ``(1 - w) * p + w * rule`` (:func:`rule_scores`, in ``[0, 1)``), ``w`` picked after the
  epoch selection on the validation targets (:func:`rule_blend_metrics`); ``w = 1`` ranks as
  the rule. ``rule_pick: one_se`` (default, :func:`pick_blend_weight`) keeps the rule unless
  a weight beats it by more than one standard error of the paired per-user difference, and
  the model alone over a blend unless the blend beats it so: a pick by the best validation
  mean alone fell below the rule on test by chance (Tmall ESMM, by 11 users of 2,998).

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
    {'hr@10': ..., 'ndcg@10': ..., ...}

    The same through the front door (``shoprec train configs/tmall_mmoe.yaml``)::

        run = MultiBehaviorRecipe(load_config("configs/tmall_mmoe.yaml")).fit(ds, split)
        run.scorer.score(["42"], events=live)  # {"view": (1, I), "cart": ..., "buy": ...}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from shoprec.config import ConfigError
from shoprec.data.batches import TensorData
from shoprec.data.encode import OOV, IdMap
from shoprec.data.schema import Interactions
from shoprec.evaluate.metrics import Sparse, ranking_metrics
from shoprec.models import build_model
from shoprec.models.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    SequenceFeature,
    Task,
)
from shoprec.recipes.base import (
    EVENT_COLUMNS,
    Recipe,
    RecipeOptions,
    Scorer,
    TrainingRun,
    events_of,
    positions_or_all,
)
from shoprec.train.loop import fit, predict

if TYPE_CHECKING:
    from shoprec.data.schema import Dataset
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

__all__ = [
    "AUX_WEIGHT",
    "FLAGS_KNOWN",
    "HIDE_MODES",
    "INTEREST_LABEL",
    "INTEREST_WEIGHT",
    "TARGET_WEIGHT",
    "BehaviorLog",
    "ItemClasses",
    "MultiBehaviorConfig",
    "MultiBehaviorOptions",
    "MultiBehaviorRecipe",
    "MultiBehaviorScorer",
    "PairData",
    "Retrieval",
    "aux_weight_key",
    "candidate_mask",
    "feature_specs",
    "full_ranking_metrics",
    "history_baseline",
    "history_baseline_scores",
    "hold_out_one",
    "interest_labels",
    "item_classes",
    "make_evaluator",
    "model_scores",
    "numeric_features",
    "pair_features",
    "paired_gain",
    "pick_blend_weight",
    "popularity_scores",
    "rule_blend_metrics",
    "rule_scores",
    "target_weight_key",
    "task_specs",
    "training_data",
]

_FIRST = 2  # model id of dense index 0 (ids 0 and 1 are padding and OOV, as in the Encoder)
AUX_WEIGHT = "aux_weight"  #: batch key of the auxiliary tasks' 0/1 mask
INTEREST_LABEL = "interest_label"  #: batch key: int64 class of the user's interest label
INTEREST_WEIGHT = "interest_weight"  #: batch key: 1 where the user has an interest label
CATEGORY = "category"  #: batch key: the candidate item's class + 1 (0: padding)
UNKNOWN_CLASS = "<unknown>"  #: the class of items without a category
FLAGS_KNOWN = "flags_known"  #: batch key: 1 when the ``in_<b>`` flags are shown
TARGET_WEIGHT = "target_weight"  #: batch key: the target's 0/1 mask (``hide_mode="copies"``)
HIDE_MODES = ("rows", "own", "copies")  #: how the ``in_<b>`` flags are hidden (see training_data)

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
    rule_weight: float = 0.0  # weight of the own-behavior rule in a candidate's score (0: model)
    hide_mode: str = "rows"  # "rows": all in_<b> flags hidden together; "own": each on its own;
    # "copies": as "rows" on added copies of the rows, where the target does not learn

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
        if not 0.0 <= self.rule_weight <= 1.0:
            raise ValueError(f"rule_weight must be in [0, 1], got {self.rule_weight}")
        if self.hide_mode not in HIDE_MODES:
            raise ValueError(f"hide_mode must be one of {HIDE_MODES}, got {self.hide_mode!r}")

    @property
    def auxiliary(self) -> tuple[str, ...]:
        """The behaviors other than the target, in funnel order."""
        return tuple(b for b in self.behaviors if b != self.target)


# --------------------------------------------------------------------------------------------
# The log: per behavior, a sorted set of (user, item) pair keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ItemClasses:
    """A class (category) per item, for the multi-class ``interest`` task.

    Attributes:
        names: class names; the last is :data:`UNKNOWN_CLASS` (items without a category).
        of_item: int64 ``(n_items,)``: each dense item's class index.
        prior: float ``(n_classes,)``: the share of each class among the training labels
            (the interest of a user the scorer knows nothing about).
    """

    names: tuple[str, ...]
    of_item: np.ndarray
    prior: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.names)


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
        classes: the items' classes when the interest task is trained (else None).

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
    classes: ItemClasses | None = None

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

    def csr(self, behavior: str) -> sp.csr_array:
        """The behavior's items per user, ``(n_users, n_items)`` boolean scipy CSR."""
        u, i = self.pairs(behavior)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=self.n_users))])
        data = np.ones(len(i), dtype=bool)
        return sp.csr_array((data, i, indptr), shape=(self.n_users, self.n_items))

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
        return replace(self, keys=keys)

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


def item_classes(
    catalog: pl.DataFrame | None, items: IdMap, column: str = "category", task: str = "interest"
) -> tuple[tuple[str, ...], np.ndarray]:
    """Each item's class from a catalog column, for the multi-class interest task.

    Classes are the column's distinct non-empty values, sorted, then :data:`UNKNOWN_CLASS`
    (items with an empty category or missing from the catalog), so ``n_classes`` is the
    number of categories + 1.

    Args:
        catalog: the catalog frame (``item`` plus ``column``), or None.
        items: the log's item id map.
        column: the catalog column holding the category.
        task: the task's name (for the error message).

    Returns:
        ``(class names, int64 (n_items,) class index per dense item)``.

    Raises:
        ConfigError: without a catalog, or when it has no ``column``.
    """
    empty = (
        catalog is not None
        and column in catalog.columns
        and catalog[column].null_count() == catalog.height
    )
    if catalog is None or column not in catalog.columns or empty:
        found = "no catalog" if catalog is None else f"a catalog with columns {catalog.columns}"
        found += f" ('{column}' is empty in every row)" if empty else ""
        raise ConfigError(
            f"task '{task}' (kind: multiclass) learns the category of the user's next "
            f"purchase, read from the catalog column '{column}', but the data has {found}. "
            f"Add a catalog with an item and a '{column}' column (data.catalog: {{path: ..., "
            f"columns: {{item: ..., {column}: ...}}}}), name the category column with the "
            f"task's label: (e.g. {{name: {task}, kind: multiclass, label: department}}), or "
            f"remove the task."
        )
    cat = catalog.select(
        pl.col("item").cast(pl.String), pl.col(column).cast(pl.String).str.strip_chars()
    ).filter(pl.col(column).is_not_null() & (pl.col(column) != ""))
    cat = cat.unique(subset="item", keep="first", maintain_order=True)
    names = (*sorted(cat[column].unique().to_list()), UNKNOWN_CLASS)
    index = pl.DataFrame(
        {column: names[:-1], "class": np.arange(len(names) - 1)},
        schema={column: pl.String, "class": pl.Int64},
    )
    table = cat.join(index, on=column, how="left")
    of_item = np.full(len(items), len(names) - 1, dtype=np.int64)
    dense = items.encode(table["item"]) - _FIRST
    known = dense >= 0
    of_item[dense[known]] = table["class"].to_numpy()[known]
    return names, of_item


def interest_labels(blog: BehaviorLog, target: str) -> np.ndarray:
    """Each user's interest label: the class the user bought most in ``blog`` (the training
    window: the held-out validation and test events are never in it), ties to the lower
    class; ``-1`` for users without a target-behavior item.

    Args:
        blog: the log, with :attr:`BehaviorLog.classes`.
        target: the target behavior.

    Returns:
        int64 ``(n_users,)``.
    """
    if blog.classes is None:
        raise ValueError("the log has no item classes")
    n_classes = blog.classes.n_classes
    u, i = blog.pairs(target)
    keys, counts = np.unique(u * n_classes + blog.classes.of_item[i], return_counts=True)
    ku, kc = keys // n_classes, keys % n_classes
    order = np.lexsort((kc, -counts, ku))  # per user: most bought first, then lower class
    ku, kc = ku[order], kc[order]
    first = np.ones(len(ku), dtype=bool)
    first[1:] = ku[1:] != ku[:-1]
    labels = np.full(blog.n_users, -1, dtype=np.int64)
    labels[ku[first]] = kc[first]
    return labels


def with_classes(
    blog: BehaviorLog, names: tuple[str, ...], of_item: np.ndarray, target: str
) -> BehaviorLog:
    """``blog`` with :class:`ItemClasses` attached, the prior from its own labels."""
    bare = replace(blog, classes=ItemClasses(names, of_item, np.zeros(len(names))))
    labels = interest_labels(bare, target)
    counts = np.bincount(labels[labels >= 0], minlength=len(names)).astype(np.float64)
    prior = (counts + 1.0) / (counts.sum() + len(names))  # add-one: no class is impossible
    return replace(blog, classes=ItemClasses(names, of_item, prior))


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


def aux_weight_key(config: MultiBehaviorConfig, behavior: str) -> str:
    """The batch key of an auxiliary behavior's 0/1 task mask: :data:`AUX_WEIGHT` when the
    flags are hidden together (``hide_mode="rows"``), ``aux_weight_<b>`` when each flag is
    hidden on its own (``"own"``)."""
    return AUX_WEIGHT if config.hide_mode in ("rows", "copies") else f"{AUX_WEIGHT}_{behavior}"


def target_weight_key(config: MultiBehaviorConfig) -> str | None:
    """The batch key of the target task's 0/1 mask: :data:`TARGET_WEIGHT` with
    ``hide_mode="copies"`` (the target learns only on the rows shown with their flags),
    else None (every row)."""
    return TARGET_WEIGHT if config.hide_mode == "copies" else None


def numeric_features(config: MultiBehaviorConfig) -> list[str]:
    """Names of the numeric features :func:`pair_features` makes, in order.

    With ``hide_mode="rows"`` one ``flags_known`` says whether the row's ``in_<b>`` flags are
    shown; with ``"own"`` a ``known_<b>`` per auxiliary behavior says it for each flag.
    """
    aux = config.auxiliary
    together = config.hide_mode in ("rows", "copies")
    known = [FLAGS_KNOWN] if together else [f"known_{b}" for b in aux]
    return [
        *(f"in_{b}" for b in aux),
        *known,
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
    item_class: np.ndarray | None = None  # dense item -> class (with the interest task)

    @classmethod
    def of(cls, blog: BehaviorLog, behaviors: Sequence[str]) -> _Stats:
        item = {b: blog.item_counts(b) for b in behaviors}
        user = {b: blog.user_counts(b) for b in behaviors}
        return cls(
            item,
            user,
            {b: float(np.log1p(max(int(c.max()) if len(c) else 0, 1))) for b, c in item.items()},
            {b: float(np.log1p(max(int(c.max()) if len(c) else 0, 1))) for b, c in user.items()},
            None if blog.classes is None else blog.classes.of_item,
        )


def pair_features(
    blog: BehaviorLog,
    users: np.ndarray,
    items: np.ndarray,
    config: MultiBehaviorConfig,
    known: np.ndarray | Mapping[str, np.ndarray] | None = None,
    stats: _Stats | None = None,
) -> dict[str, np.ndarray]:
    """Ids and numeric features of (user, item) pairs, from ``blog`` (see the module doc).

    Args:
        blog: the log the features are read from (the training log).
        users: dense user indices ``(N,)``.
        items: dense item indices ``(N,)``.
        config: the recipe settings.
        known: bool ``(N,)``: rows whose ``in_<b>`` flags are shown (all by default), or
            auxiliary behavior -> bool ``(N,)``: rows whose ``in_<b>`` flag is shown.
        stats: precomputed counts of ``blog`` (computed here when None).

    Returns:
        ``{"user", "item"}`` int64 model ids and every :func:`numeric_features` name, float32
        ``(N,)``. History sequences are added per batch by :class:`PairData`.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    stats = stats or _Stats.of(blog, config.behaviors)
    shown = np.ones(len(users), dtype=bool) if known is None else known
    own = {b: blog.contains(b, users, items) for b in config.behaviors}
    counts = {b: stats.user[b][users] for b in config.behaviors}
    return _assemble(stats, users + _FIRST, items, config, own, own, counts, shown)


def _assemble(
    stats: _Stats,
    user_ids: np.ndarray,
    items: np.ndarray,
    config: MultiBehaviorConfig,
    own_log: Mapping[str, np.ndarray],
    own: Mapping[str, np.ndarray],
    user_counts: Mapping[str, np.ndarray],
    shown: np.ndarray | Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The features of :func:`pair_features` from per-pair facts (shared with the scorer,
    whose users may carry live events the log does not hold).

    Args:
        stats: counts of the log.
        user_ids: model ids of the users ``(N,)`` (OOV for users the log does not know).
        items: dense item indices ``(N,)``.
        config: the recipe settings.
        own_log: behavior -> bool ``(N,)``: is the pair in the log (subtracted from the
            item counts, which the log made).
        own: behavior -> bool ``(N,)``: is the pair in the user's known behaviors (the log
            plus live events).
        user_counts: behavior -> ``(N,)`` the user's number of items of that behavior.
        shown: bool ``(N,)``: rows whose ``in_<b>`` flags are shown, or auxiliary behavior
            -> bool ``(N,)`` (a behavior left out is shown).
    """
    out: dict[str, np.ndarray] = {"user": user_ids, "item": items + _FIRST}
    if stats.item_class is not None:  # the candidate's category (interest task)
        out[CATEGORY] = stats.item_class[items] + 1
    if isinstance(shown, Mapping):
        every = np.ones(len(items), dtype=bool)
        per = {b: np.asarray(shown.get(b, every), dtype=bool) for b in config.auxiliary}
    else:
        per = {b: np.asarray(shown, dtype=bool) for b in config.auxiliary}
    for b in config.auxiliary:
        out[f"in_{b}"] = (own[b] & per[b]).astype(np.float32)
    if config.hide_mode in ("rows", "copies"):
        row_shown = np.ones(len(items), dtype=bool)
        for b in config.auxiliary:  # one flag for the row: shown when all its flags are
            row_shown &= per[b]
        out[FLAGS_KNOWN] = row_shown.astype(np.float32)
    else:
        for b in config.auxiliary:
            out[f"known_{b}"] = per[b].astype(np.float32)
    others = {b: stats.item[b][items] - own_log[b] for b in config.behaviors}  # leave-user-out
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
        scaled = np.log1p(user_counts[b]) / stats.user_scale[b]
        out[f"user_{b}"] = scaled.astype(np.float32)
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
        out[k] = t.long() if k in ("user", "item", CATEGORY, INTEREST_LABEL) else t.float()
    return out


def training_data(blog: BehaviorLog, config: MultiBehaviorConfig) -> PairData:
    """Training rows: every touched (user, item) pair plus drawn negatives, labelled.

    Touched pairs without the target behavior (e.g. viewed but not bought: the hard
    negatives) are kept with probability ``touched_keep``.

    Args:
        blog: the training log (labels and features both come from it).
        config: the recipe settings.

    With ``hide_mode="rows"`` a share ``hide_fraction`` of the rows have all their
    ``in_<b>`` flags hidden and every auxiliary task learns there; with ``"own"`` each
    auxiliary behavior's flag is hidden on its own draw of rows and that behavior's task
    learns where its own flag is hidden, still seeing the other behaviors' flags (so cart
    learns "carted, given viewed": the funnel step). With ``"copies"`` every row is kept
    with its flags shown (the target learns there, as without auxiliary tasks) and a share
    ``hide_fraction`` of them is appended again with every flag hidden (the auxiliary
    tasks learn there, the target does not: ``target_weight`` 0).

    Returns:
        :class:`PairData` with the :func:`pair_features`, one float 0/1 label column per
        behavior, and the auxiliary tasks' 0/1 masks (:func:`aux_weight_key`: 1 where the
        task's flag is hidden); with :attr:`BehaviorLog.classes`, also ``interest_label``
        (the row's user's :func:`interest_labels`) and ``interest_weight`` (0 for users
        without one).
        Row order: touched pairs sorted by (user, item), then negatives (then, with
        ``"copies"``, the hidden copies in the same order).
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
    target_rows = None
    if config.hide_mode == "copies":
        copied = keys[rng.random(len(keys)) < config.hide_fraction]
        target_rows = np.r_[np.ones(len(keys), bool), np.zeros(len(copied), bool)]
        keys = np.concatenate([keys, copied])
    users, items = keys // blog.n_items, keys % blog.n_items
    known: np.ndarray | dict[str, np.ndarray]
    if target_rows is not None:
        known = target_rows
        hidden = {AUX_WEIGHT: ~known}
    elif config.hide_mode == "rows":
        known = rng.random(len(keys)) >= config.hide_fraction
        hidden = {AUX_WEIGHT: ~known}
    else:
        known = {b: rng.random(len(keys)) >= config.hide_fraction for b in config.auxiliary}
        hidden = {aux_weight_key(config, b): ~k for b, k in known.items()}
    arrays = pair_features(blog, users, items, config, known=known)
    for b in config.behaviors:
        arrays[b] = blog.contains(b, users, items).astype(np.float32)
    for key, h in hidden.items():
        arrays[key] = h.astype(np.float32)
    if target_rows is not None:
        arrays[TARGET_WEIGHT] = target_rows.astype(np.float32)
    if blog.classes is not None:  # per row, its user's interest label (from this log only)
        labels = interest_labels(blog, config.target)[users]
        arrays[INTEREST_LABEL] = np.maximum(labels, 0)
        arrays[INTEREST_WEIGHT] = (labels >= 0).astype(np.float32)
    log.info(
        "training_data: %d rows (%d touched, %d negatives), %.0f%% flags hidden (%s)",
        len(keys),
        len(touched),
        len(neg),
        100 * np.mean([h.mean() for h in hidden.values()]) if len(keys) else 0.0,
        config.hide_mode,
    )
    return PairData(_to_columns(arrays), _histories(blog, config))


def feature_specs(blog: BehaviorLog, config: MultiBehaviorConfig) -> list[FeatureSpec]:
    """Feature specs of the recipe's batches: the id embeddings and histories the config
    asks for (histories share the item table), the candidate's category when the log has
    item classes (interest task), then every :func:`numeric_features` name.

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
    if blog.classes is not None:
        specs.append(CategoricalFeature(CATEGORY, blog.classes.n_classes + 1, d))
    specs.extend(NumericFeature(n) for n in numeric_features(config))
    return specs


def task_specs(config: MultiBehaviorConfig, multi_task: bool = True) -> list[Task]:
    """One binary task per behavior (auxiliary ones masked by ``aux_weight``), or the target
    alone when ``multi_task`` is False."""
    target = Task(config.target, weight_key=target_weight_key(config))
    if not multi_task:
        return [target]
    return [
        target if b == config.target else Task(b, weight_key=aux_weight_key(config, b))
        for b in config.behaviors
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


def _rows_items(csr: Sparse, users: np.ndarray) -> tuple[Tensor, Tensor]:
    """``(rows, items)`` int64: the CSR items of user ``users[r]`` as pairs ``(r, item)``."""
    indptr = csr.indptr.astype(np.int64, copy=False)
    starts, stops = indptr[users], indptr[users + 1]
    lens = stops - starts
    rows = np.repeat(np.arange(len(users)), lens)
    idx = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
    return torch.from_numpy(rows), torch.from_numpy(csr.indices[idx].astype(np.int64))


def _rows_mask(csr: Sparse, users: np.ndarray, n_items: int) -> Tensor:
    """Bool ``(C, n_items)``: row ``r`` marks the CSR items of user ``users[r]``."""
    mask = torch.zeros(len(users), n_items, dtype=torch.bool)
    mask[_rows_items(csr, users)] = True
    return mask


def candidate_mask(
    blog: BehaviorLog,
    users: np.ndarray,
    config: MultiBehaviorConfig,
    retrieval: Tensor,
    csrs: Mapping[str, Sparse] | None = None,
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
    csrs: Mapping[str, Sparse] | None = None,
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
    prob = predict(model, data, batch_size)[config.target].float()
    if config.rule_weight > 0:
        own = {b: blog.contains(b, users[rows], items) for b in config.auxiliary}
        tiebreak = _rule_tiebreak(stats or _Stats.of(blog, config.behaviors), config)
        prob = _blend(prob, rule_scores(own, items, tiebreak, config), config.rule_weight)
    scores = _tail(r)
    scores[torch.from_numpy(rows), torch.from_numpy(items)] = prob
    return scores


# --------------------------------------------------------------------------------------------
# The own-behavior rule ("carted > viewed items first") and its blend with the model
# --------------------------------------------------------------------------------------------


def _rule_tiebreak(stats: _Stats, config: MultiBehaviorConfig) -> np.ndarray:
    """Float64 ``(n_items,)`` in ``[0, 1)``: the rule's tie-break, the item's smoothed
    target-per-first-auxiliary-behavior rate (e.g. buys per view), as :func:`history_baseline`
    with ``tiebreak="rate"``."""
    t = stats.item[config.target].astype(np.float64)
    if config.auxiliary:
        first = stats.item[config.auxiliary[0]].astype(np.float64)
        a = config.rate_prior
        prior = t.sum() / max(first.sum(), 1.0)
        t = (t + a * prior) / (first + a)
    top = t.max() if len(t) else 0.0
    return t / (top * 1.001) if top > 0 else t


def rule_scores(
    own: Mapping[str, np.ndarray],
    items: np.ndarray,
    tiebreak: np.ndarray,
    config: MultiBehaviorConfig,
) -> Tensor:
    """The own-behavior rule's score of candidate pairs, float32 ``(N,)`` in ``[0, 1)``.

    ``(sum_k 2**k [did auxiliary behavior k] + tiebreak[item]) / 2**n_auxiliary``, with the
    auxiliary behaviors in funnel order: carted-and-viewed > carted > viewed, ties by the
    item's rate. It orders pairs exactly as :func:`history_baseline` (``tiebreak="rate"``).

    Args:
        own: auxiliary behavior -> bool ``(N,)``: did the pair's user do it on the item.
        items: dense item indices ``(N,)``.
        tiebreak: ``(n_items,)`` in ``[0, 1)`` (:func:`_rule_tiebreak`).
        config: the recipe settings.
    """
    tier = np.zeros(len(items), dtype=np.float64)
    for k, b in enumerate(config.auxiliary):
        tier += (2.0**k) * np.asarray(own[b], dtype=np.float64)
    rule = (tier + tiebreak[items]) / (2.0 ** len(config.auxiliary))
    return torch.from_numpy(rule.astype(np.float32))


def _blend(prob: Tensor, rule: Tensor, weight: float) -> Tensor:
    """``(1 - weight) * prob + weight * rule``: in ``[0, 1]``; weight 1 is the rule alone."""
    return (1.0 - weight) * prob + weight * rule


def rule_blend_metrics(
    model: nn.Module,
    blog: BehaviorLog,
    users: np.ndarray,
    targets: np.ndarray,
    config: MultiBehaviorConfig,
    weights: Sequence[float],
    *,
    ks: Sequence[int] = (10,),
    max_users: int | None = None,
    per_user: dict[float, dict[str, np.ndarray]] | None = None,
) -> dict[float, dict[str, float]]:
    """Full-ranking metrics of held-out targets for each blend weight of the rule, from one
    forward pass over the candidates (the blend only changes the candidates' scores).

    Args:
        model: a trained model.
        blog: the log it trained on (the held-out pairs removed).
        users: dense indices of the validation users ``(U,)``.
        targets: their held-out items ``(U,)``.
        config: the recipe settings (its own ``rule_weight`` is ignored).
        weights: blend weights in ``[0, 1]`` (0: the model alone, 1: the rule alone).
        ks: cut-offs.
        max_users: a seeded sample of this many users (all when None), as
            :func:`make_evaluator` draws it.
        per_user: an empty dict, filled with weight -> metric -> float64 ``(U,)`` per-user
            values (the users in the same order for every weight, for paired comparisons).

    Returns:
        weight -> :func:`full_ranking_metrics` of the blend.

    Example:
        >>> by_w = rule_blend_metrics(model, fit_log, vu, vi, cfg, (0.0, 0.5, 1.0))
        ... # doctest: +SKIP
    """
    users = np.asarray(users, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if max_users is not None and max_users < len(users):
        pick = np.sort(np.random.default_rng(config.seed).choice(len(users), max_users, False))
        users, targets = users[pick], targets[pick]
    plain = replace(config, rule_weight=0.0)
    histories = _histories(blog, plain)
    stats = _Stats.of(blog, plain.behaviors)
    csrs = {b: blog.csr(b) for b in plain.behaviors}
    tiebreak = _rule_tiebreak(stats, plain)

    def variants(uu: np.ndarray) -> list[Tensor]:
        base = model_scores(
            model, blog, uu, plain, histories=histories, stats=stats, csrs=csrs
        )  # (C, I): candidates hold the model's probability
        pop = popularity_scores(blog, plain.target)(uu)
        cand, _ = candidate_mask(blog, uu, plain, torch.as_tensor(pop).float(), csrs)
        rows, items = cand.nonzero(as_tuple=True)
        own = {b: blog.contains(b, uu[rows.numpy()], items.numpy()) for b in plain.auxiliary}
        rule = rule_scores(own, items.numpy(), tiebreak, plain)
        prob = base[rows, items]
        out = []
        for w in weights:
            s = base.clone()
            s[rows, items] = _blend(prob, rule, float(w))
            out.append(s)
        return out

    arrays: list[dict[str, np.ndarray]] | None = [] if per_user is not None else None
    per = _ranking_sums(
        variants,
        blog,
        users,
        targets,
        target=plain.target,
        ks=ks,
        n_variants=len(weights),
        per_user=arrays,
    )
    if per_user is not None and arrays is not None:
        per_user.update({float(w): a for w, a in zip(weights, arrays, strict=True)})
    return {float(w): m for w, m in zip(weights, per, strict=True)}


def paired_gain(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the paired per-user difference ``a - b``.

    Args:
        a: per-user metric values ``(U,)`` of one ranking.
        b: the same users' values under another ranking ``(U,)``.

    Returns:
        ``(mean(a - b), std(a - b, ddof=1) / sqrt(U))`` (standard error 0 for one user).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        return 0.0, 0.0
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), se


def pick_blend_weight(
    per_user: Mapping[float, np.ndarray], rule: float = 1.0, model: float = 0.0
) -> float:
    """The rule-blend weight by the one-standard-error rule, from validation per-user values.

    The rule (weight ``rule``, no learning) is kept unless a weight beats it by more than one
    standard error of the paired per-user difference (:func:`paired_gain`); among the weights
    that do, the best by mean is taken, but the model alone (weight ``model``) is preferred
    to a blend unless the blend beats it by more than one standard error too. So a pick that
    leaves the rule, or adds the rule to the model, has to win by more than chance on the
    validation users; a weight missing from ``per_user`` is skipped in its step.

    Args:
        per_user: weight -> per-user metric values ``(U,)`` (the same users, same order).
        rule: the weight that ranks as the rule alone.
        model: the weight that ranks as the model alone.

    Returns:
        The picked weight.

    Example:
        >>> hits = {0.0: np.array([1, 0, 1, 1.0]), 1.0: np.array([1, 0, 1, 0.0])}
        >>> pick_blend_weight(hits)  # +0.25 with standard error 0.25: not beyond one SE
        1.0
    """
    if not per_user:
        raise ValueError("pick_blend_weight needs at least one weight")
    weights = sorted(per_user)

    def beats(a: float, b: float) -> bool:
        gain, se = paired_gain(per_user[a], per_user[b])
        return gain > se and gain > 0

    safe = [w for w in weights if rule not in per_user or w == rule or beats(w, rule)]
    best = max(safe, key=lambda w: (float(np.mean(per_user[w])), -w))
    if best not in (model, rule) and model in safe and not beats(best, model):
        best = model
    return best


def history_baseline(
    blog: BehaviorLog, config: MultiBehaviorConfig, tiebreak: str = "rate"
) -> Retrieval:
    """A no-learning baseline as a score function: the user's own auxiliary-behavior items
    first, everything else by the tie-break.

    Score = sum over auxiliary behaviors ``b`` (funnel position ``k``) of ``2**k * [did b]``
    (so carted-and-viewed > carted > viewed > untouched), plus a tie-break in ``[0, 1)``:
    ``"rate"`` — the item's smoothed target-per-first-behavior rate (e.g. buys per view),
    ``"popularity"`` — its target-behavior count. Only counting, no fitting. The counts and
    per-behavior CSRs are built once here, so scoring a chunk of users is one dense fill.

    Args:
        blog: the log.
        config: the recipe settings (behaviors, target, ``rate_prior``).
        tiebreak: ``"rate"`` or ``"popularity"``.

    Returns:
        dense user indices ``(C,)`` -> float32 ``(C, n_items)``.

    Example:
        >>> score = history_baseline(blog, MultiBehaviorConfig())  # doctest: +SKIP
        >>> full_ranking_metrics(score, blog, users, items, target="buy")  # doctest: +SKIP
    """
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
    base = torch.from_numpy(tb.astype(np.float32))
    csrs = [(2.0**k, blog.csr(b)) for k, b in enumerate(config.auxiliary)]

    def scores(users: np.ndarray) -> Tensor:
        users = np.asarray(users, dtype=np.int64)
        out = base.unsqueeze(0).repeat(len(users), 1)  # (C, I)
        for weight, csr in csrs:  # only the user's own items change: a sparse add
            rows, items = _rows_items(csr, users)  # unique pairs
            out[rows, items] += weight
        return out

    return scores


def history_baseline_scores(
    blog: BehaviorLog,
    users: np.ndarray,
    config: MultiBehaviorConfig,
    tiebreak: str = "rate",
) -> Tensor:
    """:func:`history_baseline` for one chunk of users, float32 ``(C, n_items)``.

    It builds the counts and CSRs on every call: to score many chunks, build the score
    function once with :func:`history_baseline` instead.
    """
    return history_baseline(blog, config, tiebreak)(users)


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
        names them (``hr@10``, ``ndcg@10``, ...), plus ``users``.
    """
    return _ranking_sums(
        lambda uu: [scorer(uu)], blog, users, targets, target=target, ks=ks, chunk_size=chunk_size
    )[0]


def _ranking_sums(
    scorers: Callable[[np.ndarray], Sequence[np.ndarray | Tensor]],
    blog: BehaviorLog,
    users: np.ndarray,
    targets: np.ndarray,
    *,
    target: str,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 1024,
    n_variants: int = 1,
    per_user: list[dict[str, np.ndarray]] | None = None,
) -> list[dict[str, float]]:
    """:func:`full_ranking_metrics` of ``n_variants`` score variants of each chunk of users
    (``scorers(users) -> [scores (C, n_items), ...]``), one metrics dict per variant; with
    ``per_user`` (an empty list), it is filled with one dict per variant of metric -> float64
    ``(U,)`` per-user values in the order of ``users`` (0 for an unknown user or target)."""
    users = np.asarray(users, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    ok = (users >= 0) & (targets >= 0)
    if not ok.all():
        log.warning(
            "full_ranking_metrics: %d unknown users or targets count as misses", (~ok).sum()
        )
    excl = blog.csr(target)
    sums: list[dict[str, float]] = [{} for _ in range(n_variants)]
    parts: list[dict[str, list[np.ndarray]]] = [{} for _ in range(n_variants)]
    u_ok, t_ok = users[ok], targets[ok]
    for start in range(0, len(u_ok), chunk_size):
        uu, tt = u_ok[start : start + chunk_size], t_ok[start : start + chunk_size]
        shape = (len(uu), excl.shape[1])
        rel = sp.csr_array((np.ones(len(tt), bool), tt, np.arange(len(uu) + 1)), shape=shape)
        exc = excl[uu]
        for v, scores in enumerate(scorers(uu)):
            s = torch.as_tensor(scores)
            per = ranking_metrics(s, rel, exc, ks=ks, chunk_size=chunk_size, per_user=True)
            for name, values in per.items():
                sums[v][name] = sums[v].get(name, 0.0) + float(np.nansum(values))
                if per_user is not None:
                    parts[v].setdefault(name, []).append(np.nan_to_num(values))
    if per_user is not None:
        for part in parts:
            full = {}
            for name, chunks in part.items():
                full[name] = np.zeros(len(users), dtype=np.float64)
                full[name][ok] = np.concatenate(chunks)
            per_user.append(full)
    n = max(len(users), 1)
    out = []
    for part in sums:
        m = {name: total / n for name, total in part.items()}
        m["users"] = float(len(users))
        out.append(m)
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
    name: str | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """A validation hook for :func:`~shoprec.train.loop.fit`: full-ranking metrics of the
    target behavior, keys ``<name>/hr@k`` and ``<name>/ndcg@k`` (lower case, as every metric
    key of shoprec).

    Args:
        blog: the log the model trains on (the held-out pairs removed).
        users: dense indices of the validation users.
        targets: their held-out items.
        config: the recipe settings.
        retrieval: the candidate and tail score.
        ks: cut-offs.
        max_users: score a seeded sample of this many users (all when None).
        name: the key prefix: the target task's name (default: the target behavior).

    Example:
        >>> ev = make_evaluator(fit_log, users, items, cfg, max_users=3000)  # doctest: +SKIP
        >>> fit(model, data, config=TrainConfig(monitor="buy/ndcg@10"), evaluator=ev)
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
    prefix = name or config.target

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
        return {f"{prefix}/{k}": v for k, v in m.items() if k.split("@")[0] in {"hr", "ndcg"}}

    return evaluate


# --------------------------------------------------------------------------------------------
# The recipe behind the front door: options, fit, and the scorer an artifact keeps
# --------------------------------------------------------------------------------------------


class MultiBehaviorOptions(RecipeOptions):
    """``recipe:`` options of ``multibehavior`` (:class:`MultiBehaviorConfig`'s fields, plus
    how validation is run). The target is the config's target task; the embedding size is
    ``model.embedding_dim``."""

    behaviors: tuple[str, ...] | None = None  # read from the log, funnel order (None: tasks')
    user_id: bool = False  # a user-id embedding (lets the model memorise pairs)
    item_id: bool = False  # an item-id embedding (needed by any history)
    histories: tuple[str, ...] = ()  # behaviors given as id sequences, e.g. [view, buy]
    max_history: int = Field(16, ge=1)  # items kept per history (a seeded subset when longer)
    attention: tuple[str, ...] = ()  # histories pooled by DIN attention; others: mean
    n_negatives: int = Field(2, ge=0)  # uniform untouched items per target-behavior pair
    touched_keep: float = Field(1.0, gt=0.0, le=1.0)  # share of touched non-target pairs kept
    hide_fraction: float = Field(0.5, ge=0.0, lt=1.0)  # rows whose in_<b> flags are hidden
    rate_prior: float = Field(10.0, gt=0.0)  # pseudo-count of the item_rate_<b> features
    n_retrieved: int = Field(0, ge=0)  # popular candidates per user besides the own items
    seed: int = 0  # of negatives, hidden rows and history subsets
    retrain_on_full: bool = True  # refit on train + valid for the selected number of epochs
    validation_users: int | None = Field(None, gt=0)  # a seeded sample scored per epoch
    hold_out_seed: int = 0  # the hold-out draw when the split has no target-behavior valid
    # How the auxiliary tasks learn what the target lacks: "rows" hides every in_<b> flag on
    # a share hide_fraction of the rows (the auxiliary tasks learn there); "own" hides each
    # flag on its own draw, and task b learns where its own flag is hidden while seeing the
    # other flags (cart learns "carted given viewed", the funnel step); "copies" keeps every
    # row shown for the target (which learns only there, as single-task would) and adds a
    # share hide_fraction of the rows again with every flag hidden, for the auxiliary tasks.
    hide_mode: Literal["rows", "own", "copies"] = "rows"
    # The own-behavior rule (carted > viewed, ties by buys per view) blended into the
    # candidates' score: (1 - w) * p(target) + w * rule, w picked from rule_weights on the
    # validation targets after the epoch is selected (0: the model alone, 1: the rule alone,
    # so the pick is never below the rule on validation). false: the model alone (w = 0).
    rule_blend: bool = True
    rule_weights: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    # How the weight is picked: "one_se" keeps the rule (w = 1) unless a weight beats it on
    # validation by more than one standard error of the paired per-user difference, and the
    # model alone (w = 0) over a blend unless the blend beats it by more than one standard
    # error (pick_blend_weight); "best": the best validation mean (ties to the smaller w).
    rule_pick: Literal["one_se", "best"] = "one_se"

    @model_validator(mode="after")
    def _consistent(self) -> MultiBehaviorOptions:
        if self.histories and not self.item_id:
            raise ValueError("histories share the item-id embedding table: set item_id: true")
        if not set(self.attention) <= set(self.histories):
            raise ValueError(f"attention {list(self.attention)} must name histories")
        named = set(self.histories) | set(self.attention)
        if self.behaviors is not None and not named <= set(self.behaviors):
            raise ValueError(f"histories name behaviors outside {list(self.behaviors)}")
        if not self.rule_weights or not all(0.0 <= w <= 1.0 for w in self.rule_weights):
            raise ValueError(
                f"rule_weights must be one or more weights in [0, 1] (0: the model alone, 1: "
                f"the rule alone), got {list(self.rule_weights)}"
            )
        return self


def _users_mask(csr: Sparse, dense: np.ndarray, n_items: int) -> Tensor:
    """Bool ``(C, n_items)``: row ``r`` marks the CSR items of dense user ``dense[r]``; rows
    of unknown users (``-1``) stay empty."""
    known = dense >= 0
    if known.all():
        return _rows_mask(csr, dense, n_items)
    mask = torch.zeros(len(dense), n_items, dtype=torch.bool)
    if known.any():
        rows = np.flatnonzero(known)
        mask[torch.from_numpy(rows)] = _rows_mask(csr, dense[known], n_items)
    return mask


def _fallback(counts: np.ndarray) -> Tensor:
    """Item counts as a fallback order in ``[0.5, 1]`` (scaled below the candidates later)."""
    c = counts.astype(np.float64)
    top = c.max() if len(c) else 0.0
    norm = c / top if top > 0 else np.zeros_like(c)
    return torch.from_numpy((0.5 + 0.5 * norm).astype(np.float32))


class MultiBehaviorScorer(Scorer):
    """Scores users x items from their own behaviors: the model's probabilities for the
    candidates (the user's auxiliary-behavior items not yet of the target behavior, plus
    ``n_retrieved`` popular ones), a popularity fallback below them for every other item.

    Each task's candidates get the model's probability of that task: the target's from rows
    with the user's own behavior flags shown, the auxiliary tasks' from rows with them hidden
    (how those tasks learned: to predict a behavior from the rest of the log). Every other
    item gets ``low * (0.5 + 0.5 * count / max count)`` of that task's behavior, with ``low``
    half the user's lowest candidate probability and at most ``1e-6``, so the order within a
    user is candidates, then popularity, and every score stays positive.

    Users the log does not know score by popularity; live ``events`` join a user's behaviors
    (a live cart makes the item a candidate with ``in_cart = 1``, a live purchase excludes it
    from the candidates). Id-sequence histories are read from the log only.

    With a multi-class ``interest`` task (the category of the user's next purchase), its
    per-item score is the user's interest distribution read at the item's category: the mean
    of the interest head's class probabilities over the user's candidate rows (the class
    prior of the training labels for users without candidates). It is the same for every
    item of a category and sums to 1 over the categories, so ``fusion: buy*interest``
    re-ranks p(buy) towards the categories the user is likely to buy from next.

    Args:
        model: the trained model (tasks named as the config's tasks).
        blog: the log features are read from (train + valid).
        config: the recipe settings.
        behaviors: task name -> the behavior it predicts (binary tasks).
        target: the target task's name.
        interest: the multi-class interest task's name (``blog.classes`` must be set).
    """

    recipe: ClassVar[str] = "multibehavior"
    FORMAT: ClassVar[str] = "shoprec.multibehavior"
    VERSION: ClassVar[int] = 1
    #: Pair cells (users x items) held at once while scoring.
    MAX_CELLS: ClassVar[int] = 1 << 23

    def __init__(
        self,
        model: nn.Module,
        blog: BehaviorLog,
        config: MultiBehaviorConfig,
        behaviors: Mapping[str, str],
        target: str,
        interest: str | None = None,
    ) -> None:
        tasks = list(behaviors) + ([interest] if interest else [])
        super().__init__(tasks, target, blog.items.values)
        if behaviors[target] != config.target:
            raise ValueError(f"target task {target!r} does not predict {config.target!r}")
        if interest and blog.classes is None:
            raise ValueError(f"interest task {interest!r} needs a log with item classes")
        self.interest = interest
        self.model = model.eval()
        self.blog = blog
        self.config = config
        self.behaviors = dict(behaviors)
        self._stats = _Stats.of(blog, config.behaviors)
        self._csrs = {b: blog.csr(b) for b in config.behaviors}
        self._histories = _histories(blog, config)
        self._fallback = {b: _fallback(self._stats.item[b]) for b in set(self.behaviors.values())}
        self._popularity = torch.from_numpy(self._stats.item[config.target].astype(np.float32))
        self._explain_model: nn.Module | None = None

    # ------------------------------------------------------------------ scoring

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Every task's scores for ``users`` x the items at ``positions`` (see the class)."""
        return self._score(users, positions, events, self.tasks)

    def rank_scores(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> np.ndarray:
        """The target task's scores only (one forward pass over the candidates)."""
        return self._score(users, positions, events, [self.target])[self.target]

    def _score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None,
        events: pl.DataFrame | None,
        tasks: Sequence[str],
    ) -> dict[str, np.ndarray]:
        users = [str(u) for u in users]
        pos = positions_or_all(positions, self.n_items)
        live = self._live(users, events_of(events, users))
        out = {t: np.empty((len(users), len(pos)), dtype=np.float32) for t in tasks}
        step = max(1, self.MAX_CELLS // max(self.n_items, 1))
        dense = self.blog.user_index(users) if users else np.zeros(0, dtype=np.int64)
        for start in range(0, len(users), step):
            stop = min(start + step, len(users))
            part = self._chunk(dense[start:stop], live, start, stop, pos, tasks)
            for t in tasks:
                out[t][start:stop] = part[t]
        return out

    def _live(self, users: list[str], events: pl.DataFrame | None) -> dict[str, np.ndarray]:
        """Live events as behavior -> int64 ``(N, 2)`` (request row, dense item)."""
        if events is None:
            return {}
        rows = pl.DataFrame({"user": users, "row": np.arange(len(users))})
        ids = [pl.col(c).cast(pl.String) for c in EVENT_COLUMNS]
        ev = events.select(ids).join(rows, on="user")
        ev = ev.filter(pl.col("behavior").is_in(list(self.config.behaviors)))
        item = self.blog.item_index(ev["item"])
        keep = item >= 0
        if not keep.all():
            log.debug("%d live events of items the scorer does not know", (~keep).sum())
        row, beh = ev["row"].to_numpy()[keep], ev["behavior"].to_numpy()[keep]
        return {
            b: np.stack([row[beh == b], item[keep][beh == b]], axis=1).astype(np.int64)
            for b in self.config.behaviors
            if (beh == b).any()
        }

    def _chunk(
        self,
        dense: np.ndarray,
        live: Mapping[str, np.ndarray],
        start: int,
        stop: int,
        pos: np.ndarray,
        tasks: Sequence[str],
    ) -> dict[str, np.ndarray]:
        cfg, n = self.config, self.n_items
        logged = {b: _users_mask(self._csrs[b], dense, n) for b in cfg.behaviors}
        known = dict(logged)
        n_known = {
            b: np.where(dense >= 0, self._stats.user[b][np.maximum(dense, 0)], 0)
            for b in cfg.behaviors
        }
        for b, pairs in live.items():
            sel = (pairs[:, 0] >= start) & (pairs[:, 0] < stop)
            if sel.any():
                new = np.unique(pairs[sel] - [start, 0], axis=0)
                r, i = torch.from_numpy(new[:, 0]), torch.from_numpy(new[:, 1])
                added = ~logged[b][r, i].numpy()
                n_known[b] = n_known[b] + np.bincount(new[added, 0], minlength=len(dense))
                known[b] = logged[b].clone()
                known[b][r, i] = True
        excluded = known[cfg.target]
        cand = torch.zeros_like(excluded)
        for b in cfg.auxiliary:
            cand |= known[b]
        k = min(cfg.n_retrieved, n)
        if k > 0:
            r = self._popularity.unsqueeze(0).expand(len(dense), -1)
            top = r.masked_fill(excluded | cand, float("-inf")).topk(k, dim=1)
            picked = torch.zeros_like(cand)
            picked.scatter_(1, top.indices, torch.isfinite(top.values))
            cand |= picked
        cand = cand & ~excluded
        if len(pos) != n or (pos != np.arange(n)).any():
            cand = cand[:, torch.from_numpy(pos)]
        rows_t, cols_t = cand.nonzero(as_tuple=True)
        rows, items = rows_t.numpy(), pos[cols_t.numpy()]
        items_t = torch.from_numpy(items)
        own_log = {b: logged[b][rows_t, items_t].numpy() for b in cfg.behaviors}
        own = {b: known[b][rows_t, items_t].numpy() for b in cfg.behaviors}
        counts = {b: n_known[b][rows] for b in cfg.behaviors}
        user_ids = np.where(dense >= 0, dense + _FIRST, OOV)[rows]
        probs: dict[str, Tensor] = {}
        targets = [t for t in tasks if t == self.target or t == self.interest]
        aux = [t for t in tasks if t not in targets]
        every, none = np.ones(len(rows), dtype=bool), np.zeros(len(rows), dtype=bool)
        passes: list[tuple[np.ndarray | dict[str, np.ndarray], list[str]]] = [(every, targets)]
        if cfg.hide_mode in ("rows", "copies"):  # auxiliary tasks learned with flags hidden
            passes.append((none, aux))
        else:  # each auxiliary task learned with its own behavior's flag hidden
            passes.extend(({self.behaviors[t]: none}, [t]) for t in aux)
        for flags, wanted in passes:
            if not wanted or not len(rows):
                continue
            arrays = _assemble(self._stats, user_ids, items, cfg, own_log, own, counts, flags)
            preds = predict(self.model, PairData(_to_columns(arrays), dict(self._histories)), 8192)
            for t in wanted:
                probs[t] = preds[t].float()
        if self.target in probs and cfg.rule_weight > 0:
            rule = rule_scores(own, items, _rule_tiebreak(self._stats, cfg), cfg)
            probs[self.target] = _blend(probs[self.target], rule, cfg.rule_weight)
        out = {}
        for t in tasks:
            if t == self.interest:
                out[t] = self._interest_scores(rows_t, probs.get(t), len(dense), pos)
                continue
            fb = self._fallback[self.behaviors[t]][torch.from_numpy(pos)]
            low = torch.full((len(dense),), 2e-6)  # per user: half its lowest candidate
            if t in probs:
                p = probs[t].clamp(min=1e-30)
                low = low.scatter_reduce(0, rows_t, p, reduce="amin")
            s = (0.5 * low).unsqueeze(1) * fb.unsqueeze(0)  # (C, P)
            if t in probs:
                s[rows_t, cols_t] = p
            out[t] = s.numpy()
        return out

    def _interest_scores(
        self, rows: Tensor, probs: Tensor | None, n_users: int, pos: np.ndarray
    ) -> np.ndarray:
        """``(C, P)``: each user's mean class distribution over its candidate rows (the
        prior without any), read at each item's class."""
        classes = self.blog.classes
        assert classes is not None
        prior = torch.from_numpy(classes.prior.astype(np.float32))
        dist = prior.unsqueeze(0).repeat(n_users, 1)
        if probs is not None and len(rows):
            sums = torch.zeros_like(dist).index_add_(0, rows, probs.reshape(len(rows), -1))
            n = torch.bincount(rows, minlength=n_users)
            has = n > 0
            dist[has] = sums[has] / n[has].unsqueeze(1).float()
        return dist[:, torch.from_numpy(classes.of_item[pos])].numpy()

    # ------------------------------------------------------------------ explanations

    def _pair_batch(self, user: str, position: int) -> dict[str, Tensor] | None:
        """The target pass's model inputs of one candidate pair (None when the item is not a
        candidate of the user, i.e. scored by the fallback)."""
        dense = self.blog.user_index([user])
        pos = np.array([position], dtype=np.int64)
        cfg = self.config
        logged = {b: _users_mask(self._csrs[b], dense, self.n_items)[:, pos] for b in cfg.behaviors}
        if logged[cfg.target].any() or not any(logged[b].any() for b in cfg.auxiliary):
            return None
        own = {b: m[0].numpy() for b, m in logged.items()}
        counts = {
            b: self._stats.user[b][dense] if dense[0] >= 0 else np.zeros(1, np.int64)
            for b in cfg.behaviors
        }
        user_ids = np.where(dense >= 0, dense + _FIRST, OOV)
        arrays = _assemble(self._stats, user_ids, pos, cfg, own, own, counts, np.ones(1, bool))
        return PairData(_to_columns(arrays), dict(self._histories)).take(torch.arange(1))

    def feature_attributions(
        self, user: str, position: int, log_score: Any, steps: int = 64
    ) -> tuple[dict[str, float], dict[str, Any], float, float] | None:
        """Integrated gradients of one candidate pair's fused log score (None otherwise).

        They explain the model's probability; with a rule blend (``rule_weight > 0``) the
        rule's share of the served score is not attributed to features."""
        import copy

        from shoprec.recommend.explain import integrated_gradients

        batch = self._pair_batch(user, position)
        if batch is None:
            return None
        if self._explain_model is None:  # IG swaps input layers while it runs: a private copy
            self._explain_model = copy.deepcopy(self.model).eval()
        ig = integrated_gradients(self._explain_model, batch, log_score, steps)  # type: ignore[arg-type]
        raw = {k: float(v[0]) for k, v in batch.items() if k not in ("user", "item")}
        return ig.attributions, raw, ig.value, ig.baseline_value

    def gate_weights(self, user: str, position: int) -> dict[str, list[float]] | None:
        """Expert gate weights per task of one candidate pair (mixture-of-experts models)."""
        batch = self._pair_batch(user, position)
        if batch is None or not hasattr(self.model, "gate_weights"):
            return None
        with torch.no_grad():
            g = self.model.gate_weights(batch)
        return {t: [round(float(x), 6) for x in v[0]] for t, v in g.items()}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": getattr(self.model, "model_name", type(self.model).__name__),
            "behaviors": list(self.config.behaviors),
            **({"interest_classes": self.blog.classes.n_classes} if self.blog.classes else {}),
            "users": self.blog.n_users,
            "items": self.blog.n_items,
        }

    # ------------------------------------------------------------------ persistence

    def forget_users(self, users: Sequence[str]) -> dict[str, int]:
        """Their id tombstoned (now unknown), their (user, item) pairs of every behavior
        removed (history, exclusions, statistics) and their user embedding rows zeroed."""
        from shoprec.forget import forget_ids, zero_embedding_rows

        blog = self.blog
        ids_map, ids = forget_ids(blog.users, users)
        if ids.size == 0:
            return {"ids": 0, "pair_rows": 0, "embedding_rows": 0}
        dense = ids - _FIRST
        keys, removed = {}, 0
        for b, k in blog.keys.items():
            keep = ~np.isin(k // blog.n_items, dense)
            removed += int((~keep).sum())
            keys[b] = k[keep]
        rows = zero_embedding_rows(self.model, "user", ids)
        # the statistics, histories and caches built from the log, built again
        self.__init__(  # type: ignore[misc]
            self.model, BehaviorLog(ids_map, blog.items, keys, blog.classes), self.config,
            self.behaviors, self.target, self.interest,
        )  # fmt: skip
        return {"ids": int(ids.size), "pair_rows": removed, "embedding_rows": rows}

    def save(self, directory: Path) -> None:
        """``multibehavior.json`` (settings), ``ids.json`` (user and item ids),
        ``log.parquet`` (dense pairs per behavior) and ``model/`` (safetensors)."""
        import json

        from shoprec.models import save_model

        directory = Path(directory)
        meta = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "config": asdict(self.config),
            "tasks": self.behaviors,
            "target": self.target,
            "interest": self.interest,
        }
        (directory / "multibehavior.json").write_text(json.dumps(meta, indent=2) + "\n")
        ids = {"users": list(self.blog.users.values), "items": list(self.blog.items.values)}
        (directory / "ids.json").write_text(json.dumps(ids) + "\n")
        frames = []
        for b in self.config.behaviors:
            u, i = self.blog.pairs(b)
            frames.append(pl.DataFrame({"behavior": b, "user": u, "item": i}))
        pl.concat(frames).write_parquet(directory / "log.parquet")
        if self.blog.classes is not None:
            c = self.blog.classes
            classes = {"names": list(c.names), "prior": c.prior.tolist()}
            (directory / "classes.json").write_text(json.dumps(classes) + "\n")
            pl.DataFrame({"class": c.of_item}).write_parquet(directory / "item_classes.parquet")
        save_model(self.model, directory / "model")  # type: ignore[arg-type]

    @classmethod
    def load(cls, directory: Path) -> MultiBehaviorScorer:
        """Read what :meth:`save` wrote."""
        import json

        from shoprec.models import config_from_dict, load_model

        directory = Path(directory)
        meta = json.loads((directory / "multibehavior.json").read_text())
        if meta.get("format") != cls.FORMAT or meta.get("version") != cls.VERSION:
            raise ValueError(f"{directory} holds no {cls.FORMAT} v{cls.VERSION} scorer")
        config = config_from_dict(MultiBehaviorConfig, meta["config"])
        ids = json.loads((directory / "ids.json").read_text())
        users, items = IdMap("user", tuple(ids["users"])), IdMap("item", tuple(ids["items"]))
        pairs = pl.read_parquet(directory / "log.parquet")
        keys = {}
        for b in config.behaviors:
            part = pairs.filter(pl.col("behavior") == b)
            k = part["user"].to_numpy().astype(np.int64) * len(items) + part["item"].to_numpy()
            keys[b] = np.unique(k)
        classes = None
        if (directory / "classes.json").exists():
            c = json.loads((directory / "classes.json").read_text())
            of_item = pl.read_parquet(directory / "item_classes.parquet")["class"].to_numpy()
            classes = ItemClasses(tuple(c["names"]), of_item.astype(np.int64), np.array(c["prior"]))
        blog = BehaviorLog(users, items, keys, classes)
        model = load_model(directory / "model")
        return cls(model, blog, config, meta["tasks"], meta["target"], meta.get("interest"))


class MultiBehaviorRecipe(Recipe):
    """Rank items for a target behavior from the user's own behaviors (see the module doc).

    Config::

        data: {dataset: tmall}
        split: {kind: given}
        recipe: {name: multibehavior, hide_fraction: 0.5, n_negatives: 2}
        tasks: [view, cart, buy]          # one binary task per behavior; the last ranks
        model: {name: mmoe, config: {n_experts: 4}}
        train: {epochs: 4, lr: 0.002, patience: 1}
        evaluate: {protocol: full, ks: [10, 20]}

    ``fit`` builds the :class:`BehaviorLog` of the train part, takes the validation targets
    from ``split.valid`` (its target-behavior pairs not already in train) or, without them,
    holds one target item out per user (:func:`hold_out_one`), trains the configured model
    with the one loop, selecting the epoch by full-ranking ``<target>/ndcg@k`` of those
    targets, and (``retrain_on_full``) refits on train + valid for that many epochs.

    An auxiliary multi-class interest task, the category of the user's next purchase::

        tasks: [view, cart, buy, {name: interest, kind: multiclass}]

    ``n_classes`` is inferred (the catalog's categories + 1 for items without one; a given
    value must match), ``label:`` names the catalog column (default ``category``). Its label
    on every row of a user is the category the user bought most in the training window
    (:func:`interest_labels`: the train part, less the held-out validation pairs, at the
    refit train + valid; never the test part); users without a purchase are masked out. The
    candidate's category becomes an input feature. The ranking stays the target task's
    (the last binary task); the scorer's ``interest`` score is the user's interest
    distribution mapped onto each item's category (see :class:`MultiBehaviorScorer`), for
    fusions such as ``buy*interest``.
    """

    name: ClassVar[str] = "multibehavior"
    Options: ClassVar[type[RecipeOptions]] = MultiBehaviorOptions
    default_tasks: ClassVar[tuple[str, ...]] = ("view", "cart", "buy")
    scorer_class: ClassVar[type[Scorer]] = MultiBehaviorScorer

    @property
    def target(self) -> str:
        """``evaluate.target`` when it names a binary task, else the last binary task."""
        t = self.config.evaluate.target
        binary = list(self.task_behaviors)
        return t if t in binary else binary[-1]

    @property
    def interest_task(self) -> Any:
        """The config's multi-class interest task section (None without one)."""
        found = [t for t in self.config.tasks if t.kind == "multiclass"]
        if len(found) > 1:
            raise ConfigError(
                f"the multibehavior recipe learns one multi-class interest task; tasks "
                f"{[t.name for t in found]} are all kind: multiclass"
            )
        return found[0] if found else None

    @property
    def task_behaviors(self) -> dict[str, str]:
        """Task name -> the behavior it predicts (binary tasks only; the multi-class
        interest task is :attr:`interest_task`)."""
        out = {}
        for t in self.config.tasks:
            if t.kind == "multiclass":
                continue
            if t.kind != "binary":
                raise ConfigError(
                    f"the multibehavior recipe learns binary behaviors; task '{t.name}' is "
                    f"{t.kind} (use recipe: windows for quantities)"
                )
            out[t.name] = t.behavior or t.name
        if not out and self.config.tasks:
            raise ConfigError(
                "the multibehavior recipe ranks by a binary behavior task: tasks has only "
                f"{[t.name for t in self.config.tasks]}; add e.g. view, cart, buy before it"
            )
        return out or {b: b for b in self.default_tasks}

    def recipe_config(self) -> MultiBehaviorConfig:
        """The :class:`MultiBehaviorConfig` of this experiment (raises :class:`ConfigError`
        on settings that cannot work together)."""
        o = self.options
        tasks = self.task_behaviors
        target = tasks[self.target]
        behaviors = tuple(o.behaviors) if o.behaviors else tuple(dict.fromkeys(tasks.values()))
        missing = sorted(set(tasks.values()) - set(behaviors))
        if missing:
            raise ConfigError(
                f"tasks predict behaviors {missing} that recipe.behaviors {list(behaviors)} "
                "leaves out"
            )
        if len(behaviors) < 2:
            raise ConfigError(
                f"the multibehavior recipe ranks the items of the user's other behaviors; with "
                f"behaviors {list(behaviors)} there are none: add e.g. view or cart to tasks "
                "(or recipe.behaviors), or use recipe: pairs"
            )
        if len(tasks) > 1 and o.hide_fraction <= 0.0:
            raise ConfigError(
                "the auxiliary tasks learn only on rows whose own-behavior flags are hidden: "
                "set recipe.hide_fraction > 0 (e.g. 0.5) or train the target task alone"
            )
        try:
            return MultiBehaviorConfig(
                behaviors=behaviors,
                target=target,
                user_id=o.user_id,
                item_id=o.item_id,
                histories=tuple(o.histories),
                max_history=o.max_history,
                attention=tuple(o.attention),
                embedding_dim=self.config.model.embedding_dim,
                n_negatives=o.n_negatives,
                touched_keep=o.touched_keep,
                hide_fraction=o.hide_fraction,
                rate_prior=o.rate_prior,
                n_retrieved=o.n_retrieved,
                seed=o.seed,
                hide_mode=o.hide_mode,
            )
        except ValueError as e:
            raise ConfigError(f"recipe: {e}") from None

    def task_specs(self, config: MultiBehaviorConfig) -> list[Task]:
        """One binary task per configured task; the auxiliary ones learn on hidden rows."""
        out = []
        for name, b in self.task_behaviors.items():
            label = None if b == name else b
            weight_key = (
                target_weight_key(config) if name == self.target else aux_weight_key(config, b)
            )
            out.append(Task(name, label=label, weight_key=weight_key))
        interest = self.interest_task
        if interest is not None:
            n = getattr(self, "_interest_names", None)
            if n is None:
                raise ValueError("the interest task's classes are read from the data in fit")
            if interest.n_classes is not None and interest.n_classes != len(n):
                raise ConfigError(
                    f"task '{interest.name}': n_classes {interest.n_classes} does not match "
                    f"the catalog's {len(n) - 1} categories + 1 for unknown = {len(n)}; "
                    "leave n_classes out to infer it"
                )
            out.append(
                Task(interest.name, "multiclass", len(n), None, INTEREST_LABEL, INTEREST_WEIGHT)
            )
        return out

    def _classes(self, dataset: Dataset, blog: BehaviorLog) -> tuple[tuple[str, ...], np.ndarray]:
        """The items' classes for the interest task, read from the catalog."""
        t = self.interest_task
        catalog = None if dataset.catalog is None else dataset.catalog.df
        names, of_item = item_classes(catalog, blog.items, t.label or "category", t.name)
        self._interest_names = names
        return names, of_item

    def logs(
        self, dataset: Dataset, split: Split, config: MultiBehaviorConfig
    ) -> tuple[BehaviorLog, BehaviorLog, np.ndarray, np.ndarray]:
        """``(fit log, full log, validation users, validation items)``, dense indices.

        The fit log is the train part (less the held-out pairs when they are drawn from it);
        the full log adds the valid part. Ids cover train, valid and the catalog, sorted.
        """
        names = list(config.behaviors)
        train = split.train.df.filter(pl.col("behavior").is_in(names))
        present = set(train["behavior"].unique().to_list())
        absent = [b for b in names if b not in present]
        if absent:
            raise ConfigError(
                f"behaviors {absent} have no events in the training part (it has "
                f"{sorted(present) or 'none of ' + str(names)}); set tasks: (and "
                "recipe.behaviors) to behaviors the data has"
            )
        valid = split.valid.df.filter(pl.col("behavior").is_in(names)) if split.valid else None
        frames = [train] if valid is None else [train, valid]
        user_values = pl.concat([f["user"] for f in frames])
        item_values = pl.concat([f["item"] for f in frames])
        if dataset.catalog is not None:
            item_values = pl.concat([item_values, dataset.catalog.df["item"]])
        users = IdMap("user", tuple(user_values.unique().sort().to_list()))
        items = IdMap("item", tuple(item_values.unique().sort().to_list()))
        fit_log = BehaviorLog.from_interactions(Interactions(train), names, users, items)
        target_valid = None if valid is None else valid.filter(pl.col("behavior") == config.target)
        if target_valid is not None and target_valid.height:
            full_log = BehaviorLog.from_interactions(
                Interactions(pl.concat([train, valid], how="vertical_relaxed")),
                names,
                users,
                items,
            )
            vu = fit_log.user_index(target_valid["user"])
            vi = fit_log.item_index(target_valid["item"])
            keys = np.unique(vu * fit_log.n_items + vi)  # one row per (user, item)
            keys = keys[~np.isin(keys, fit_log.keys[config.target])]  # new target pairs only
            return fit_log, full_log, keys // fit_log.n_items, keys % fit_log.n_items
        if valid is not None and valid.height:
            log.warning(
                "the valid part has no '%s' events: holding one out per user from train",
                config.target,
            )
        held, vu, vi = hold_out_one(fit_log, config.target, seed=self.options.hold_out_seed)
        return held, fit_log, vu, vi

    def _model(self, blog: BehaviorLog, config: MultiBehaviorConfig) -> nn.Module:
        m = self.config.model
        return build_model(m.name, feature_specs(blog, config), self.task_specs(config), **m.config)

    def _funnel_coverage(self, model: nn.Module, blog: BehaviorLog) -> dict[str, Any] | None:
        """For a funnel model (ESMM: ``ctr_task`` -> ``cvr_task``), the share of the
        conversion behavior's training pairs that also have the click behavior, with a
        warning below one half: ESMM learns ``p(click and conversion)``, so conversions
        without the click are trained as negatives (on Tmall 19% of the buys were carted,
        79% viewed: cart -> buy ranks below the own-carted rule, view -> buy does not)."""
        ctr, cvr = getattr(model, "ctr_task", None), getattr(model, "cvr_task", None)
        if ctr is None or cvr is None:
            return None
        click = self.task_behaviors.get(ctr.name, ctr.name)
        conversion = self.task_behaviors.get(cvr.name, cvr.name)
        if click not in blog.keys or conversion not in blog.keys:
            return None
        conv = blog.keys[conversion]
        share = float(np.isin(conv, blog.keys[click]).mean()) if len(conv) else 0.0
        if share < 0.5:
            log.warning(
                "model %s: only %.0f%% of the '%s' pairs have '%s' too; the funnel %s -> %s "
                "trains the other %.0f%% as negatives: pick the first task as the behavior "
                "that precedes most '%s' pairs (tasks: [<that behavior>, %s])",
                type(model).__name__,
                100 * share,
                conversion,
                click,
                click,
                conversion,
                100 * (1 - share),
                conversion,
                conversion,
            )
        return {"click": click, "conversion": conversion, "share": round(share, 4)}

    def _pick_rule_weight(
        self,
        model: nn.Module,
        blog: BehaviorLog,
        users: np.ndarray,
        items: np.ndarray,
        config: MultiBehaviorConfig,
        monitor: str,
        ks: Sequence[int],
        info: dict[str, Any],
    ) -> MultiBehaviorConfig:
        """``config`` with the ``rule_weight`` of ``rule_weights`` picked on the validation
        targets by the monitor's ranking metric (else ``ndcg@k``): with ``rule_pick:
        one_se`` by :func:`pick_blend_weight` (the rule unless a weight beats it by more than
        one standard error of the paired per-user difference, the model alone unless a blend
        beats it so), with ``best`` the best mean (ties to the smaller weight); the
        validation means and each weight's paired gain over the rule (mean, standard error)
        are noted in ``info``."""
        metric = monitor.split("/", 1)[-1]
        if metric.split("@")[0] not in {"hr", "ndcg", "recall", "mrr"}:
            metric = f"ndcg@{10 if 10 in ks else ks[0]}"
        cut = int(metric.split("@")[1]) if "@" in metric else max(ks)
        weights = tuple(sorted(set(self.options.rule_weights)))
        per_user: dict[float, dict[str, np.ndarray]] = {}
        by_w = rule_blend_metrics(
            model,
            blog,
            users,
            items,
            config,
            weights,
            ks=tuple(sorted({*ks, cut})),
            max_users=self.options.validation_users,
            per_user=per_user,
        )
        values = {w: per_user[w].get(metric, np.zeros(0)) for w in weights}
        if self.options.rule_pick == "one_se":
            best = pick_blend_weight(values)
        else:
            best = max(weights, key=lambda w: (by_w[w].get(metric, 0.0), -w))
        info["rule_weight"] = best
        info["rule_pick"] = self.options.rule_pick
        info["rule_blend_valid"] = {
            w: {k: round(v, 4) for k, v in m.items() if k != "users"} for w, m in by_w.items()
        }
        if 1.0 in values:
            info["rule_blend_gain_over_rule"] = {
                w: [round(x, 4) for x in paired_gain(values[w], values[1.0])] for w in weights
            }
        log.info(
            "rule blend: weight %s picked on validation %s (%s, rule_pick %s)",
            best,
            metric,
            {w: round(m.get(metric, 0.0), 4) for w, m in by_w.items()},
            self.options.rule_pick,
        )
        return replace(config, rule_weight=best)

    def fit(self, dataset: Dataset, split: Split) -> TrainingRun:
        """Train on the split's train part, select on its valid part (see the class)."""
        tick = time.perf_counter()
        config = self.recipe_config()
        fit_log, full_log, vu, vi = self.logs(dataset, split, config)
        interest = self.interest_task
        if interest is not None and full_log is not fit_log:  # labels: each log's own
            names, of_item = self._classes(dataset, full_log)
            fit_log = with_classes(fit_log, names, of_item, config.target)
            full_log = with_classes(full_log, names, of_item, config.target)
        ks = tuple(self.config.evaluate.ks)
        k0 = 10 if 10 in ks else ks[0]
        given_monitor = self.config.train.get("monitor")
        monitor = str(given_monitor).lower() if given_monitor else f"{self.target}/ndcg@{k0}"
        train_cfg = self.config.train.train_config(monitor=monitor)
        log.info(
            "multibehavior: %d users x %d items, behaviors %s, %d validation pairs",
            full_log.n_users,
            full_log.n_items,
            list(config.behaviors),
            len(vu),
        )
        data = training_data(fit_log, config)
        torch.manual_seed(train_cfg.seed)
        model = self._model(fit_log, config)
        funnel = self._funnel_coverage(model, fit_log)
        info_funnel = {"funnel": funnel} if funnel is not None else {}
        evaluator = None
        if len(vu):
            evaluator = make_evaluator(
                fit_log,
                vu,
                vi,
                config,
                ks=ks,
                max_users=self.options.validation_users,
                name=self.target,
            )
        else:
            log.warning("no validation targets: every epoch runs and the last one is kept")
        weighting = self.weighting([t.name for t in model.tasks])
        result = fit(model, data, config=train_cfg, weighting=weighting, evaluator=evaluator)
        info: dict[str, Any] = {
            "users": full_log.n_users,
            "items": full_log.n_items,
            "behaviors": list(config.behaviors),
            "pairs": {b: len(full_log.keys[b]) for b in config.behaviors},
            "validation_pairs": len(vu),
            "train_rows": len(data),
            "train_seconds": result.train_seconds,
            "samples_per_second": result.samples_per_second,
            **info_funnel,
        }
        if self.options.rule_blend and evaluator is not None:
            config = self._pick_rule_weight(model, fit_log, vu, vi, config, monitor, ks, info)
        epochs = result.best_epoch or train_cfg.epochs
        if self.options.retrain_on_full and full_log is not fit_log and epochs > 0:
            data = training_data(full_log, config)
            torch.manual_seed(train_cfg.seed)
            model = self._model(full_log, config)
            refit_cfg = replace(train_cfg, epochs=epochs, checkpoint_dir=None)
            weighting = self.weighting([t.name for t in model.tasks])
            refit = fit(model, data, config=refit_cfg, weighting=weighting)
            info["train_seconds"] += refit.train_seconds
            info["retrain_rows"] = len(data)
            info["retrain_epochs"] = epochs
        info["wall_seconds"] = time.perf_counter() - tick
        scorer = MultiBehaviorScorer(
            model,
            full_log,
            config,
            self.task_behaviors,
            self.target,
            None if interest is None else interest.name,
        )
        return TrainingRun(
            scorer=scorer,
            valid=dict(result.best_scores),
            monitor=monitor if monitor in result.best_scores else "",
            history=result.history,
            best_epoch=result.best_epoch or None,
            info=info,
        )
