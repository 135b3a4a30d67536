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
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from shoprec.data.batches import TensorData, to_tensors
from shoprec.data.encode import Encoder
from shoprec.data.samples import attach, pair_samples
from shoprec.data.schema import Catalog, Dataset, Interactions, Users
from shoprec.data.shards import ShardedData, ShardWriter
from shoprec.data.split import Split
from shoprec.models.features import CategoricalFeature, FeatureSpec, NumericFeature, Task
from shoprec.train.loop import predict

log = logging.getLogger(__name__)

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
    train: TensorData | ShardedData  # shards: rows on disk, read one shard at a time
    valid: TensorData | ShardedData | None
    test: TensorData | ShardedData

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


def _tables(
    catalog: Catalog | None,
    users: Users | None,
    items: pl.Series,
    user_attributes: Sequence[str] | None,
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The item table (item + ``item_`` attributes) and the user attribute table."""
    item_table = pl.DataFrame({"item": items.unique().sort()})
    if catalog is not None:
        cols = [
            c for c in ("category", "brand", "price") if catalog.df[c].null_count() < len(catalog)
        ]
        item_table = attach(item_table, catalog.df.select("item", *cols), None)
    item_table = _with_item_features(item_table)
    user_table = None
    if users is not None:
        keep = list(user_attributes) if user_attributes is not None else users.attributes
        user_table = users.df.select("user", *keep)
    return item_table, user_table


def _user_domain(train: Interactions) -> pl.DataFrame:
    """Each user's main domain in the training events (``user``, ``user_domain``)."""
    return train.df.group_by("user").agg(
        pl.col("domain").mode().sort().first().alias("user_domain")
    )


def _feature_columns(
    item_table: pl.DataFrame, user_table: pl.DataFrame
) -> tuple[list[str], list[str]]:
    """The categorical and numeric feature columns of the sample rows."""
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
    return categorical, numeric


def _specs(
    encoder: Encoder,
    categorical: list[str],
    numeric: list[str],
    behaviors: list[str],
    embedding_dim: int,
) -> tuple[list[FeatureSpec], list[Task]]:
    features: list[FeatureSpec] = [
        CategoricalFeature(c, vocab_size=encoder.vocab_size(c), dim=embedding_dim)
        for c in categorical
    ] + [NumericFeature(c) for c in numeric]
    return features, [Task(b, kind="binary") for b in behaviors]


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
    item_table, user_table = _tables(ds.catalog, ds.users, items, user_attributes)
    # The user's main domain, from training events, for scoring new pairs.
    user_domain = _user_domain(split.train)
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

    categorical, numeric = _feature_columns(item_table, user_table)
    if encoder is None:
        encoder = Encoder(categorical=categorical, numeric=numeric).fit(train_df)
    features, tasks = _specs(encoder, categorical, numeric, behaviors, embedding_dim)

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


def _part_seed(seed: int, part: int, bucket: int) -> int:
    """The negative-draw seed of one split part of one bucket of users."""
    return int(np.random.SeedSequence([seed, part, bucket]).generate_state(1)[0])


def _merge_counts(acc: pl.DataFrame | None, new: pl.DataFrame, col: str) -> pl.DataFrame:
    """Running per-value counts (``col``, ``n``) summed over buckets."""
    if acc is None:
        return new
    return pl.concat([acc, new]).group_by(col).agg(pl.col("n").sum())


def _vocab(counts: pl.DataFrame, col: str) -> list[str]:
    """Known values of ``col`` most frequent first, ties by value (as ``Encoder.fit``)."""
    freq = (
        counts.select(pl.col(col).cast(pl.String).alias("v"), "n")
        .drop_nulls("v")
        .group_by("v")
        .agg(pl.col("n").sum())
        .sort(["n", "v"], descending=[True, False])
    )
    return freq["v"].to_list()


def _encoder_from_counts(
    categorical: list[str],
    numeric: list[str],
    counts: dict[str, pl.DataFrame],
    item_table: pl.DataFrame,
    user_table: pl.DataFrame,
    n_rows: int,
) -> Encoder:
    """The encoder ``Encoder.fit`` learns from the training rows, from their value counts:
    ids, items and domains counted per bucket; item and user attributes weighted by the
    counts of their items and users; numeric statistics weighted the same way."""
    vocab: dict[str, list[str]] = {}
    for col in categorical:
        if col in counts:
            vocab[col] = _vocab(counts[col], col)
        elif col in item_table.columns:
            joined = counts["item"].join(item_table.select("item", col), on="item", how="left")
            vocab[col] = _vocab(joined, col)
        else:
            joined = counts["user"].join(user_table.select("user", col), on="user", how="left")
            vocab[col] = _vocab(joined, col)
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    for col in numeric:
        x = counts["item"].join(item_table.select("item", col), on="item", how="left")
        x = x.filter(pl.col(col).is_not_null() & pl.col(col).is_not_nan())
        w, v = x["n"].cast(pl.Float64).to_numpy(), x[col].cast(pl.Float64).to_numpy()
        m = float(np.average(v, weights=w)) if w.sum() > 0 else 0.0
        sd = float(np.sqrt(np.average((v - m) ** 2, weights=w))) if w.sum() > 0 else 0.0
        mean[col], std[col] = m, (sd if np.isfinite(sd) and sd > 0 else 1.0)
    return Encoder.from_dict(
        {
            "format": "shoprec.encoder",
            "version": 1,
            "categorical": categorical,
            "numeric": numeric,
            "sequences": {},
            "min_count": 1,
            "hash_buckets": 0,
            "max_seq_len": None,
            "null_flags": False,
            "n_rows": n_rows,
            "vocab": vocab,
            "mean": mean,
            "std": std,
        }
    )


def prepare_ranking_shards(
    events: pl.LazyFrame,
    catalog: Catalog | None,
    users: Users | None,
    behaviors: Sequence[str],
    directory: str | Path,
    *,
    n_negatives: int = 4,
    seed: int = 0,
    embedding_dim: int = 16,
    user_attributes: Sequence[str] | None = None,
    bucket_events: int = 1_000_000,
    shard_rows: int = 1_000_000,
) -> RankingData:
    """:func:`prepare_ranking` for events larger than memory: the same rows, in Parquet shards.

    The events are streamed (Polars' streaming engine) into buckets of users
    (:func:`shoprec.data.partitioned.partition_events`, about ``bucket_events`` events
    each); each bucket in turn is split into its parts, turned into the pairs recipe's
    samples (:func:`~shoprec.data.samples.pair_samples`: touched pairs plus negatives drawn
    for that bucket, a seeded draw per bucket and part, vectorised) and written as Parquet;
    the encoder is fitted from the training samples' value counts (the vocabulary and
    statistics :meth:`Encoder.fit` learns from those rows), then each bucket's samples are
    joined with the item and user tables, encoded and written as shards of about
    ``shard_rows`` rows (training rows scattered at random over the shards; valid / test in
    order). Memory holds one bucket, the item and user tables and the vocabularies, never all
    events or rows.

    The rows are those of :func:`prepare_ranking` on the same split: the same touched pairs
    and labels, negatives drawn from the same pool with the same exclusions, but other
    random draws (per bucket), so the same data in distribution, not row for row.

    Args:
        events: lazy events with the split part of each in
            :data:`shoprec.data.partitioned.PART` (``train`` / ``valid`` / ``test``; from
            :func:`~shoprec.data.partitioned.with_time_parts` or
            :func:`~shoprec.data.partitioned.split_frame`).
        catalog: item attributes (the negative pool is its items; else the events' items).
        users: user attributes.
        behaviors: one binary task per behavior.
        directory: scratch folder for buckets and shards (created; the shards stay in
            ``train/``, ``valid/``, ``test/``).
        n_negatives: sampled untouched items per touched pair.
        seed: seed of the negative draws and of the scatter over shards.
        embedding_dim: embedding size of every categorical feature.
        user_attributes: user columns to use as features; all of them by default.
        bucket_events: about how many events one bucket holds (memory per bucket).
        shard_rows: about how many rows one training shard holds (memory while training).

    Returns:
        A :class:`RankingData` whose parts are :class:`~shoprec.data.shards.ShardedData`.
    """
    import shutil

    from shoprec.data.partitioned import PART, partition_events

    t0 = time.perf_counter()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    behaviors = [str(b) for b in behaviors]
    n_events = events.select(pl.len()).collect(engine="streaming").item()
    n_buckets = max(1, -(-n_events // max(bucket_events, 1)))
    items = (
        catalog.df["item"]
        if catalog is not None
        else events.select(pl.col("item").unique().sort()).collect(engine="streaming")["item"]
    )
    item_table, attr_table = _tables(catalog, users, items, user_attributes)
    pool = item_table["item"]
    buckets = partition_events(events, directory / "events", n_buckets=n_buckets, seed=seed)
    raw = directory / "raw"
    rows = {"train": 0, "valid": 0, "test": 0}
    counts: dict[str, pl.DataFrame | None] = {"user": None, "item": None, "domain": None}
    domains: list[pl.DataFrame] = []
    keep = ["user", "item", "domain", *behaviors]
    for k, path in enumerate(buckets):
        df = pl.read_parquet(path)
        part = df[PART]
        checked = Interactions.from_frame(df.drop(PART)).df.with_columns(part)
        del df
        parts = {
            name: Interactions(checked.filter(pl.col(PART) == name).drop(PART))
            for name in ("train", "valid", "test")
        }
        del checked
        train = parts["train"]
        domains.append(_user_domain(train))
        for i, name in enumerate(("train", "valid", "test")):
            if parts[name].df.height == 0:
                continue
            samples = pair_samples(
                parts[name],
                behaviors,
                n_negatives=n_negatives,
                items=pool,
                seed=_part_seed(seed, i, k),
                exclude=None if name == "train" else train,
            ).select(keep)
            (raw / name).mkdir(parents=True, exist_ok=True)
            samples.write_parquet(raw / name / f"{k:05d}.parquet")
            rows[name] += samples.height
            if name == "train":
                for col in counts:
                    new = samples.group_by(col).agg(pl.len().cast(pl.Int64).alias("n"))
                    counts[col] = _merge_counts(counts[col], new, col)
        log.info("bucket %d / %d: %s rows so far", k + 1, len(buckets), rows)
    shutil.rmtree(directory / "events", ignore_errors=True)
    if rows["train"] == 0 or rows["test"] == 0:
        raise ValueError(f"the split leaves no training or test samples: {rows}")
    user_domain = pl.concat(domains)
    user_table = (
        user_domain if attr_table is None else attr_table.join(user_domain, on="user", how="left")
    )
    categorical, numeric = _feature_columns(item_table, user_table)
    encoder = _encoder_from_counts(
        categorical,
        numeric,
        {c: v for c, v in counts.items() if v is not None},
        item_table,
        user_table,
        rows["train"],
    )
    features, tasks = _specs(encoder, categorical, numeric, behaviors, embedding_dim)
    out: dict[str, ShardedData] = {}
    for name in ("train", "valid", "test"):
        files = sorted((raw / name).glob("*.parquet"))
        if not files:
            continue
        if name == "train":
            n_shards = max(1, -(-rows[name] // shard_rows))
            writer = ShardWriter(directory / name, n_shards, scatter=True, seed=seed)
        else:
            writer = ShardWriter(directory / name, len(files), scatter=False)
        for f in files:
            df = (
                pl.read_parquet(f)
                .join(item_table, on="item", how="left", maintain_order="left")
                .join(user_table, on="user", how="left", maintain_order="left")
            )
            arrays = encoder.transform(df, categorical + numeric)
            arrays.update({b: df[b].to_numpy().astype(np.float32) for b in behaviors})
            writer.write(arrays)
        out[name] = writer.close()
    shutil.rmtree(raw, ignore_errors=True)
    log.info(
        "prepared %d events into %s training rows in %d shards (%.1fs)",
        n_events,
        f"{rows['train']:,}",
        out["train"].n_shards,
        time.perf_counter() - t0,
    )
    return RankingData(
        builder=FeatureBuilder(encoder, item_table, user_table, categorical, numeric),
        features=features,
        tasks=tasks,
        train=out["train"],
        valid=out.get("valid"),
        test=out["test"],
    )
