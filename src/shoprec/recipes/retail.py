"""Repeat-purchase retail: buy, return and quantity of (user, item) pairs over time windows.

For shops where customers come back and buy the same things again (wholesalers, office
supplies, groceries; e.g. UCI Online Retail). The recipe, step by step:

1. :func:`snapshot` — what is known at a cut-off instant, from the events before it only:
   per user (country, number of orders and distinct items, recency, typical quantity, return
   rate, the most recently bought distinct items), per item (price, buyers overall and in the
   last ``recent_days``, age, typical quantity, return rate) and per (user, item) pair the
   user bought before (how often, how recently, typical quantity, ever returned).
2. :func:`window_labels` — per (user, item) bought in a label window ``[start, end)``:
   ``buy`` = 1, ``quantity`` = units bought in the window, ``return`` = 1 when a return of the
   pair follows a purchase inside the window.
3. :func:`window_samples` — the labelled rows of one window, each with the features of the
   snapshot at the window's start (so no label leaks into its own features): the bought
   pairs; as negatives every item that a buyer of the window bought before but not in the
   window (``history_negatives``: the hard ones, since repeat purchase is the rule) and
   ``n_negatives`` catalog items per buyer that the user never bought, drawn with
   replacement from :func:`negative_distribution` (a share ``popular_negatives`` of the draws
   in proportion to the item's recent buyers, the rest uniform: the popular items the user
   did not buy are the informative negatives). A never-bought item is thus kept with
   probability ``r_i = 1 - (1 - q_i) ** n_negatives`` (:func:`inclusion_rates`) while past
   items are all kept, so for full ranking :meth:`~RetailEncoder.score_users` maps the buy
   probability of never-bought items back to the whole catalog (the odds of a sampled
   class scale with its sampling rate: ``logit + log r_i``); without that the model would
   put popular new items above the user's own past items far too often.
4. :class:`RetailEncoder` — fits a :class:`~shoprec.data.encode.Encoder` on the training
   rows, gives :meth:`~RetailEncoder.feature_specs` / :func:`task_specs` for ``build_model``,
   encodes windows as :class:`SequenceData` (the history sequence is stored once per user and
   gathered per batch) and scores users x items for full ranking
   (:meth:`~RetailEncoder.score_users`).
5. Baselines on the same snapshots: :func:`popularity_scores`, :func:`repeat_scores`,
   :func:`mean_quantity`, :func:`item_return_rate`.
6. The front door (``recipe: {name: windows, ...}``, options :class:`WindowsOptions`):
   :class:`WindowsRecipe` prepares the windows (:meth:`~WindowsRecipe.prepare`), trains the
   registry model with the one loop (:meth:`~WindowsRecipe.train`) and returns a
   :class:`WindowsScorer`: the snapshot at the test start, the encoder and the model, which
   scores any user x items and folds live buys / returns into the user's own features
   (:func:`with_live_events`) before scoring.

Tasks (:func:`task_specs`): ``buy`` (binary, every row), ``return`` (binary) and ``quantity``
(regression, Poisson or log1p-MSE loss), the last two masked to bought rows through
``Task.weight_key = "buy"``.

Example:
    >>> cfg = RetailConfig()
    >>> train = [window_samples(events, start, end, catalog, cfg, seed=i)  # doctest: +SKIP
    ...          for i, (start, end) in enumerate(windows)]
    >>> valid = window_samples(events, valid_start, test_start, catalog, cfg)  # doctest: +SKIP
    >>> enc = RetailEncoder(cfg).fit(train)  # doctest: +SKIP
    >>> model = build_model("mmoe", enc.feature_specs(), task_specs(cfg))  # doctest: +SKIP
    >>> fit(model, enc.transform(train), enc.transform([valid]))  # doctest: +SKIP
    >>> scores = enc.score_users(model, test_snapshot, users, items)  # doctest: +SKIP

    The same through the front door::

        run = WindowsRecipe(load_config("configs/online_retail_mmoe.yaml")).fit(ds, split)
        run.scorer.score(["17850"])  # {"buy": (1, 3865), "return": ..., "quantity": ...}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
import torch
from pydantic import Field
from torch import Tensor, nn

from shoprec.data.batches import TensorData, to_tensors
from shoprec.data.encode import Encoder
from shoprec.errors import DataError
from shoprec.evaluate import metrics
from shoprec.models import MultiTaskModel, build_model, load_model, save_model
from shoprec.models.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    SequenceFeature,
    Task,
)
from shoprec.recipes.base import (
    Recipe,
    RecipeOptions,
    Scorer,
    TrainingRun,
    events_of,
    positions_or_all,
)
from shoprec.train.loop import fit, predict

if TYPE_CHECKING:
    from shoprec.config import ExperimentConfig
    from shoprec.data.schema import Dataset
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

__all__ = [
    "CATEGORICAL",
    "HISTORY",
    "ITEM_NUMERIC",
    "PAIR_NUMERIC",
    "PAST_COLUMNS",
    "TASK_KINDS",
    "USER_NUMERIC",
    "RetailConfig",
    "RetailEncoder",
    "SequenceData",
    "Snapshot",
    "WindowsData",
    "WindowsOptions",
    "WindowsRecipe",
    "WindowsScorer",
    "inclusion_rates",
    "item_return_rate",
    "mean_quantity",
    "negative_distribution",
    "pointwise_metrics",
    "popularity_scores",
    "repeat_scores",
    "snapshot",
    "task_scores",
    "task_specs",
    "window_labels",
    "window_samples",
    "with_live_events",
]

CATEGORICAL = ("user", "item", "country")
USER_NUMERIC = ("u_log_orders", "u_log_items", "u_recency", "u_log_qty", "u_return_rate")
ITEM_NUMERIC = (
    "i_log_price",
    "i_log_buyers",
    "i_log_recent_buyers",
    "i_log_age",
    "i_log_qty",
    "i_return_rate",
)
PAIR_NUMERIC = ("ui_log_orders", "ui_recency", "ui_log_qty", "ui_returned")
HISTORY = "history"
LABELS = ("buy", "return", "quantity")
_HIST_ROW = "_history_row"


@dataclass(frozen=True)
class RetailConfig:
    """Sample construction and feature settings of the retail recipe."""

    n_negatives: int = 50  # drawn catalog items per buyer of a window (never-bought kept)
    popular_negatives: float = 0.5  # share of the draws in proportion to recent buyers
    history_negatives: bool = True  # every past item of a buyer not bought again in the window
    max_history: int = 50  # most recent distinct past items in the history sequence
    recent_days: float = 30.0  # "recent buyers" of an item: this many days before the cut
    recency_days: float = 60.0  # recency features are exp(-days since / recency_days)
    return_prior: float = 20.0  # pseudo-lines pulling return rates to the global rate
    embedding_dim: int = 16  # every id embedding (user, item, country, history)
    history_pooling: str = "mean"  # "mean", "sum" or "attention" (DIN, query = the item)
    quantity_loss: str = "log1p_mse"  # "poisson", "log1p_mse" or "mse"


# --------------------------------------------------------------------------- snapshots


@dataclass
class Snapshot:
    """What is known at ``cutoff``, computed from the events before it.

    Attributes:
        cutoff: the instant; only events strictly before it were read.
        users: ``user, country, USER_NUMERIC..., history`` (list of item ids, oldest first)
            for every user with a purchase before the cut.
        items: ``item, ITEM_NUMERIC...`` for every catalog item (never-sold items get zero
            counts and the global quantity and return rate).
        pairs: ``user, item, PAIR_NUMERIC...`` for every pair bought before the cut.
    """

    cutoff: datetime
    users: pl.DataFrame
    items: pl.DataFrame
    pairs: pl.DataFrame
    global_log_qty: float = 0.0  # mean log1p units of the buy lines before the cut
    global_return_rate: float = 0.0  # returns per buy line before the cut


def snapshot(
    events: pl.DataFrame,
    cutoff: datetime,
    catalog: pl.DataFrame,
    cfg: RetailConfig | None = None,
    *,
    global_rates: tuple[float, float] | None = None,
) -> Snapshot:
    """Features of users, items and pairs from the events before ``cutoff``.

    Args:
        events: interactions (``user, item, timestamp, behavior, quantity, domain``) with
            behaviors ``buy`` and ``return``; later events are ignored.
        cutoff: the instant the features describe.
        catalog: ``item, price`` of every item that can be ranked (price may be null).
        cfg: the recipe settings.
        global_rates: ``(mean log1p units, return rate)`` of the whole shop, when ``events``
            are only some users' (live updates, :func:`with_live_events`); computed from
            ``events`` otherwise.

    Returns:
        The :class:`Snapshot`.
    """
    cfg = cfg or RetailConfig()
    past = events.filter(pl.col("timestamp") < cutoff)
    buys = past.filter(pl.col("behavior") == "buy")
    returns = past.filter(pl.col("behavior") == "return")
    days = (pl.lit(cutoff) - pl.col("timestamp")).dt.total_seconds() / 86_400.0
    log_qty = pl.col("quantity").cast(pl.Float64).log1p()
    if global_rates is None:
        g_qty = float(buys.select(log_qty.mean()).item() or 0.0) if buys.height else 0.0
        g_ret = returns.height / max(buys.height, 1)
    else:
        g_qty, g_ret = (float(v) for v in global_rates)
    prior = cfg.return_prior

    def rate(n_ret: str, n_buy: str) -> pl.Expr:
        return (pl.col(n_ret) + prior * g_ret) / (pl.col(n_buy) + prior)

    ret_user = returns.group_by("user").agg(pl.len().alias("_ret"))
    users = (
        buys.group_by("user")
        .agg(
            pl.col("timestamp").n_unique().log1p().alias("u_log_orders"),
            pl.col("item").n_unique().log1p().alias("u_log_items"),
            (-days.min() / cfg.recency_days).exp().alias("u_recency"),
            log_qty.mean().alias("u_log_qty"),
            pl.len().alias("_lines"),
        )
        .join(ret_user, on="user", how="left", maintain_order="left")
        .with_columns(pl.col("_ret").fill_null(0))
        .with_columns(rate("_ret", "_lines").alias("u_return_rate"))
    )
    country = past.group_by("user").agg(pl.col("domain").mode().sort().first().alias("country"))
    history = (
        buys.group_by("user", "item")
        .agg(pl.col("timestamp").max().alias("_last"))
        .sort("user", "_last", "item")
        .group_by("user", maintain_order=True)
        .agg(pl.col("item").tail(cfg.max_history).alias(HISTORY))
    )
    users = (
        users.join(country, on="user", how="left", maintain_order="left")
        .join(history, on="user", how="left", maintain_order="left")
        .select("user", "country", *USER_NUMERIC, HISTORY)
        .sort("user")
    )

    recent = pl.col("timestamp") >= cutoff - timedelta(days=cfg.recent_days)
    ret_item = returns.group_by("item").agg(pl.len().alias("_ret"))
    item_stats = (
        buys.group_by("item")
        .agg(
            pl.col("user").n_unique().log1p().alias("i_log_buyers"),
            pl.col("user").filter(recent).n_unique().log1p().alias("i_log_recent_buyers"),
            days.max().log1p().alias("i_log_age"),
            log_qty.mean().alias("i_log_qty"),
            pl.len().alias("_lines"),
        )
        .join(ret_item, on="item", how="left", maintain_order="left")
        .with_columns(pl.col("_ret").fill_null(0))
        .with_columns(rate("_ret", "_lines").alias("i_return_rate"))
    )
    items = (
        catalog.select("item", pl.col("price").cast(pl.Float64).log1p().alias("i_log_price"))
        .join(item_stats, on="item", how="left", maintain_order="left")
        .with_columns(
            pl.col("i_log_buyers", "i_log_recent_buyers", "i_log_age").fill_null(0.0),
            pl.col("i_log_qty").fill_null(g_qty),
            pl.col("i_return_rate").fill_null(g_ret),
        )
        .select("item", *ITEM_NUMERIC)
        .sort("item")
    )

    ret_pair = returns.select("user", "item").unique().with_columns(pl.lit(1.0).alias("_r"))
    pairs = (
        buys.group_by("user", "item")
        .agg(
            pl.col("timestamp").n_unique().log1p().alias("ui_log_orders"),
            (-days.min() / cfg.recency_days).exp().alias("ui_recency"),
            log_qty.mean().alias("ui_log_qty"),
        )
        .join(ret_pair, on=["user", "item"], how="left", maintain_order="left")
        .with_columns(pl.col("_r").fill_null(0.0).alias("ui_returned"))
        .select("user", "item", *PAIR_NUMERIC)
        .sort("user", "item")
    )
    return Snapshot(cutoff, users, items, pairs, g_qty, g_ret)


#: Columns of the events a snapshot is computed from (and a scorer keeps for live updates).
PAST_COLUMNS = ("user", "item", "timestamp", "behavior", "quantity", "domain")
_NO_CATALOG = pl.DataFrame(schema={"item": pl.String, "price": pl.Float64})


def with_live_events(
    snap: Snapshot,
    past: pl.DataFrame,
    live: pl.DataFrame,
    cfg: RetailConfig | None = None,
) -> Snapshot:
    """``snap`` with the user and pair features of ``live``'s users recomputed as if their
    live buys and returns had happened just before the cut.

    Each live event is its own order, placed a millisecond apart (oldest first) right before
    ``snap.cutoff``, so a live buy makes the item the user's most recent one (recency 1, one
    more order, last in the history). Item features and the shop-wide rates stay as they
    were at the cut; a user's country stays the snapshot's (else the events' ``domain``).

    Args:
        snap: the snapshot at the cut.
        past: the events ``snap`` was computed from (:data:`PAST_COLUMNS`; only the live
            users' rows are read).
        live: ``user, item, behavior`` (optionally ``quantity``, ``domain``), oldest first;
            behaviors other than buy and return are ignored.
        cfg: the recipe settings ``snap`` was computed with.

    Returns:
        A new snapshot; ``snap`` is unchanged.
    """
    cfg = cfg or RetailConfig()
    live = live.filter(pl.col("behavior").is_in(["buy", "return"]))
    if live.height == 0:
        return snap
    n = live.height
    known_country = snap.users.select("user", pl.col("country").alias("_c"))
    quantity = pl.col("quantity") if "quantity" in live.columns else pl.lit(None)
    domain = pl.col("domain") if "domain" in live.columns else pl.lit(None)
    ts = past.schema["timestamp"] if past.width else pl.Datetime("ms")
    rows = (
        live.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_k"))
        .join(known_country, on="user", how="left", maintain_order="left")
        .select(
            pl.col("user").cast(pl.String),
            pl.col("item").cast(pl.String),
            (pl.lit(snap.cutoff) - pl.duration(milliseconds=n - pl.col("_k")))
            .cast(ts)
            .alias("timestamp"),
            pl.col("behavior").cast(pl.String),
            quantity.cast(pl.Int64).fill_null(1).alias("quantity"),
            pl.coalesce(pl.col("_c"), domain.cast(pl.String)).alias("domain"),
        )
    )
    users = rows.select("user").unique()
    mine = pl.concat(
        [
            past.filter(pl.col("user").is_in(users["user"].implode()))
            .select(rows.columns)
            .cast(rows.schema),
            rows,
        ]
    )
    sub = snapshot(
        mine,
        snap.cutoff,
        _NO_CATALOG,
        cfg,
        global_rates=(snap.global_log_qty, snap.global_return_rate),
    )
    sub_users = (
        sub.users.join(known_country, on="user", how="left", maintain_order="left")
        .with_columns(pl.coalesce("_c", "country").alias("country"))
        .select(snap.users.columns)
    )
    live_users = pl.col("user").is_in(users["user"].implode())
    keep_users = snap.users.filter(~live_users)
    keep_pairs = snap.pairs.filter(~live_users)
    return Snapshot(
        snap.cutoff,
        pl.concat([keep_users, sub_users.cast(keep_users.schema)]),  # live users last
        snap.items,
        pl.concat([keep_pairs, sub.pairs.cast(keep_pairs.schema)]),
        snap.global_log_qty,
        snap.global_return_rate,
    )


# --------------------------------------------------------------------------- samples


def window_labels(events: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """The three labels of every (user, item) bought in ``[start, end)``.

    Args:
        events: interactions with behaviors ``buy`` and ``return``.
        start: first instant of the window.
        end: end of the window (exclusive).

    Returns:
        ``user, item, buy`` (1), ``quantity`` (units bought in the window, float) and
        ``return`` (1 if the user returned the item in the window after first buying it
        there), sorted by user and item.
    """
    inside = events.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
    bought = (
        inside.filter(pl.col("behavior") == "buy")
        .group_by("user", "item")
        .agg(
            pl.col("quantity").sum().cast(pl.Float64).alias("quantity"),
            pl.col("timestamp").min().alias("_first"),
        )
    )
    returned = (
        inside.filter(pl.col("behavior") == "return")
        .join(bought.select("user", "item", "_first"), on=["user", "item"], how="inner")
        .filter(pl.col("timestamp") >= pl.col("_first"))
        .select("user", "item")
        .unique()
        .with_columns(pl.lit(1, dtype=pl.Int8).alias("return"))
    )
    return (
        bought.join(returned, on=["user", "item"], how="left", maintain_order="left")
        .select(
            "user",
            "item",
            pl.lit(1, dtype=pl.Int8).alias("buy"),
            "quantity",
            pl.col("return").fill_null(0).cast(pl.Int8),
        )
        .sort("user", "item")
    )


def window_samples(
    events: pl.DataFrame,
    start: datetime,
    end: datetime,
    catalog: pl.DataFrame,
    cfg: RetailConfig | None = None,
    *,
    seed: int = 0,
    negatives: bool = True,
    snap: Snapshot | None = None,
) -> tuple[pl.DataFrame, Snapshot]:
    """Labelled rows of one window with the features of the snapshot at its start.

    Args:
        events: interactions with behaviors ``buy`` and ``return``.
        start: first instant of the label window; features come from events before it.
        end: end of the label window (exclusive).
        catalog: ``item, price`` of every rankable item (the negatives' pool).
        cfg: the recipe settings.
        seed: seed of the negative draw.
        negatives: add negatives (False: only the bought pairs, e.g. for return/quantity
            evaluation).
        snap: the snapshot at ``start`` if already computed.

    Returns:
        ``(rows, snapshot)``: rows have ``user, item, country``, the numeric features,
        ``buy, return, quantity`` (0 for negatives) and are sorted by user and item.
    """
    cfg = cfg or RetailConfig()
    snap = snap or snapshot(events, start, catalog, cfg)
    pos = window_labels(events, start, end)
    rows = pos
    if negatives and pos.height:
        buyers = pos.select("user").unique()
        parts = [pos]
        if cfg.history_negatives:
            hist = snap.pairs.select("user", "item").join(buyers, on="user", how="semi")
            parts.append(_negatives(hist.join(pos, on=["user", "item"], how="anti")))
        if cfg.n_negatives > 0:
            pool = snap.items["item"].to_numpy()
            q = negative_distribution(snap, cfg)
            rng = np.random.default_rng(seed)
            n = buyers.height * cfg.n_negatives
            drawn = pl.DataFrame(
                {
                    "user": np.repeat(buyers["user"].sort().to_numpy(), cfg.n_negatives),
                    "item": pool[rng.choice(len(pool), size=n, p=q)],
                },
                schema={"user": pl.String, "item": pl.String},
            )
            touched = pl.concat([pos.select("user", "item"), snap.pairs.select("user", "item")])
            drawn = drawn.join(touched, on=["user", "item"], how="anti").unique(maintain_order=True)
            parts.append(_negatives(drawn))
        rows = pl.concat(parts)
    return attach_features(rows, snap, events.filter(pl.col("timestamp") < end)), snap


def negative_distribution(snap: Snapshot, cfg: RetailConfig | None = None) -> np.ndarray:
    """``(I,)`` probabilities of one negative draw over ``snap.items`` (in its order): a share
    ``popular_negatives`` in proportion to ``1 +`` the item's buyers in the last
    ``recent_days``, the rest uniform."""
    cfg = cfg or RetailConfig()
    n = snap.items.height
    w = np.expm1(snap.items["i_log_recent_buyers"].to_numpy()) + 1.0
    s = cfg.popular_negatives
    return (1.0 - s) / n + s * w / w.sum()


def inclusion_rates(snap: Snapshot, cfg: RetailConfig | None = None) -> np.ndarray:
    """``(I,)`` probability that a never-bought item of ``snap.items`` is among a buyer's
    ``n_negatives`` draws: ``1 - (1 - q_i) ** n_negatives`` (draws of past items are
    discarded afterwards, which does not change it)."""
    cfg = cfg or RetailConfig()
    q = negative_distribution(snap, cfg)
    return -np.expm1(cfg.n_negatives * np.log1p(-q))


def _negatives(pairs: pl.DataFrame) -> pl.DataFrame:
    return pairs.select(
        "user",
        "item",
        pl.lit(0, dtype=pl.Int8).alias("buy"),
        pl.lit(0.0).alias("quantity"),
        pl.lit(0, dtype=pl.Int8).alias("return"),
    )


def attach_features(
    rows: pl.DataFrame, snap: Snapshot, country_events: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Join the snapshot's user, item and pair features onto ``(user, item, ...)`` rows.

    Pairs never bought before get zero pair features; users without purchases before the cut
    get zero user features and the overall mean quantity and return rate. A user's country
    is their main country in the snapshot, else in ``country_events`` (e.g. the window's own
    events: the country is a fixed attribute of the customer, not a label).

    Returns:
        ``rows`` with ``country`` and every numeric feature, sorted by user and item.
    """
    item_means = snap.items.select(
        pl.col("i_log_qty").mean().alias("u_log_qty"), pl.col("i_return_rate").mean()
    )
    g_qty = float(item_means["u_log_qty"][0] or 0.0)
    g_ret = float(item_means["i_return_rate"][0] or 0.0)
    # only the rows' users: a serving call scores one user against tables of every user
    wanted = pl.col("user").is_in(rows["user"].unique().implode())
    users = snap.users.drop(HISTORY).filter(wanted)
    pairs = snap.pairs.filter(wanted)
    if country_events is not None:
        fallback = (
            country_events.filter(wanted)
            .group_by("user")
            .agg(pl.col("domain").mode().sort().first().alias("_country"))
        )
        users = (
            fallback.join(users, on="user", how="full", coalesce=True)
            .with_columns(pl.coalesce("country", "_country").alias("country"))
            .drop("_country")
        )
    out = (
        rows.join(users, on="user", how="left", maintain_order="left")
        .join(snap.items, on="item", how="left", maintain_order="left")
        .join(pairs, on=["user", "item"], how="left", maintain_order="left")
        .with_columns(
            pl.col("u_log_orders", "u_log_items", "u_recency", *PAIR_NUMERIC).fill_null(0.0),
            pl.col("u_log_qty").fill_null(g_qty),
            pl.col("u_return_rate").fill_null(g_ret),
        )
    )
    return out.sort("user", "item")


# --------------------------------------------------------------------------- encoding


def task_specs(cfg: RetailConfig | None = None, tasks: Sequence[str] = LABELS) -> list[Task]:
    """The recipe's tasks (all three by default, or a subset for single-task models).

    ``return`` and ``quantity`` learn on bought rows only (``weight_key="buy"``).
    """
    cfg = cfg or RetailConfig()
    specs = {
        "buy": Task("buy", kind="binary"),
        "return": Task("return", kind="binary", weight_key="buy"),
        "quantity": Task(
            "quantity",
            kind="regression",
            loss=cfg.quantity_loss,  # type: ignore[arg-type]
            weight_key="buy",
        ),
    }
    return [specs[t] for t in tasks]


@dataclass
class SequenceData(TensorData):
    """:class:`TensorData` whose sequence columns are stored once per user.

    ``sequences[name] = (index_column, table)``: the batch gets ``name = table[index]`` with
    ``table`` ``(R, L)`` and ``index`` the row's int64 column, so a million rows of a 50-long
    history cost one table per window instead of a million copies.
    """

    sequences: dict[str, tuple[str, Tensor]] = field(default_factory=dict)

    def _complete(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        for name, (index, table) in self.sequences.items():
            if name not in batch:
                batch[name] = table[batch[index]]  # (B, L)
        return batch

    def take(self, index: Tensor) -> dict[str, Tensor]:
        return self._complete(super().take(index))

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, Tensor]]:
        for batch in super().batches(batch_size, shuffle=shuffle, generator=generator):
            yield self._complete(batch)

    def subset(self, index: Tensor) -> SequenceData:
        return SequenceData(super().take(index), dict(self.sequences))


@dataclass
class _PairInputs:
    """Encoded inputs of users x items (:meth:`RetailEncoder._pair_inputs`)."""

    ucols: dict[str, Tensor]  # (U,) per user column
    icols: dict[str, Tensor]  # (I,) per item column
    hist: Tensor  # (U, L)
    dense: dict[str, np.ndarray]  # (U, I) per pair column
    never: np.ndarray  # (U, I) True where the user never bought the item before the cut


class RetailEncoder:
    """Ids and normalised numbers for the retail rows, fitted on the training windows only.

    Args:
        cfg: the recipe settings (embedding size, history length and pooling).

    Attributes:
        encoder_: the fitted :class:`~shoprec.data.encode.Encoder` (user, item, country ids;
            standardised numerics).
    """

    def __init__(self, cfg: RetailConfig | None = None) -> None:
        self.cfg = cfg or RetailConfig()
        self.numeric = [*USER_NUMERIC, *ITEM_NUMERIC, *PAIR_NUMERIC]

    def fit(self, windows: Sequence[tuple[pl.DataFrame, Snapshot]]) -> RetailEncoder:
        """Fit on the rows of the training windows (never valid or test)."""
        rows = pl.concat([w[0].select(*CATEGORICAL, *self.numeric) for w in windows])
        self.encoder_ = Encoder(categorical=list(CATEGORICAL), numeric=self.numeric).fit(rows)
        return self

    def feature_specs(self) -> list[FeatureSpec]:
        """Feature specs: the ids, the history sharing the item table, the numerics."""
        d = self.cfg.embedding_dim
        n_items = self.encoder_.vocab_size("item")
        return [
            *(CategoricalFeature(c, self.encoder_.vocab_size(c), d) for c in CATEGORICAL),
            SequenceFeature(
                HISTORY,
                n_items,
                d,
                self.cfg.history_pooling,  # type: ignore[arg-type]
                embedding_of="item",
            ),
            *(NumericFeature(c) for c in self.numeric),
        ]

    def history_table(self, snap: Snapshot, users: Sequence[str] | pl.Series) -> Tensor:
        """``(U, max_history)`` item ids of each user's history, left-padded with 0."""
        lists = (
            pl.DataFrame({"user": pl.Series(users, dtype=pl.String)})
            .join(snap.users.select("user", HISTORY), on="user", how="left", maintain_order="left")
            .get_column(HISTORY)
        )
        lens = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        width = self.cfg.max_history
        out = np.zeros((len(lens), width), dtype=np.int64)
        ids = self.encoder_.ids("item").encode(lists.explode().drop_nulls())
        rows = np.repeat(np.arange(len(lens)), lens)
        pos = (
            width
            - np.repeat(lens, lens)
            + (np.arange(len(rows)) - np.repeat(np.cumsum(lens) - lens, lens))
        )
        out[rows, pos] = ids
        return torch.from_numpy(out)

    def transform(self, windows: Sequence[tuple[pl.DataFrame, Snapshot]]) -> SequenceData:
        """Encode the rows of one or more windows, labels included."""
        columns: list[dict[str, Tensor]] = []
        tables: list[Tensor] = []
        offset = 0
        for rows, snap in windows:
            arrays = self.encoder_.transform(rows, [*CATEGORICAL, *self.numeric])
            users = rows["user"].unique(maintain_order=True)
            index = rows.select(
                pl.col("user").replace_strict(
                    users, np.arange(len(users), dtype=np.int64), return_dtype=pl.Int64
                )
            ).to_series()
            arrays[_HIST_ROW] = index.to_numpy() + offset
            for label in LABELS:
                arrays[label] = rows[label].cast(pl.Float32).to_numpy()
            columns.append(to_tensors(arrays))
            tables.append(self.history_table(snap, users))
            offset += len(users)
        merged = {k: torch.cat([c[k] for c in columns]) for k in columns[0]}
        return SequenceData(merged, {HISTORY: (_HIST_ROW, torch.cat(tables))})

    def to_dict(self) -> dict[str, Any]:
        """The settings and the fitted id / number maps as plain JSON-ready data."""
        return {
            "format": "shoprec.retail_encoder",
            "version": 1,
            "config": dataclasses.asdict(self.cfg),
            "encoder": self.encoder_.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RetailEncoder:
        """Rebuild a fitted encoder from :meth:`to_dict` output."""
        if state.get("format") != "shoprec.retail_encoder" or state.get("version") != 1:
            raise ValueError("not a shoprec retail encoder state (v1)")
        enc = cls(RetailConfig(**state["config"]))
        enc.encoder_ = Encoder.from_dict(state["encoder"])
        return enc

    def _pair_inputs(
        self,
        snap: Snapshot,
        users: pl.Series,
        items: pl.Series,
        country_events: pl.DataFrame | None,
    ) -> _PairInputs:
        """Encoded user, item and dense pair columns of ``users`` x ``items``."""
        n_u, n_i = len(users), len(items)
        user_rows = pl.DataFrame({"user": users, "item": pl.Series([None] * n_u, dtype=pl.String)})
        u = attach_features(user_rows, snap, country_events).unique("user", maintain_order=True)
        u = pl.DataFrame({"user": users}).join(
            u, on="user", how="left", maintain_order="left"
        )  # back in given order
        ucols = to_tensors(self.encoder_.transform(u, ["user", "country", *USER_NUMERIC]))
        i = pl.DataFrame({"item": items}).join(
            snap.items, on="item", how="left", maintain_order="left"
        )
        icols = to_tensors(self.encoder_.transform(i, ["item", *ITEM_NUMERIC]))
        hist = self.history_table(snap, users)  # (U, L)

        # Pair features: dense (U, I) per column, the value of "never bought" everywhere else.
        zero = pl.DataFrame({c: [0.0] for c in PAIR_NUMERIC})
        fill = self.encoder_.transform(zero, list(PAIR_NUMERIC))
        dense = {c: np.full((n_u, n_i), fill[c][0], dtype=np.float32) for c in PAIR_NUMERIC}
        never = np.ones((n_u, n_i), dtype=bool)
        pos_u = pl.DataFrame({"user": users, "_u": np.arange(n_u)})
        pos_i = pl.DataFrame({"item": items, "_i": np.arange(n_i)})
        mine = snap.pairs.filter(pl.col("user").is_in(users.implode()))
        known = mine.join(pos_u, on="user").join(pos_i, on="item")
        if known.height:
            enc = self.encoder_.transform(known, list(PAIR_NUMERIC))
            r, c = known["_u"].to_numpy(), known["_i"].to_numpy()
            for col in PAIR_NUMERIC:
                dense[col][r, c] = enc[col]
            never[r, c] = False
        return _PairInputs(ucols, icols, hist, dense, never)

    @staticmethod
    def _pair_batch(x: _PairInputs, start: int, end: int) -> dict[str, Tensor]:
        """The rows of users ``[start, end)`` x every item, user-major."""
        n_i = x.never.shape[1]
        rep = torch.arange(start, end).repeat_interleave(n_i)  # (U'*I,)
        batch = {k: v[rep] for k, v in x.ucols.items()}
        batch.update({k: v.repeat(end - start) for k, v in x.icols.items()})
        batch.update({k: torch.from_numpy(v[start:end].reshape(-1)) for k, v in x.dense.items()})
        batch[HISTORY] = x.hist[rep]
        return batch

    def pair_batch(
        self,
        snap: Snapshot,
        users: Sequence[str] | pl.Series,
        items: Sequence[str] | pl.Series,
        *,
        country_events: pl.DataFrame | None = None,
    ) -> dict[str, Tensor]:
        """The model inputs of every (user, item) pair, user-major (``U * I`` rows): what
        :meth:`score_users` scores, for inspecting one pair (e.g. gate weights)."""
        users = pl.Series("user", users, dtype=pl.String)
        items = pl.Series("item", items, dtype=pl.String)
        x = self._pair_inputs(snap, users, items, country_events)
        return self._pair_batch(x, 0, len(users))

    @torch.no_grad()
    def score_users(
        self,
        model: nn.Module,
        snap: Snapshot,
        users: Sequence[str] | pl.Series,
        items: Sequence[str] | pl.Series,
        *,
        country_events: pl.DataFrame | None = None,
        correct_sampling: bool = True,
        batch_rows: int = 16_384,
    ) -> dict[str, np.ndarray]:
        """Every task's prediction for ``users`` x ``items``, each ``(U, I)`` float32.

        The pair features are looked up in the snapshot (zero for pairs never bought); the
        rows of a few users at a time go through ``model.predict``.

        Args:
            model: a model with a ``buy`` task (others are returned as predicted).
            snap: the snapshot at the start of the period being predicted.
            users: the users (rows).
            items: the items (columns), e.g. the whole catalog.
            country_events: events giving the country of users without purchases in the
                snapshot.
            correct_sampling: map ``buy`` from the training distribution (never-bought
                items kept at the rates of :func:`inclusion_rates`, past items all kept) to
                the whole catalog: for never-bought items ``p' = p r / (p r + 1 - p)``, i.e.
                ``logit(p') = logit(p) + log r``.
            batch_rows: rows per forward pass (about).
        """
        users = pl.Series("user", users, dtype=pl.String)
        items = pl.Series("item", items, dtype=pl.String)
        n_u, n_i = len(users), len(items)
        x = self._pair_inputs(snap, users, items, country_events)
        per = max(1, batch_rows // max(n_i, 1))  # users per forward pass
        out: dict[str, list[np.ndarray]] = {
            t.name: [np.zeros((0, n_i), dtype=np.float32)]
            for t in model.tasks  # type: ignore[attr-defined]
        }
        model.eval()
        for s in range(0, n_u, per):
            e = min(s + per, n_u)
            for name, p in model.predict(self._pair_batch(x, s, e)).items():
                out[name].append(p.reshape(e - s, n_i).float().numpy())
        scores = {k: np.concatenate(v) for k, v in out.items()}
        if correct_sampling and self.cfg.n_negatives > 0 and "buy" in scores:
            rates = pl.DataFrame(
                {"item": snap.items["item"], "_r": inclusion_rates(snap, self.cfg)}
            )
            rate = (
                pl.DataFrame({"item": items})
                .join(rates, on="item", how="left", maintain_order="left")["_r"]
                .fill_null(1.0)
                .to_numpy()
            )
            p = scores["buy"].astype(np.float64)
            r = np.where(x.never, rate[None, :], 1.0)
            scores["buy"] = (p * r / (p * r + 1.0 - p)).astype(np.float32)
        return scores


def task_scores(model: nn.Module, data: TensorData, batch_size: int = 16_384) -> dict[str, float]:
    """Validation scores for early stopping, all higher-is-better and of similar range.

    ``buy/auc`` on every row; ``return/auc`` and ``quantity/r2_log1p`` (``1 - MSE / variance``
    of ``log1p`` units, so that a few wholesale orders do not decide) on bought rows only;
    ``mean`` of those the model has. Pass as ``fit(..., evaluator=lambda m: task_scores(m,
    valid))`` with ``TrainConfig(monitor="mean")``.
    """
    preds = predict(model, data, batch_size)
    bought = data.columns["buy"].numpy() > 0
    out: dict[str, float] = {}
    for task in model.tasks:  # type: ignore[attr-defined]
        p = preds[task.name].numpy()
        y = data.columns[task.label].numpy()
        if task.weight_key is not None:
            p, y = p[bought], y[bought]
        if task.kind == "binary" and 0 < y.mean() < 1:
            out[f"{task.name}/auc"] = metrics.auc(y, p)
        elif task.kind == "regression" and len(y) > 1:
            ly, lp = np.log1p(y), np.log1p(np.clip(p, 0, None))
            out[f"{task.name}/r2_log1p"] = float(1 - np.mean((ly - lp) ** 2) / max(ly.var(), 1e-12))
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


# --------------------------------------------------------------------------- baselines


def popularity_scores(
    snap: Snapshot, items: Sequence[str] | pl.Series, recent: bool = False
) -> np.ndarray:
    """``(I,)`` distinct buyers of each item before the cut (``recent``: in the last
    ``recent_days``), with a tiny all-time tie-break so equal counts keep a stable order."""
    table = pl.DataFrame({"item": pl.Series(items, dtype=pl.String)}).join(
        snap.items, on="item", how="left", maintain_order="left"
    )
    overall = table["i_log_buyers"].fill_null(0.0).to_numpy()
    if not recent:
        return overall
    return table["i_log_recent_buyers"].fill_null(0.0).to_numpy() * 100.0 + overall


def repeat_scores(
    snap: Snapshot,
    users: Sequence[str] | pl.Series,
    items: Sequence[str] | pl.Series,
    popularity: np.ndarray,
) -> np.ndarray:
    """``(U, I)``: the user's own past items first, by how many orders had them (then by
    recency), then every other item by ``popularity``."""
    users = pl.Series("user", users, dtype=pl.String)
    items = pl.Series("item", items, dtype=pl.String)
    pop = np.asarray(popularity, dtype=np.float64)
    span = pop.max() - pop.min() + 1.0 if pop.size else 1.0
    base = (pop - pop.min()) / span if pop.size else pop  # in [0, 1)
    scores = np.tile(base.astype(np.float64), (len(users), 1))
    known = snap.pairs.join(
        pl.DataFrame({"user": users, "_u": np.arange(len(users))}), on="user"
    ).join(pl.DataFrame({"item": items, "_i": np.arange(len(items))}), on="item")
    if known.height:
        r, c = known["_u"].to_numpy(), known["_i"].to_numpy()
        orders = np.expm1(known["ui_log_orders"].to_numpy())
        scores[r, c] = 10.0 + orders * 10.0 + known["ui_recency"].to_numpy()
    return scores


def mean_quantity(
    train_rows: pl.DataFrame, rows: pl.DataFrame, by: str, log_scale: bool = False
) -> np.ndarray:
    """Per ``rows``: the mean window quantity of bought training rows with the same ``by``
    (``"item"`` or ``"user"``), else the overall mean. ``log_scale``: ``expm1`` of the mean
    ``log1p`` quantity instead (the better constant for errors on the log scale)."""
    bought = train_rows.filter(pl.col("buy") == 1)
    q = pl.col("quantity").log1p() if log_scale else pl.col("quantity")
    overall = float(bought.select(q.mean()).item())
    means = bought.group_by(by).agg(q.mean().alias("_m"))
    m = (
        rows.select(by)
        .join(means, on=by, how="left", maintain_order="left")["_m"]
        .fill_null(overall)
        .to_numpy()
    )
    return np.expm1(m) if log_scale else m


def item_return_rate(snap: Snapshot, rows: pl.DataFrame) -> np.ndarray:
    """Per ``rows``: the item's smoothed return rate (returns / purchase lines) before the cut."""
    return (
        rows.select("item")
        .join(snap.items, on="item", how="left", maintain_order="left")["i_return_rate"]
        .to_numpy()
    )


# --------------------------------------------------------------------------- the recipe

#: The tasks the windows recipe can learn and their kinds.
TASK_KINDS = {"buy": "binary", "return": "binary", "quantity": "regression"}
_QUANTITY_LOSSES = ("poisson", "log1p_mse", "mse")


class WindowsOptions(RecipeOptions):
    """The ``recipe:`` keys of ``recipe: {name: windows, ...}`` (see the module docstring).

    The embedding size is ``model.embedding_dim``; the tasks are the config's ``tasks:``
    (``buy``, ``return``, ``quantity``; by default all three).
    """

    window_days: float = Field(30.0, gt=0)  # length of each training label window
    n_train_windows: int = Field(6, ge=1)  # windows counted back from the validation start
    n_negatives: int = Field(50, ge=0)  # never-bought catalog items drawn per window buyer
    popular_negatives: float = Field(0.5, ge=0, le=1)  # share of draws by recent buyers
    history_negatives: bool = True  # every past item of a buyer not bought in the window
    max_history: int = Field(50, ge=1)  # most recent distinct past items (sequence feature)
    recent_days: float = Field(30.0, gt=0)  # item popularity over the last days before a cut
    recency_days: float = Field(60.0, gt=0)  # recency features: exp(-days since / this)
    return_prior: float = Field(20.0, ge=0)  # smoothing of return rates to the shop's rate
    history_pooling: Literal["mean", "sum", "attention"] = "mean"  # history embeddings
    quantity_loss: Literal["poisson", "log1p_mse", "mse"] = "log1p_mse"  # or the task's loss
    correct_sampling: bool = True  # undo the negatives' inclusion rates when scoring buy
    sample_seed: int = 0  # added to the seeds of the negative draws (window k: k, valid: 100)
    # "validation": also fit the task set without each auxiliary task (the target kept) and
    # keep the set whose tasks gain most on validation over the same tasks of the full set
    # (WindowsRecipe.train); a dropped task is no longer predicted. "none": the tasks given.
    auxiliary_selection: Literal["none", "validation"] = "none"


@dataclass
class WindowsData:
    """What :meth:`WindowsRecipe.prepare` makes: the label windows and their tensors.

    Attributes:
        catalog: ``item, price`` of every rankable item, by item id (the scorer's order).
        known: every event before the cut (train + valid), all behaviors.
        cut: the first instant the scorer predicts for (the test start).
        valid_start: the first instant of the validation window.
        windows: ``(start, end)`` of each training window, newest first.
        train: rows and snapshot of each training window.
        valid: rows and snapshot of the validation window ``[valid_start, cut)``.
        snapshot: the snapshot at the cut, from ``known`` (what the scorer serves).
        encoder: fitted on the training windows.
        train_data: encoded training rows.
        valid_data: encoded validation rows.
    """

    catalog: pl.DataFrame
    known: pl.DataFrame
    cut: datetime
    valid_start: datetime
    windows: list[tuple[datetime, datetime]]
    train: list[tuple[pl.DataFrame, Snapshot]]
    valid: tuple[pl.DataFrame, Snapshot]
    snapshot: Snapshot
    encoder: RetailEncoder
    train_data: SequenceData
    valid_data: SequenceData
    test_rows_: pl.DataFrame | None = field(default=None, repr=False)  # see test_rows

    @property
    def label_rows(self) -> pl.DataFrame:
        """The rows of every label window before the cut (training and validation)."""
        return pl.concat([w[0] for w in [*self.train, self.valid]])


class WindowsRecipe(Recipe):
    """Repeat-purchase retail over monthly label windows: buy (ranking), return, quantity.

    ``fit`` counts ``n_train_windows`` windows of ``window_days`` back from the validation
    start (features of each from the events before it), validates on ``[valid_start,
    test_start)`` with the features at ``valid_start``, trains the registry model of
    ``model:`` with the one loop (early stopping on the ``train.monitor`` of
    :func:`task_scores`, ``mean`` by default), and returns a :class:`WindowsScorer` holding
    the snapshot at the test start. Without a validation part, the last window before the
    cut validates.

    Example:
        >>> recipe = WindowsRecipe(cfg)  # doctest: +SKIP
        >>> run = recipe.fit(dataset, split)  # doctest: +SKIP
        >>> run.scorer.score(["17850"])["buy"].shape  # doctest: +SKIP
        (1, 3865)
    """

    name = "windows"
    Options = WindowsOptions
    default_tasks = ("buy", "return", "quantity")
    needs_timestamps = True

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.options: WindowsOptions = config.recipe.options
        self.specs = self._task_specs()

    # ------------------------------------------------------------------ settings

    def _task_specs(self) -> list[Task]:
        """Tasks of the config checked against what the recipe can learn."""
        sections = self.config.tasks
        names = [t.name for t in sections] or list(self.default_tasks)
        unknown = [n for n in names if n not in TASK_KINDS]
        if unknown:
            raise ValueError(
                f"tasks: the windows recipe learns {list(TASK_KINDS)}; got '{unknown[0]}'"
            )
        loss = self.options.quantity_loss
        for t in sections:
            given = t.model_fields_set
            kind = TASK_KINDS[t.name]
            if "kind" in given and t.kind != kind:
                raise ValueError(f"tasks: '{t.name}' is a {kind} task here, not {t.kind}")
            if t.behavior not in (None, "buy" if t.name == "quantity" else t.name):
                raise ValueError(f"tasks: '{t.name}' cannot predict behavior '{t.behavior}'")
            if t.label not in (None, t.name):
                raise ValueError(f"tasks: '{t.name}' has no label column '{t.label}' here")
            if t.n_classes is not None:
                raise ValueError(f"tasks: '{t.name}' is not a multi-class task")
            if t.loss is None:
                continue
            if kind == "binary" and t.loss != "bce":
                raise ValueError(f"tasks: '{t.name}' is binary; its loss is bce, not {t.loss}")
            if kind == "regression":
                if t.loss not in _QUANTITY_LOSSES:
                    raise ValueError(
                        f"tasks: quantity loss must be one of {list(_QUANTITY_LOSSES)}, "
                        f"got '{t.loss}'"
                    )
                explicit = "quantity_loss" in self.options.model_fields_set
                if explicit and t.loss != self.options.quantity_loss:
                    raise ValueError(
                        f"tasks: quantity loss '{t.loss}' differs from recipe.quantity_loss "
                        f"'{self.options.quantity_loss}'; give it once"
                    )
                loss = t.loss  # type: ignore[assignment]
        self._quantity_loss = loss
        return task_specs(self.retail_config(), names)

    @property
    def target(self) -> str:
        """``evaluate.target`` when it names a task, else ``buy`` (else the first task: a
        single-task ``return`` or ``quantity`` model ranks by its own output)."""
        t = self.config.evaluate.target
        if t in self.tasks:
            return str(t)
        return "buy" if "buy" in self.tasks else self.tasks[0]

    def retail_config(self) -> RetailConfig:
        """The :class:`RetailConfig` these options make."""
        o = self.options
        return RetailConfig(
            n_negatives=o.n_negatives,
            popular_negatives=o.popular_negatives,
            history_negatives=o.history_negatives,
            max_history=o.max_history,
            recent_days=o.recent_days,
            recency_days=o.recency_days,
            return_prior=o.return_prior,
            embedding_dim=self.config.model.embedding_dim,
            history_pooling=o.history_pooling,
            quantity_loss=getattr(self, "_quantity_loss", o.quantity_loss),
        )

    # ------------------------------------------------------------------ steps

    def prepare(self, dataset: Dataset, split: Split) -> WindowsData:
        """Label windows before the cut, their features, the encoder and the tensors.

        Raises:
            DataError: events without timestamps, or no purchase in any window.
        """
        rcfg = self.retail_config()
        o = self.options
        parts = [split.train.df] + ([split.valid.df] if split.valid is not None else [])
        known = pl.concat(parts, how="vertical_relaxed")
        if known["timestamp"].null_count():
            raise DataError(
                "the windows recipe needs a timestamp on every event (train / valid have "
                f"{known['timestamp'].null_count()} without one)",
                column="timestamp",
            )
        cut = split.test_start
        if cut is None:
            test_ts = split.test.df["timestamp"].drop_nulls()
            cut = test_ts.min() if len(test_ts) else None
        if cut is None or cut <= known["timestamp"].max():  # type: ignore[operator]
            cut = known["timestamp"].max() + timedelta(milliseconds=1)  # type: ignore[operator]
        days = timedelta(days=o.window_days)
        valid_start = split.valid_start
        if valid_start is None and split.valid is not None and split.valid.df.height:
            valid_start = split.valid.df["timestamp"].min()
        if valid_start is None:
            valid_start = cut - days
            log.info("no validation part: the window %s .. %s validates", valid_start, cut)
        catalog = _catalog(dataset, known)
        pre_valid = known.filter(pl.col("timestamp") < valid_start)
        windows, train = [], []
        for k in range(1, o.n_train_windows + 1):
            start, end = valid_start - days * k, valid_start - days * (k - 1)
            rows, snap = window_samples(
                pre_valid, start, end, catalog, rcfg, seed=k + o.sample_seed
            )
            if rows.height == 0:
                log.info("training window %s .. %s has no purchase: skipped", start, end)
                continue
            windows.append((start, end))
            train.append((rows, snap))
        if not train:
            raise DataError(
                f"no purchase in any of the {o.n_train_windows} training windows of "
                f"{o.window_days:g} days before {valid_start}; shorten window_days or move "
                "the validation start"
            )
        valid = window_samples(known, valid_start, cut, catalog, rcfg, seed=100 + o.sample_seed)
        if valid[0].height == 0:
            raise DataError(f"no purchase in the validation window {valid_start} .. {cut}")
        enc = RetailEncoder(rcfg).fit(train)
        return WindowsData(
            catalog=catalog,
            known=known,
            cut=cut,
            valid_start=valid_start,
            windows=windows,
            train=train,
            valid=valid,
            snapshot=snapshot(known, cut, catalog, rcfg),
            encoder=enc,
            train_data=enc.transform(train),
            valid_data=enc.transform([valid]),
        )

    def build_model(self, data: WindowsData) -> MultiTaskModel:
        """The registry model of ``model:`` over the encoder's features, seeded by
        ``train.seed``."""
        torch.manual_seed(int(self.config.train.get("seed", 0)))
        return build_model(
            self.config.model.name,
            data.encoder.feature_specs(),
            self.specs,
            **self.config.model.config,
        )

    def test_rows(self, data: WindowsData, split: Split) -> pl.DataFrame:
        """The bought pairs of the test window ``[cut, last test event]`` with their labels
        and the features at the cut (empty when the test part has no purchase; computed once
        and kept in ``data``: ``split`` must be the one ``data`` was prepared from)."""
        if data.test_rows_ is None:
            data.test_rows_ = self._test_rows(data, split)
        return data.test_rows_

    def _test_rows(self, data: WindowsData, split: Split) -> pl.DataFrame:
        test = split.test.df.filter(pl.col("timestamp").is_not_null())
        if test.height == 0:
            return test.clear()
        end = test["timestamp"].max() + timedelta(seconds=1)  # type: ignore[operator]
        events = pl.concat([data.known, test], how="vertical_relaxed")
        rows, _ = window_samples(
            events,
            data.cut,
            end,
            data.catalog,
            data.encoder.cfg,
            negatives=False,
            snap=data.snapshot,
        )
        return rows

    def fit(self, dataset: Dataset, split: Split) -> TrainingRun:
        """Prepare the windows, build the model, train with validation, score the test
        window's bought pairs once (return AUC, quantity errors)."""
        tick = time.perf_counter()
        data = self.prepare(dataset, split)
        data_seconds = time.perf_counter() - tick
        return self.train(data, split, data_seconds=data_seconds)

    def train(self, data: WindowsData, split: Split, *, data_seconds: float = 0.0) -> TrainingRun:
        """:meth:`fit` after :meth:`prepare` (so several models can share one preparation).

        With ``auxiliary_selection: validation`` and more than one task, the task set is
        picked on validation (:meth:`_select_tasks`); otherwise one fit of the given tasks.
        """
        if self.options.auxiliary_selection == "validation" and len(self.tasks) > 1:
            return self._select_tasks(data, split, data_seconds=data_seconds)
        return self._train_one(data, split, data_seconds=data_seconds)

    def _task_sections(self) -> list[dict[str, Any]]:
        """The tasks as config entries (the defaults spelled out when ``tasks:`` is empty)."""
        given = {t.name: t.model_dump(exclude_defaults=True) for t in self.config.tasks}
        return [given.get(n, {"name": n, "kind": TASK_KINDS[n]}) for n in self.tasks]

    def _select_tasks(
        self, data: WindowsData, split: Split, *, data_seconds: float = 0.0
    ) -> TrainingRun:
        """Fit every task, and the task set without each auxiliary task (never the target);
        keep the fit whose validation scores (:func:`task_scores`, per task) gain most on
        average over the full set's scores of the same tasks, the full set when none gains.

        On Online Retail (benchmarks/RESULTS.md, multitask section) quantity pulled return
        AUC down: buy + return was picked on validation and was ahead on test as well.
        """
        sections = self._task_sections()
        full = self._train_one(data, split, data_seconds=data_seconds)
        fits: dict[str, TrainingRun] = {"+".join(self.tasks): full}
        for drop in self.tasks:
            if drop == self.target:
                continue
            kept = [t for t in sections if t["name"] != drop]
            cfg = self.config.with_values({"tasks": kept, "recipe.auxiliary_selection": "none"})
            fits["+".join(t["name"] for t in kept)] = WindowsRecipe(cfg)._train_one(data, split)

        def gain(run: TrainingRun) -> float:
            keys = [k for k in run.valid if k != "mean" and k in full.valid]
            if not keys:
                return float("-inf")
            return float(np.mean([run.valid[k] - full.valid[k] for k in keys]))

        gains = {name: gain(run) for name, run in fits.items()}
        best = max(fits, key=lambda n: (gains[n], n == "+".join(self.tasks)))
        if gains[best] <= 0:
            best = "+".join(self.tasks)
        log.info(
            "windows auxiliary selection: %s kept (validation gain over all tasks %s)",
            best,
            {n: round(g, 4) for n, g in gains.items()},
        )
        run = fits[best]
        run.info["auxiliary_selection"] = {
            "picked": best.split("+"),
            "valid": {
                n: {k: round(float(v), 4) for k, v in r.valid.items()} for n, r in fits.items()
            },
            "gain": {n: round(g, 4) for n, g in gains.items()},
        }
        run.info["train_seconds"] = sum(float(r.info["train_seconds"]) for r in fits.values())
        return run

    def _train_one(
        self, data: WindowsData, split: Split, *, data_seconds: float = 0.0
    ) -> TrainingRun:
        """One fit of the configured tasks on prepared windows (see :meth:`train`)."""
        model = self.build_model(data)
        train_data, valid_data = data.train_data, data.valid_data
        if "buy" not in self.tasks:  # return / quantity alone learn on bought rows only
            train_data = train_data.subset(torch.nonzero(train_data.columns["buy"] > 0)[:, 0])
            valid_data = valid_data.subset(torch.nonzero(valid_data.columns["buy"] > 0)[:, 0])
        tcfg = self.config.train.train_config()
        weighting = self.weighting(self.tasks)
        res = fit(
            model,
            train_data,
            config=tcfg,
            weighting=weighting,
            evaluator=lambda m: task_scores(m, valid_data),
        )
        log.info(
            "windows %s %s: best epoch %d of %d, valid %s",
            self.config.model.name,
            self.tasks,
            res.best_epoch,
            len(res.history),
            {k: round(v, 4) for k, v in res.best_scores.items()},
        )
        scorer = WindowsScorer(
            model,
            data.encoder,
            data.snapshot,
            data.known.filter(pl.col("behavior").is_in(["buy", "return"])).select(PAST_COLUMNS),
            data.catalog["item"].to_list(),
            self.target,
            correct_sampling=self.options.correct_sampling,
        )
        test = pointwise_metrics(model, data.encoder, self.test_rows(data, split), data.snapshot)
        return TrainingRun(
            scorer=scorer,
            valid=dict(res.best_scores),
            monitor=tcfg.monitor,
            history=res.history,
            best_epoch=res.best_epoch,
            info={
                "cut": data.cut.isoformat(),
                "valid_start": data.valid_start.isoformat(),
                "windows": [[s.isoformat(), e.isoformat()] for s, e in data.windows],
                "train_rows": len(train_data),
                "train_bought": int((data.train_data.columns["buy"] > 0).sum()),
                "valid_rows": len(valid_data),
                "items": data.catalog.height,
                "data_seconds": data_seconds,
                "train_seconds": res.train_seconds,
                "samples_per_second": res.samples_per_second,
                "stopped_early": res.stopped_early,
            },
            test=test,
        )


def _catalog(dataset: Dataset, known: pl.DataFrame) -> pl.DataFrame:
    """``item, price`` of the catalog plus any item of ``known`` it lacks (median event
    price), sorted by item."""
    seen = known.group_by("item").agg(pl.col("price").median().cast(pl.Float64))
    if dataset.catalog is None:
        return seen.sort("item")
    cat = dataset.catalog.df.select("item", pl.col("price").cast(pl.Float64))
    cat = cat.unique("item", keep="first")
    return pl.concat([cat, seen.join(cat, on="item", how="anti")]).sort("item")


def pointwise_metrics(
    model: nn.Module, encoder: RetailEncoder, rows: pl.DataFrame, snap: Snapshot
) -> dict[str, float]:
    """Return AUC and quantity errors of ``model`` on bought ``rows`` (a window's labels):
    ``return/auc``, ``quantity/rmse``, ``quantity/mae`` (units), ``quantity/rmse_log1p``,
    ``quantity/mae_log1p``, ``quantity/r2_log1p``, and ``n_pairs``. Empty without rows."""
    if rows.height == 0:
        return {}
    data = encoder.transform([(rows, snap)])
    preds = predict(model, data)
    out: dict[str, float] = {"n_pairs": float(rows.height)}
    if "return" in preds:
        y = rows["return"].to_numpy().astype(np.float64)
        if 0 < y.mean() < 1:
            out["return/auc"] = metrics.auc(y, preds["return"].numpy())
    if "quantity" in preds:
        y = rows["quantity"].to_numpy()
        p = preds["quantity"].numpy().astype(np.float64)
        ly, lp = np.log1p(y), np.log1p(np.clip(p, 0, None))
        out["quantity/rmse"] = metrics.rmse(y, p)
        out["quantity/mae"] = metrics.mae(y, p)
        out["quantity/rmse_log1p"] = metrics.rmse(ly, lp)
        out["quantity/mae_log1p"] = metrics.mae(ly, lp)
        out["quantity/r2_log1p"] = float(1 - np.mean((ly - lp) ** 2) / max(ly.var(), 1e-12))
    return out


# --------------------------------------------------------------------------- the scorer

_SCORER_FORMAT = "shoprec.windows_scorer"
_SCORER_VERSION = 1
_TINY = float(np.finfo(np.float32).tiny)


class WindowsScorer(Scorer):
    """Scores users x items from the snapshot at the cut, plus live events.

    ``score`` returns, per requested item: ``buy`` — the probability that the user buys it
    in the next window (sampling-rate corrected, so it ranks like the offline full-ranking
    evaluation); ``return`` — the probability of a return given a purchase; ``quantity`` —
    the expected units given a purchase (so ``buy * quantity * price`` is expected revenue).
    Live ``buy`` / ``return`` events update their users' own features (the repeat-purchase
    signal) before scoring; users never seen are scored with no history (the cold path:
    mostly the items' recent popularity).

    Args:
        model: the trained multi-task model.
        encoder: the fitted :class:`RetailEncoder`.
        snap: the snapshot at the cut.
        events: the buy / return events before the cut (:data:`PAST_COLUMNS`), for live
            updates.
        items: item ids by position.
        target: the task that ranks.
        correct_sampling: see :meth:`RetailEncoder.score_users`.
    """

    recipe = "windows"

    def __init__(
        self,
        model: MultiTaskModel,
        encoder: RetailEncoder,
        snap: Snapshot,
        events: pl.DataFrame,
        items: Sequence[str],
        target: str = "buy",
        *,
        correct_sampling: bool = True,
    ) -> None:
        super().__init__([t.name for t in model.tasks], target, items)
        self.model = model.eval()
        self.encoder = encoder
        self.snapshot = snap
        self.events = events
        self.correct_sampling = correct_sampling
        self._item_ids = pl.Series("item", self.items, dtype=pl.String)

    def _snapshot_for(
        self, users: Sequence[str], events: pl.DataFrame | None
    ) -> tuple[Snapshot, pl.DataFrame | None]:
        live = events_of(events, users)
        if live is None:
            return self.snapshot, None
        snap = with_live_events(self.snapshot, self.events, live, self.encoder.cfg)
        country = live.select("user", "domain") if "domain" in live.columns else None
        return snap, country

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """``{task: (U, C)}`` scores (see the class docstring), all > 0."""
        pos = positions_or_all(positions, self.n_items)
        users = [str(u) for u in users]
        if not users:
            return {t: np.zeros((0, len(pos)), dtype=np.float32) for t in self.tasks}
        snap, country = self._snapshot_for(users, events)
        scores = self.encoder.score_users(
            self.model,
            snap,
            users,
            self._item_ids.gather(pos),
            country_events=country,
            correct_sampling=self.correct_sampling,
        )
        return {
            t: np.clip(scores[t], _TINY, 1.0 if TASK_KINDS.get(t) == "binary" else None)
            for t in self.tasks
        }

    def forget_users(self, users: Sequence[str]) -> dict[str, int]:
        """Their rows of the snapshot's user and pair tables and of the past events, their
        id in the encoder (now unknown) and their rows of the model's user embedding."""
        from shoprec.forget import drop_user_rows, forget_in_model_inputs

        snap = self.snapshot
        snap.users, user_rows = drop_user_rows(snap.users, users)
        snap.pairs, pair_rows = drop_user_rows(snap.pairs, users)
        self.events, event_rows = drop_user_rows(self.events, users)
        out = forget_in_model_inputs(self.encoder.encoder_, self.model, users)
        return {
            "user_table_rows": user_rows,
            "pair_rows": pair_rows,
            "event_rows": event_rows,
            **out,
        }

    def gate_weights(self, user: str, position: int) -> dict[str, list[float]] | None:
        """Expert gate weights per task for one pair (MMoE; None for other models)."""
        if not hasattr(self.model, "gate_weights"):
            return None
        batch = self.encoder.pair_batch(
            self.snapshot, [user], self._item_ids.gather([int(position)])
        )
        gates = self.model.gate_weights(batch)  # type: ignore[operator]
        return {k: v[0].tolist() for k, v in gates.items()}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": getattr(self.model, "model_name", type(self.model).__name__),
            "cutoff": self.snapshot.cutoff.isoformat(),
            "known_users": self.snapshot.users.height,
        }

    def save(self, directory: Path) -> None:
        """``scorer.json``, ``encoder.json``, the snapshot and events as Parquet, the model
        in ``model/`` (safetensors)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _SCORER_FORMAT,
            "version": _SCORER_VERSION,
            "tasks": self.tasks,
            "target": self.target,
            "correct_sampling": self.correct_sampling,
            "cutoff": self.snapshot.cutoff.isoformat(),
            "global_log_qty": self.snapshot.global_log_qty,
            "global_return_rate": self.snapshot.global_return_rate,
        }
        (directory / "scorer.json").write_text(json.dumps(meta, indent=2) + "\n")
        (directory / "encoder.json").write_text(json.dumps(self.encoder.to_dict()) + "\n")
        pl.DataFrame({"item": self._item_ids}).write_parquet(directory / "items.parquet")
        self.snapshot.users.write_parquet(directory / "snapshot_users.parquet")
        self.snapshot.items.write_parquet(directory / "snapshot_items.parquet")
        self.snapshot.pairs.write_parquet(directory / "snapshot_pairs.parquet")
        self.events.write_parquet(directory / "events.parquet")
        save_model(self.model, directory / "model")

    @classmethod
    def load(cls, directory: Path) -> WindowsScorer:
        """Read what :meth:`save` wrote."""
        directory = Path(directory)
        meta = json.loads((directory / "scorer.json").read_text())
        if meta.get("format") != _SCORER_FORMAT or meta.get("version") != _SCORER_VERSION:
            raise ValueError(f"{directory} holds no windows scorer (v{_SCORER_VERSION})")
        encoder = RetailEncoder.from_dict(json.loads((directory / "encoder.json").read_text()))
        snap = Snapshot(
            datetime.fromisoformat(meta["cutoff"]),
            pl.read_parquet(directory / "snapshot_users.parquet"),
            pl.read_parquet(directory / "snapshot_items.parquet"),
            pl.read_parquet(directory / "snapshot_pairs.parquet"),
            float(meta["global_log_qty"]),
            float(meta["global_return_rate"]),
        )
        return cls(
            load_model(directory / "model"),
            encoder,
            snap,
            pl.read_parquet(directory / "events.parquet"),
            pl.read_parquet(directory / "items.parquet")["item"].to_list(),
            meta["target"],
            correct_sampling=bool(meta["correct_sampling"]),
        )


WindowsRecipe.scorer_class = WindowsScorer
