"""Two-tower retrieval: a user tower and an item tower whose dot product scores a pair.

Yi, Yang, Hong, Cheng, Heldt, Kumthekar, Zhao, Wei, Chi. "Sampling-Bias-Corrected Neural
Modeling for Large Corpus Item Recommendations". RecSys 2019.

The towers know nothing of the ranking recipe: their inputs come from the artifact's
``items.parquet`` and ``seen.parquet`` alone, encoded by :class:`RetrievalFeatures` (its own
small encoder, saved as JSON beside the model), so any recipe's artifact gets the same
candidate sources::

    u = normalize(MLP_u(embed(user id)))                             # (B, D)
    v = normalize(MLP_v(embed(item id, category, brand), log price)) # (B, D)
    logits = u @ v.T / temperature - log q(item)                     # (B, B) in-batch softmax

trained with the in-batch softmax over the training events (every other item of the batch
is a negative), with the log-frequency correction ``log q`` for popular items being more
often a negative, and with duplicate items of a batch masked out. Ids are dropped (replaced
by the OOV id) with probability ``id_dropout`` so that the OOV user vector is a useful
"anyone" and attributes alone give a useful item vector: that is what an unknown shopper
(before their live events move the query) and a new item get. Item ids are learned only for
items with training events; a new item is its attributes.

Because the vectors are normalised, ``u . v`` is a cosine: an inner-product index (faiss
``IndexFlatIP``) finds the nearest items, and ``v_i . v_j`` is the item-to-item similarity
used for "similar items", session boosts and "because you bought X".

Example:
    >>> from shoprec.models.features import CategoricalFeature
    >>> tt = TwoTower([CategoricalFeature("user", 10)], [CategoricalFeature("item", 20)])
    >>> tt.item_vectors({"item": torch.tensor([2, 3])}).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from shoprec.data.encode import OOV, Encoder
from shoprec.models.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    feature_from_dict,
)
from shoprec.models.layers import MLP, Batch, InputLayer

log = logging.getLogger(__name__)

WEIGHTS_FILE = "two_tower.safetensors"
META_FILE = "two_tower.json"
USER_ENCODER_FILE = "user_encoder.json"
ITEM_ENCODER_FILE = "item_encoder.json"
#: Behaviors whose (user, item) pairs are positives, by default.
POSITIVE_BEHAVIORS = ("view", "click", "favorite", "cart", "buy", "rate")
#: Item-side inputs, when the item table has them (``log_price`` is ``log1p(price)``).
ITEM_CATEGORICAL = ("item", "category", "brand")
ITEM_NUMERIC = ("log_price",)


@dataclass(frozen=True)
class TwoTowerConfig:
    dim: int = 32  # size of the user and item vectors
    embedding_dim: int = 16  # embedding size of every categorical feature
    hidden: tuple[int, ...] = (64,)  # MLP widths of each tower, before the output layer
    temperature: float = 0.05  # softmax temperature of the cosine logits
    epochs: int = 4  # passes over the positive pairs
    batch_size: int = 1024  # in-batch negatives per positive = batch_size - 1
    lr: float = 3e-3  # Adam learning rate
    id_dropout: float = 0.1  # share of user/item ids replaced by OOV while training
    behaviors: tuple[str, ...] = POSITIVE_BEHAVIORS  # events whose pairs are positives
    seed: int = 0


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


class TwoTower(nn.Module):
    """A user tower and an item tower; see the module docstring.

    Args:
        user_features: specs of the user side's batch keys.
        item_features: specs of the item side's batch keys.
        config: sizes and training knobs.
    """

    def __init__(
        self,
        user_features: Sequence[FeatureSpec],
        item_features: Sequence[FeatureSpec],
        config: TwoTowerConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = c = config or TwoTowerConfig()
        self.user_features = tuple(user_features)
        self.item_features = tuple(item_features)
        self.user_inputs = InputLayer(user_features)
        self.item_inputs = InputLayer(item_features)
        self.user_mlp = MLP(self.user_inputs.output_dim, c.hidden)
        self.item_mlp = MLP(self.item_inputs.output_dim, c.hidden)
        self.user_out = nn.Linear(self.user_mlp.out_dim, c.dim)
        self.item_out = nn.Linear(self.item_mlp.out_dim, c.dim)

    def user_vectors(self, batch: Batch) -> Tensor:
        """``(B, dim)`` unit vectors of users."""
        return F.normalize(self.user_out(self.user_mlp(self.user_inputs(batch))), dim=-1)

    def item_vectors(self, batch: Batch) -> Tensor:
        """``(B, dim)`` unit vectors of items."""
        return F.normalize(self.item_out(self.item_mlp(self.item_inputs(batch))), dim=-1)

    def forward(self, users: Batch, items: Batch) -> Tensor:
        """``(B, B)`` cosine logits of every user of the batch against every item."""
        return self.user_vectors(users) @ self.item_vectors(items).T / self.config.temperature

    def save(self, directory: str | Path) -> None:
        """Write ``two_tower.safetensors`` and ``two_tower.json`` into ``directory``."""
        directory = Path(directory)
        meta = {
            "format": "shoprec.two_tower",
            "format_version": 2,
            "config": dataclasses.asdict(self.config),
            "user_features": [f.to_dict() for f in self.user_features],
            "item_features": [f.to_dict() for f in self.item_features],
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: str | Path) -> TwoTower:
        """Read what :meth:`save` wrote: the model, in eval mode."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format") != "shoprec.two_tower" or meta.get("format_version") != 2:
            raise ValueError(
                f"{directory / META_FILE} is not a shoprec two-tower model of this version; "
                "build the retrieval files again (shoprec serve --rebuild)"
            )
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
        model = cls(
            [feature_from_dict(f) for f in meta["user_features"]],
            [feature_from_dict(f) for f in meta["item_features"]],
            TwoTowerConfig(**cfg),
        )
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        return model.eval()


def _drop_ids(batch: Batch, key: str, p: float, gen: torch.Generator) -> Batch:
    if p <= 0 or key not in batch:
        return batch
    ids = batch[key]
    drop = torch.rand(ids.shape, generator=gen) < p
    return {**batch, key: torch.where(drop, torch.full_like(ids, OOV), ids)}


def train_two_tower(
    features: RetrievalFeatures,
    items: pl.DataFrame,
    seen: pl.DataFrame,
    config: TwoTowerConfig | None = None,
) -> TwoTower:
    """Fit a :class:`TwoTower` on the training events with the in-batch softmax.

    Args:
        features: the fitted encoders.
        items: the item table (its rows give the item side's attributes).
        seen: training events with ``user``, ``item``, ``behavior``; rows of the configured
            behaviors are the positive pairs (a pair counted once per behavior, so deeper
            engagement weighs more); items outside ``items`` are ignored.
        config: sizes and training knobs.

    Returns:
        The model, in eval mode.
    """
    c = config or TwoTowerConfig()
    torch.manual_seed(c.seed)
    gen = torch.Generator().manual_seed(c.seed)
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
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    start = time.perf_counter()
    model.train()
    n = len(i_idx)
    for epoch in range(c.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for lo in range(0, n, c.batch_size):
            b = order[lo : lo + c.batch_size]
            if len(b) < 2:
                continue
            ub = _drop_ids({k: v[u_idx[b]] for k, v in user_x.items()}, "user", c.id_dropout, gen)
            ib = _drop_ids({k: v[i_idx[b]] for k, v in item_x.items()}, "item", c.id_dropout, gen)
            logits = model(ub, ib) - log_q[i_idx[b]]  # (B, B), corrected for popularity
            same = i_idx[b].unsqueeze(0) == i_idx[b].unsqueeze(1)  # (B, B)
            logits = logits.masked_fill(same & ~torch.eye(len(b), dtype=torch.bool), -1e9)
            loss = F.cross_entropy(logits, torch.arange(len(b)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        log.info("two-tower epoch %d: in-batch softmax loss %.4f", epoch + 1, total / n)
    log.info("two-tower trained on %d pairs in %.1f s", n, time.perf_counter() - start)
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
