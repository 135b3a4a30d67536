"""The two-tower retrieval model's features and training on an artifact's events.

The model is :class:`~shoprec.models.two_tower.TwoTower` (the paper and the loss are there).
The towers know nothing of the ranking recipe: their inputs come from the artifact's
``items.parquet`` and ``seen.parquet`` alone, encoded by :class:`RetrievalFeatures` (its own
small encoder, saved as JSON beside the model), so any recipe's artifact gets the same
candidate sources. :func:`train_two_tower` fits it with the one fit loop on the training
events' (user, item) pairs; item ids are learned only for items with training events, so a
new item is its attributes. :func:`embed_items` and :func:`embed_users` give the unit vectors
that the inner-product index, "similar items", session boosts and "because you bought X" use.

Example:
    >>> features = RetrievalFeatures.fit(
    ...     pl.DataFrame({"item": ["a", "b"]}),
    ...     pl.DataFrame({"user": ["u", "v"], "item": ["a", "b"], "behavior": ["buy", "buy"]}),
    ... )
    >>> model = train_two_tower(features, pl.DataFrame({"item": ["a", "b"]}),
    ...     pl.DataFrame({"user": ["u", "v"], "item": ["a", "b"], "behavior": ["buy", "buy"]}))
    >>> embed_items(model, features, pl.DataFrame({"item": ["a", "c"]})).shape
    (2, 32)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from shoprec.data.batches import TensorData
from shoprec.data.encode import Encoder
from shoprec.models.features import CategoricalFeature, FeatureSpec, NumericFeature
from shoprec.models.layers import Batch
from shoprec.models.two_tower import TwoTower, TwoTowerConfig
from shoprec.train.loop import TrainConfig, fit

log = logging.getLogger(__name__)

USER_ENCODER_FILE = "user_encoder.json"
ITEM_ENCODER_FILE = "item_encoder.json"
#: Item-side inputs, when the item table has them (``log_price`` is ``log1p(price)``).
ITEM_CATEGORICAL = ("item", "category", "brand")
ITEM_NUMERIC = ("log_price",)


def item_frame(items: pl.DataFrame) -> pl.DataFrame:
    """The item-side input columns of an item table (``item`` plus whichever of category,
    brand and price it has; absent ones stay absent)."""
    cols = [pl.col("item").cast(pl.String)]
    for c in ("category", "brand"):
        if c in items.columns:
            cols.append(pl.col(c).cast(pl.String))
    if "price" in items.columns:
        price = pl.col("price").cast(pl.Float64)
        cols.append(pl.when(price >= 0).then(price.log1p()).otherwise(None).alias("log_price"))
    return items.select(cols)


def _tensors(arrays: dict[str, np.ndarray]) -> Batch:
    return {
        k: torch.from_numpy(np.array(v, copy=True)).to(
            torch.float32 if np.issubdtype(v.dtype, np.floating) else torch.int64
        )
        for k, v in arrays.items()
    }


class RetrievalFeatures:
    """The towers' encoders: user ids, and item id / category / brand / log price.

    Fitted on the items with training events (a new item's id maps to OOV, its attributes
    to their learned ids) and on the users of the training events. Saved as two JSON files.

    Args:
        users: the user-side encoder (``user``).
        items: the item-side encoder.
    """

    def __init__(self, users: Encoder, items: Encoder) -> None:
        self.users = users
        self.items = items

    @classmethod
    def fit(cls, items: pl.DataFrame, seen: pl.DataFrame) -> RetrievalFeatures:
        """Learn vocabularies and price statistics from an artifact's tables.

        Args:
            items: the item table (``item`` and optionally category, brand, price).
            seen: training events (``user, item, behavior``).
        """
        warm = item_frame(items.join(seen.select("item").unique(), on="item", how="semi"))
        keep = [c for c in warm.columns if c == "item" or warm[c].null_count() < warm.height]
        cats = [c for c in ITEM_CATEGORICAL if c in keep]
        nums = [c for c in ITEM_NUMERIC if c in keep]
        item_enc = Encoder(categorical=cats, numeric=nums).fit(warm.select(cats + nums))
        users = seen.select(pl.col("user").cast(pl.String)).unique().sort("user")
        return cls(Encoder(categorical=["user"]).fit(users), item_enc)

    @property
    def user_columns(self) -> list[str]:
        return self.users.columns

    @property
    def item_columns(self) -> list[str]:
        return self.items.columns

    def encode_users(self, users: Sequence[str]) -> Batch:
        """User-side input, ``(N,)`` per key; unknown users get the OOV id."""
        return _tensors(
            self.users.transform(pl.DataFrame({"user": list(users)}, {"user": pl.String}))
        )

    def encode_items(self, items: pl.DataFrame) -> Batch:
        """Item-side input, ``(N,)`` per key, for rows of an item table (missing attributes
        and unknown values get the OOV id or the training mean)."""
        frame = item_frame(items)
        missing = [c for c in self.item_columns if c not in frame.columns]
        frame = frame.with_columns(
            [pl.lit(None, pl.Float64 if c in ITEM_NUMERIC else pl.String).alias(c) for c in missing]
        )
        return _tensors(self.items.transform(frame, self.item_columns))

    def specs(self, dim: int) -> tuple[list[FeatureSpec], list[FeatureSpec]]:
        """Feature specs of the user side and of the item side."""

        def side(enc: Encoder) -> list[FeatureSpec]:
            out: list[FeatureSpec] = [
                CategoricalFeature(c, enc.vocab_size(c), dim) for c in enc.categorical
            ]
            return out + [NumericFeature(c) for c in enc.numeric]

        return side(self.users), side(self.items)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.users.to_json(directory / USER_ENCODER_FILE)
        self.items.to_json(directory / ITEM_ENCODER_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> RetrievalFeatures:
        directory = Path(directory)
        return cls(
            Encoder.from_json(directory / USER_ENCODER_FILE),
            Encoder.from_json(directory / ITEM_ENCODER_FILE),
        )


def train_two_tower(
    features: RetrievalFeatures,
    items: pl.DataFrame,
    seen: pl.DataFrame,
    config: TwoTowerConfig | None = None,
    *,
    progress: bool = False,
) -> TwoTower:
    """Fit a :class:`~shoprec.models.two_tower.TwoTower` on the training events' pairs with the
    in-batch softmax, through :func:`~shoprec.train.loop.fit` (every epoch, no validation).

    Args:
        features: the fitted encoders.
        items: the item table (its rows give the item side's attributes).
        seen: training events with ``user``, ``item``, ``behavior``; rows of the configured
            behaviors are the positive pairs (a pair counted once per behavior, so deeper
            engagement weighs more); items outside ``items`` are ignored.
        config: sizes and training knobs.
        progress: show the fit loop's progress bar (on stderr).

    Returns:
        The model, in eval mode.
    """
    c = config or TwoTowerConfig()
    torch.manual_seed(c.seed)
    user_specs, item_specs = features.specs(c.embedding_dim)
    model = TwoTower(user_specs, item_specs, c)
    rows = pl.DataFrame({"item": items["item"], "row": np.arange(items.height, dtype=np.int64)})
    pairs = (
        seen.filter(pl.col("behavior").is_in(list(c.behaviors)))
        .select("user", "item")
        .join(rows, on="item", how="inner")
    )
    if pairs.height < 2:
        log.warning("no positive pairs to train the two-tower model on; it stays random")
        return model.eval()
    users = pairs["user"].unique(maintain_order=True)
    item_rows = pairs["row"].unique(maintain_order=True)
    u_idx = torch.tensor(
        pairs["user"].replace_strict(users, range(len(users)), return_dtype=pl.Int64).to_numpy()
    )
    i_idx = torch.tensor(
        pairs["row"].replace_strict(item_rows, range(len(item_rows)), return_dtype=pl.Int64)
        .to_numpy()
    )  # fmt: skip
    user_x = features.encode_users(users.to_list())
    item_x = features.encode_items(items[item_rows.to_numpy()])
    log_q = torch.log(torch.bincount(i_idx, minlength=len(item_rows)).float() / len(i_idx))
    data = TensorData(
        {
            **{k: v[u_idx] for k, v in user_x.items()},  # (P,) per key: one row per pair
            **{k: v[i_idx] for k, v in item_x.items()},
            "item_index": i_idx,  # duplicates of a batch's items are not its negatives
            "item_log_q": log_q[i_idx],
        }
    )
    train = TrainConfig(
        epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=c.seed, progress=progress
    )
    result = fit(model, data, config=train)
    log.info(
        "two-tower trained on %d pairs in %.1f s (in-batch softmax loss %.4f)",
        len(data),
        result.train_seconds,
        result.history[-1]["train_loss"] if result.history else float("nan"),
    )
    return model.eval()


@torch.no_grad()
def embed_items(
    model: TwoTower, features: RetrievalFeatures, items: pl.DataFrame, batch_size: int = 65_536
) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of the rows of an item table."""
    parts = [
        model.item_vectors(features.encode_items(items.slice(lo, batch_size))).numpy()
        for lo in range(0, max(items.height, 1), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)[: items.height]


@torch.no_grad()
def embed_users(
    model: TwoTower, features: RetrievalFeatures, users: Sequence[str], batch_size: int = 65_536
) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of ``users`` (unknown ones: the OOV user's)."""
    users = list(users)
    parts = [
        model.user_vectors(features.encode_users(users[lo : lo + batch_size])).numpy()
        for lo in range(0, max(len(users), 1), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)[: len(users)]
