"""Shared-bottom multi-task network (hard parameter sharing).

Caruana, "Multitask Learning", Machine Learning 28, 1997. All tasks read one shared input
layer and one shared MLP (the bottom); each task then has a small tower and a head of its own.
Cheap and strong when tasks are closely related; when they conflict, the shared bottom is
pulled in several directions at once (what MMoE and PLE address).

Example:
    >>> import torch
    >>> from shoprec.models.features import CategoricalFeature, Task
    >>> model = SharedBottom(
    ...     [CategoricalFeature("item", 100)], [Task("click"), Task("buy")], SharedBottomConfig()
    ... )
    >>> model({"item": torch.tensor([1, 2])})["buy"].shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from shoprec.models.base import MultiTaskModel
from shoprec.models.features import FeatureSpec, Task
from shoprec.models.layers import MLP, Batch, InputLayer, TaskHead


@dataclass(frozen=True)
class SharedBottomConfig:
    bottom_dims: tuple[int, ...] = (128, 64)  # widths of the shared MLP
    tower_dims: tuple[int, ...] = (32,)  # widths of each task's tower
    dropout: float = 0.0  # after each hidden activation
    activation: str = "relu"
    batchnorm: bool = False  # BatchNorm1d in the MLPs
    attention_dims: tuple[int, ...] = (80, 40)  # DIN attention unit, for attention pooling
    embedding_init_std: float = 0.05  # std of the normal init of the embedding tables


class SharedBottom(MultiTaskModel):
    """Shared input layer and MLP, then one tower + head per task."""

    model_name = "shared_bottom"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: SharedBottomConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        self.inputs = InputLayer(features, c.attention_dims, c.embedding_init_std)
        self.bottom = MLP(
            self.inputs.output_dim, c.bottom_dims, c.dropout, c.activation, c.batchnorm
        )
        self.towers = nn.ModuleList(
            MLP(self.bottom.out_dim, c.tower_dims, c.dropout, c.activation, c.batchnorm)
            for _ in tasks
        )
        self.heads = nn.ModuleList(
            TaskHead(tower.out_dim, t) for tower, t in zip(self.towers, tasks, strict=True)
        )

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Raw output per task: ``(B,)`` or ``(B, C)``."""
        shared = self.bottom(self.inputs(batch))  # (B, H)
        return {
            task.name: head(tower(shared))
            for task, tower, head in zip(self.tasks, self.towers, self.heads, strict=True)
        }

    def shared_parameters(self) -> list[nn.Parameter]:
        """Input layer and bottom MLP."""
        return [*self.inputs.parameters(), *self.bottom.parameters()]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The bottom's last Linear (the embedding tables if the bottom is empty)."""
        return self.bottom.last_linear() or list(self.inputs.parameters())
