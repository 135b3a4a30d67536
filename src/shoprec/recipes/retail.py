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
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from shoprec.data.batches import TensorData, to_tensors
from shoprec.data.encode import Encoder
from shoprec.evaluate import metrics
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
    "CATEGORICAL",
    "HISTORY",
    "ITEM_NUMERIC",
    "PAIR_NUMERIC",
    "USER_NUMERIC",
    "RetailConfig",
    "RetailEncoder",
    "SequenceData",
    "Snapshot",
    "inclusion_rates",
    "item_return_rate",
    "mean_quantity",
    "negative_distribution",
    "popularity_scores",
    "repeat_scores",
    "snapshot",
    "task_scores",
    "task_specs",
    "window_labels",
    "window_samples",
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


def snapshot(
    events: pl.DataFrame,
    cutoff: datetime,
    catalog: pl.DataFrame,
    cfg: RetailConfig | None = None,
) -> Snapshot:
    """Features of users, items and pairs from the events before ``cutoff``.

    Args:
        events: interactions (``user, item, timestamp, behavior, quantity, domain``) with
            behaviors ``buy`` and ``return``; later events are ignored.
        cutoff: the instant the features describe.
        catalog: ``item, price`` of every item that can be ranked (price may be null).
        cfg: the recipe settings.

    Returns:
        The :class:`Snapshot`.
    """
    cfg = cfg or RetailConfig()
    past = events.filter(pl.col("timestamp") < cutoff)
    buys = past.filter(pl.col("behavior") == "buy")
    returns = past.filter(pl.col("behavior") == "return")
    days = (pl.lit(cutoff) - pl.col("timestamp")).dt.total_seconds() / 86_400.0
    log_qty = pl.col("quantity").cast(pl.Float64).log1p()
    g_qty = float(buys.select(log_qty.mean()).item() or 0.0) if buys.height else 0.0
    g_ret = returns.height / max(buys.height, 1)
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
    return Snapshot(cutoff, users, items, pairs)


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
    users = snap.users.drop(HISTORY)
    if country_events is not None:
        fallback = country_events.group_by("user").agg(
            pl.col("domain").mode().sort().first().alias("_country")
        )
        users = (
            fallback.join(users, on="user", how="full", coalesce=True)
            .with_columns(pl.coalesce("country", "_country").alias("country"))
            .drop("_country")
        )
    out = (
        rows.join(users, on="user", how="left", maintain_order="left")
        .join(snap.items, on="item", how="left", maintain_order="left")
        .join(snap.pairs, on=["user", "item"], how="left", maintain_order="left")
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
        user_rows = pl.DataFrame({"user": users, "item": pl.Series([None] * n_u, dtype=pl.String)})
        u = attach_features(user_rows, snap, country_events)
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
        pos_u = pl.DataFrame({"user": users, "_u": np.arange(n_u)})
        pos_i = pl.DataFrame({"item": items, "_i": np.arange(n_i)})
        known = snap.pairs.join(pos_u, on="user").join(pos_i, on="item")
        if known.height:
            enc = self.encoder_.transform(known, list(PAIR_NUMERIC))
            r, c = known["_u"].to_numpy(), known["_i"].to_numpy()
            for col in PAIR_NUMERIC:
                dense[col][r, c] = enc[col]

        per = max(1, batch_rows // max(n_i, 1))  # users per forward pass
        out: dict[str, list[np.ndarray]] = {}
        model.eval()
        for s in range(0, n_u, per):
            e = min(s + per, n_u)
            rep = torch.arange(s, e).repeat_interleave(n_i)  # (C*I,)
            batch = {k: v[rep] for k, v in ucols.items()}
            batch.update({k: v.repeat(e - s) for k, v in icols.items()})
            batch.update({k: torch.from_numpy(v[s:e].reshape(-1)) for k, v in dense.items()})
            batch[HISTORY] = hist[rep]
            for name, p in model.predict(batch).items():
                out.setdefault(name, []).append(p.reshape(e - s, n_i).float().numpy())
        scores = {k: np.concatenate(v) for k, v in out.items()}
        if correct_sampling and self.cfg.n_negatives > 0 and "buy" in scores:
            rates = pl.DataFrame(
                {"item": snap.items["item"], "_r": inclusion_rates(snap, self.cfg)}
            )
            rate = (
                pos_i.join(rates, on="item", how="left", maintain_order="left")["_r"]
                .fill_null(1.0)
                .to_numpy()
            )
            p = scores["buy"].astype(np.float64)
            never = dense["ui_log_orders"] == fill["ui_log_orders"][0]  # (U, I) never bought
            r = np.where(never, rate[None, :], 1.0)
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
