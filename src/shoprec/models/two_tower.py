"""Two-tower retrieval: a user tower and an item tower whose dot product scores a pair.

Yi, Yang, Hong, Cheng, Heldt, Kumthekar, Zhao, Wei, Chi. "Sampling-Bias-Corrected Neural
Modeling for Large Corpus Item Recommendations". RecSys 2019.

::

    u = normalize(MLP_u(embed(user id)))                             # (B, D)
    v = normalize(MLP_v(embed(item id, category, brand), log price)) # (B, D)
    logits = u @ v.T / temperature - log q(item)                     # (B, B) in-batch softmax

The loss is the in-batch softmax over a batch of (user, item) positives: every other item of
the batch is a negative, with the log-frequency correction ``log q`` for popular items being
more often a negative, and with duplicate items of a batch masked out. In training, ids are
dropped (replaced by the OOV id) with probability ``id_dropout`` so that the OOV user vector is
a useful "anyone" and attributes alone give a useful item vector: that is what an unknown
shopper and a new item get.

Because the vectors are normalised, ``u . v`` is a cosine: an inner-product index finds the
nearest items, and ``v_i . v_j`` is an item-to-item similarity. The features the towers read,
and the training on an artifact's events, are in :mod:`shoprec.recommend.two_tower`.

Example:
    >>> from shoprec.models.features import CategoricalFeature
    >>> tt = TwoTower([CategoricalFeature("user", 10)], [CategoricalFeature("item", 20)])
    >>> tt.item_vectors({"item": torch.tensor([2, 3])}).shape
    torch.Size([2, 32])
    >>> tt({"user": torch.tensor([2, 3]), "item": torch.tensor([4, 5])})["logits"].shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from shoprec.data.encode import OOV
from shoprec.models.features import FeatureSpec, feature_from_dict
from shoprec.models.layers import MLP, Batch, InputLayer

__all__ = ["POSITIVE_BEHAVIORS", "TwoTower", "TwoTowerConfig"]

WEIGHTS_FILE = "two_tower.safetensors"
META_FILE = "two_tower.json"
#: Behaviors whose (user, item) pairs are positives, by default.
POSITIVE_BEHAVIORS = ("view", "click", "favorite", "cart", "buy", "rate")


@dataclass(frozen=True)
class TwoTowerConfig:
    """Sizes of :class:`TwoTower` and how :func:`~shoprec.recommend.two_tower.train_two_tower`
    trains it."""

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

    Batch keys: the user side's and the item side's features, one (user, item) pair per row;
    for the loss, optionally ``item_log_q`` and ``item_index`` (see :meth:`task_losses`).

    Args:
        user_features: specs of the user side's batch keys.
        item_features: specs of the item side's batch keys (none named like a user-side one).
        config: sizes and training knobs.
    """

    def __init__(
        self,
        user_features: Sequence[FeatureSpec],
        item_features: Sequence[FeatureSpec],
        config: TwoTowerConfig | None = None,
    ) -> None:
        super().__init__()
        both = {f.name for f in user_features} & {f.name for f in item_features}
        if both:
            raise ValueError(f"the user and item sides share batch keys {sorted(both)}")
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

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``logits``: ``(B, B)`` cosine logits of every user of the batch (row) against every
        item of the batch (column), over the temperature. In training, ``user`` and ``item``
        ids are replaced by the OOV id with probability ``id_dropout``.

        Args:
            batch: the user side's and the item side's keys, row ``b`` a (user, item) pair.
        """
        p = self.config.id_dropout if self.training else 0.0
        users = self.user_vectors(_drop_ids(batch, "user", p))  # (B, D)
        items = self.item_vectors(_drop_ids(batch, "item", p))  # (B, D)
        return {"logits": users @ items.T / self.config.temperature}

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``in_batch_softmax``: cross-entropy of each row's own item against the batch's other
        items, with ``item_log_q`` ``(B,)`` (log sampling frequency of each row's item; 0 if
        absent) subtracted from each column and the other rows of the same item masked out
        (same ``item_index`` ``(B,)``, else same ``item`` id)."""
        logits = outputs["logits"]  # (B, B)
        if "item_log_q" in batch:
            logits = logits - batch["item_log_q"]  # column j: item j's popularity correction
        same_item = batch.get("item_index", batch["item"])  # (B,)
        same = same_item.unsqueeze(0) == same_item.unsqueeze(1)  # (B, B)
        own = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same & ~own, -1e9)
        target = torch.arange(len(logits), device=logits.device)
        return {"in_batch_softmax": F.cross_entropy(logits, target)}

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """The one loss of :meth:`task_losses`."""
        return self.task_losses(outputs, batch)["in_batch_softmax"]

    def shared_parameters(self) -> list[nn.Parameter]:
        """None: there is one loss."""
        return []

    def last_shared_layer(self) -> list[nn.Parameter]:
        """None: there is one loss."""
        return []

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


def _drop_ids(batch: Batch, key: str, p: float) -> Batch:
    """``batch`` with each id under ``key`` replaced by the OOV id with probability ``p``."""
    if p <= 0 or key not in batch:
        return batch
    ids = batch[key]
    drop = torch.rand(ids.shape, device=ids.device) < p
    return {**batch, key: torch.where(drop, torch.full_like(ids, OOV), ids)}
