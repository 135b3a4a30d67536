"""From a dataset and a split to model-ready tensors, and from a model back to item scores.

This is the glue the CLI, the demo and the benchmarks share: build (user, item) samples with
one label per behavior, join catalog and user attributes, fit the encoder on the training part
only, and describe the result as feature and task specs a model can be built from.

Example:
    >>> from shoprec.data.simulate import simulate_shop
    >>> from shoprec.data.split import time_split
    >>> shop = simulate_shop(n_events=20_000, seed=0)
    >>> split = time_split(shop.dataset.interactions, test_days=10, valid_days=10)
    >>> data = prepare_ranking(shop.dataset, split, ["view", "cart", "buy"])
    >>> [t.name for t in data.tasks]
    ['view', 'cart', 'buy']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from shoprec.data.batches import TensorData, to_tensors
from shoprec.data.encode import Encoder
from shoprec.data.samples import attach, pair_samples
from shoprec.data.schema import Dataset
from shoprec.data.split import Split
from shoprec.models.features import CategoricalFeature, FeatureSpec, NumericFeature, Task
from shoprec.train.loop import predict

#: Catalog and user columns used as features when present.
ITEM_CATEGORICAL = ("item_category", "item_brand")
ITEM_NUMERIC = ("item_log_price",)
ID_COLUMNS = ("user", "item", "domain")


@dataclass
class FeatureBuilder:
    """Turns (user, item) pairs into model input: attribute joins plus the fitted encoder.

    Everything it holds is saved as JSON or Parquet (:meth:`save` / :meth:`load`), so an
    artifact can score pairs without the training data.
    """

    encoder: Encoder
    item_table: pl.DataFrame  # one row per known item: item + attributes (prefixed item_)
    user_table: pl.DataFrame | None  # user attributes and the user's main domain
    categorical: list[str]
    numeric: list[str]

    def frame(
        self, users: Sequence[str], items: Sequence[str] | pl.Series | None = None
    ) -> pl.DataFrame:
        """Raw feature columns for every (user, item) of ``users`` x ``items`` (all known
        items by default), in user-major order."""
        item_ids = self.item_table["item"] if items is None else pl.Series(items, dtype=pl.String)
        frame = pl.DataFrame(
            {
                "user": np.repeat(np.asarray(users, dtype=object), len(item_ids)),
                "item": np.tile(item_ids.to_numpy(), len(users)),
            },
            schema={"user": pl.String, "item": pl.String},
        )
        frame = frame.join(self.item_table, on="item", how="left", maintain_order="left")
        if self.user_table is not None:
            frame = frame.join(self.user_table, on="user", how="left", maintain_order="left")
        if "domain" in self.categorical and "user_domain" in frame.columns:
            frame = frame.with_columns(pl.col("user_domain").alias("domain"))
        return frame

    def pairs(
        self, users: Sequence[str], items: Sequence[str] | pl.Series | None = None
    ) -> TensorData:
        """Encoded model input for ``users`` x ``items``."""
        arrays = self.encoder.transform(self.frame(users, items), self.categorical + self.numeric)
        return TensorData(to_tensors(arrays))

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.to_json(directory / "encoder.json")
        self.item_table.write_parquet(directory / "items.parquet")
        if self.user_table is not None:
            self.user_table.write_parquet(directory / "users.parquet")
        (directory / "features.json").write_text(
            json.dumps({"categorical": self.categorical, "numeric": self.numeric}, indent=2)
        )

    @classmethod
    def load(cls, directory: str | Path) -> FeatureBuilder:
        directory = Path(directory)
        cols = json.loads((directory / "features.json").read_text())
        users = directory / "users.parquet"
        return cls(
            encoder=Encoder.from_json(directory / "encoder.json"),
            item_table=pl.read_parquet(directory / "items.parquet"),
            user_table=pl.read_parquet(users) if users.exists() else None,
            categorical=cols["categorical"],
            numeric=cols["numeric"],
        )


def score_pairs(
    model: torch.nn.Module,
    builder: FeatureBuilder,
    users: Sequence[str],
    items: Sequence[str] | pl.Series | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of every task for ``users`` x ``items``: arrays of shape (U, I)."""
    n_items = builder.item_table.height if items is None else len(items)
    preds = predict(model, builder.pairs(users, items))
    return {k: v.numpy().reshape(len(users), n_items) for k, v in preds.items()}


@dataclass
class RankingData:
    """Encoded samples of a split plus the :class:`FeatureBuilder` to score new pairs."""

    builder: FeatureBuilder
    features: list[FeatureSpec]
    tasks: list[Task]
    train: TensorData
    valid: TensorData | None
    test: TensorData

    @property
    def encoder(self) -> Encoder:
        return self.builder.encoder

    @property
    def item_table(self) -> pl.DataFrame:
        return self.builder.item_table

    def score(self, model: torch.nn.Module, users: Sequence[str]) -> dict[str, np.ndarray]:
        """Predictions of every task for ``users`` x all items: arrays of shape (U, I)."""
        return score_pairs(model, self.builder, users)


def _with_item_features(table: pl.DataFrame) -> pl.DataFrame:
    if "item_price" in table.columns:
        table = table.with_columns(pl.col("item_price").log1p().alias("item_log_price"))
    return table


def prepare_ranking(
    ds: Dataset,
    split: Split,
    behaviors: Sequence[str],
    *,
    n_negatives: int = 4,
    seed: int = 0,
    embedding_dim: int = 16,
    user_attributes: Sequence[str] | None = None,
    encoder: Encoder | None = None,
) -> RankingData:
    """Samples, encoder (fitted on train only), feature and task specs for multi-task ranking.

    Args:
        ds: the dataset (its catalog and users tables give item and user features).
        split: train / valid / test events.
        behaviors: one binary task per behavior, e.g. ``["view", "cart", "buy"]``.
        n_negatives: sampled untouched items per touched pair.
        seed: seed of the negative draws.
        embedding_dim: embedding size of every categorical feature.
        user_attributes: user columns to use as features; all of them by default.
        encoder: an already fitted encoder to reuse (e.g. a saved artifact's); fitted on
            the training samples otherwise.

    Returns:
        The encoded parts and what is needed to score more pairs later.
    """
    behaviors = [str(b) for b in behaviors]
    items = (
        ds.catalog.df["item"]
        if ds.catalog is not None
        else ds.interactions.df["item"].unique().sort()
    )
    item_table = pl.DataFrame({"item": items.unique().sort()})
    if ds.catalog is not None:
        cols = [
            c
            for c in ("category", "brand", "price")
            if ds.catalog.df[c].null_count() < len(ds.catalog)
        ]
        item_table = attach(item_table, ds.catalog.df.select("item", *cols), None)
    item_table = _with_item_features(item_table)
    user_table = None
    if ds.users is not None:
        keep = list(user_attributes) if user_attributes is not None else ds.users.attributes
        user_table = ds.users.df.select("user", *keep)
    # The user's main domain, from training events, for scoring new pairs.
    user_domain = split.train.df.group_by("user").agg(
        pl.col("domain").mode().sort().first().alias("user_domain")
    )
    user_table = (
        user_domain if user_table is None else user_table.join(user_domain, on="user", how="left")
    )

    def build(part, exclude, part_seed: int) -> pl.DataFrame:
        samples = pair_samples(
            part,
            behaviors,
            n_negatives=n_negatives,
            items=item_table["item"],
            seed=part_seed,
            exclude=exclude,
        )
        return samples.join(item_table, on="item", how="left").join(
            user_table, on="user", how="left"
        )

    train_df = build(split.train, None, seed)
    valid_df = build(split.valid, split.train, seed + 1) if split.valid is not None else None
    test_df = build(split.test, split.train, seed + 2)

    attr_cols = [c for c in user_table.columns if c not in ("user", "user_domain")]
    categorical = [
        *ID_COLUMNS,
        *[c for c in ITEM_CATEGORICAL if c in item_table.columns],
        *[
            c
            for c in attr_cols
            if user_table.schema[c] in (pl.String, pl.Categorical)
            or user_table.schema[c].is_integer()
        ],
    ]
    numeric = [c for c in ITEM_NUMERIC if c in item_table.columns]
    if encoder is None:
        encoder = Encoder(categorical=categorical, numeric=numeric).fit(train_df)
    features: list[FeatureSpec] = [
        CategoricalFeature(c, vocab_size=encoder.vocab_size(c), dim=embedding_dim)
        for c in categorical
    ] + [NumericFeature(c) for c in numeric]
    tasks = [Task(b, kind="binary") for b in behaviors]

    def tensors(df: pl.DataFrame) -> TensorData:
        arrays = encoder.transform(df, categorical + numeric)
        arrays.update({b: df[b].to_numpy().astype(np.float32) for b in behaviors})
        return TensorData(to_tensors(arrays))

    builder = FeatureBuilder(encoder, item_table, user_table, categorical, numeric)
    return RankingData(
        builder=builder,
        features=features,
        tasks=tasks,
        train=tensors(train_df),
        valid=tensors(valid_df) if valid_df is not None else None,
        test=tensors(test_df),
    )
