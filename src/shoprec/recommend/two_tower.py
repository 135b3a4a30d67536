"""Two-tower retrieval: a user tower and an item tower whose dot product scores a pair.

Yi, Yang, Hong, Cheng, Heldt, Kumthekar, Zhao, Wei, Chi. "Sampling-Bias-Corrected Neural
Modeling for Large Corpus Item Recommendations". RecSys 2019.

Each tower embeds its side's features (the ids and attributes the ranking model's
:class:`~shoprec.pipeline.FeatureBuilder` encodes), runs an MLP and L2-normalises::

    u = normalize(MLP_u(embed(user, domain, user attributes)))     # (B, D)
    v = normalize(MLP_v(embed(item, category, brand, log price)))  # (B, D)
    logits = u @ v.T / temperature - log q(item)                   # (B, B) in-batch softmax

trained with the in-batch softmax over the interactions (every other item of the batch is a
negative), with the log-frequency correction ``log q`` for popular items being more often a
negative, and with duplicate items of a batch masked out. Ids are dropped (replaced by the
OOV id) with probability ``id_dropout`` so that attributes alone give a useful vector: that is
what an unknown user or a new item gets.

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

from shoprec.data.encode import OOV
from shoprec.models.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    feature_from_dict,
)
from shoprec.models.layers import MLP, Batch, InputLayer
from shoprec.pipeline import FeatureBuilder

log = logging.getLogger(__name__)

WEIGHTS_FILE = "two_tower.safetensors"
META_FILE = "two_tower.json"
#: Behaviors whose (user, item) pairs are positives, by default.
POSITIVE_BEHAVIORS = ("view", "click", "favorite", "cart", "buy")


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

    def save(self, directory: str | Path, user_columns: list[str], item_columns: list[str]) -> None:
        """Write ``two_tower.safetensors`` and ``two_tower.json`` into ``directory``."""
        directory = Path(directory)
        meta = {
            "format": "shoprec.two_tower",
            "format_version": 1,
            "config": dataclasses.asdict(self.config),
            "user_features": [f.to_dict() for f in self.user_features],
            "item_features": [f.to_dict() for f in self.item_features],
            "user_columns": user_columns,
            "item_columns": item_columns,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: str | Path) -> tuple[TwoTower, list[str], list[str]]:
        """Read what :meth:`save` wrote: the model (eval mode) and its user / item columns."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format") != "shoprec.two_tower":
            raise ValueError(f"{directory / META_FILE} is not a shoprec two-tower model")
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
        model = cls(
            [feature_from_dict(f) for f in meta["user_features"]],
            [feature_from_dict(f) for f in meta["item_features"]],
            TwoTowerConfig(**cfg),
        )
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        return model.eval(), meta["user_columns"], meta["item_columns"]


def split_columns(builder: FeatureBuilder) -> tuple[list[str], list[str]]:
    """The builder's feature columns of the user side and of the item side."""
    item_side = set(builder.item_table.columns)
    cols = builder.categorical + builder.numeric
    return [c for c in cols if c not in item_side], [c for c in cols if c in item_side]


def _specs(builder: FeatureBuilder, columns: list[str], dim: int) -> list[FeatureSpec]:
    enc = builder.encoder
    return [
        CategoricalFeature(c, enc.vocab_size(c), dim) if c in builder.categorical
        else NumericFeature(c)
        for c in columns
    ]  # fmt: skip


def encode_users(builder: FeatureBuilder, users: Sequence[str], columns: list[str]) -> Batch:
    """User-side model input for ``users`` (unknown ones get OOV ids and null attributes)."""
    any_item = builder.item_table["item"][:1]
    frame = builder.frame(list(users), any_item)
    return {k: torch.tensor(v) for k, v in builder.encoder.transform(frame, columns).items()}


def encode_items(
    builder: FeatureBuilder, items: Sequence[str] | pl.Series, columns: list[str]
) -> Batch:
    """Item-side model input for ``items`` (unknown ones get OOV ids and null attributes)."""
    frame = builder.frame([""], items)
    return {k: torch.tensor(v) for k, v in builder.encoder.transform(frame, columns).items()}


def _drop_ids(batch: Batch, key: str, p: float, gen: torch.Generator) -> Batch:
    if p <= 0 or key not in batch:
        return batch
    ids = batch[key]
    drop = torch.rand(ids.shape, generator=gen) < p
    return {**batch, key: torch.where(drop, torch.full_like(ids, OOV), ids)}


def train_two_tower(
    builder: FeatureBuilder, seen: pl.DataFrame, config: TwoTowerConfig | None = None
) -> tuple[TwoTower, list[str], list[str]]:
    """Fit a :class:`TwoTower` on the interactions with the in-batch softmax.

    Args:
        builder: the ranking artifact's feature builder (vocabularies and attribute tables).
        seen: training events with ``user``, ``item``, ``behavior``; rows of the configured
            behaviors are the positive pairs (a pair counted once per behavior, so deeper
            engagement weighs more).
        config: sizes and training knobs.

    Returns:
        The model in eval mode, the user-side and the item-side columns.
    """
    c = config or TwoTowerConfig()
    torch.manual_seed(c.seed)
    gen = torch.Generator().manual_seed(c.seed)
    user_cols, item_cols = split_columns(builder)
    model = TwoTower(
        _specs(builder, user_cols, c.embedding_dim),
        _specs(builder, item_cols, c.embedding_dim),
        c,
    )
    pairs = seen.filter(pl.col("behavior").is_in(list(c.behaviors))).select("user", "item")
    if pairs.height == 0:
        log.warning("no positive pairs to train the two-tower model on; it stays random")
        return model.eval(), user_cols, item_cols
    users = pairs["user"].unique(maintain_order=True)
    items = pairs["item"].unique(maintain_order=True)
    u_idx = torch.tensor(
        pairs["user"].replace_strict(users, range(len(users)), return_dtype=pl.Int64).to_numpy()
    )
    i_idx = torch.tensor(
        pairs["item"].replace_strict(items, range(len(items)), return_dtype=pl.Int64).to_numpy()
    )
    user_x = encode_users(builder, users, user_cols)
    item_x = encode_items(builder, items, item_cols)
    log_q = torch.log(torch.bincount(i_idx, minlength=len(items)).float() / len(i_idx))
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
    return model.eval(), user_cols, item_cols


@torch.no_grad()
def embed_items(
    model: TwoTower,
    builder: FeatureBuilder,
    items: Sequence[str] | pl.Series,
    columns: list[str],
    batch_size: int = 65_536,
) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of ``items``."""
    items = pl.Series(items, dtype=pl.String)
    parts = [
        model.item_vectors(encode_items(builder, items[lo : lo + batch_size], columns)).numpy()
        for lo in range(0, max(len(items), 1), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)[: len(items)]


@torch.no_grad()
def embed_users(
    model: TwoTower,
    builder: FeatureBuilder,
    users: Sequence[str],
    columns: list[str],
    batch_size: int = 65_536,
) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of ``users``."""
    users = list(users)
    parts = [
        model.user_vectors(encode_users(builder, users[lo : lo + batch_size], columns)).numpy()
        for lo in range(0, max(len(users), 1), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)[: len(users)]
