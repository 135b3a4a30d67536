"""Single-task baseline: one fully independent network per task.

Each task gets its own input layer (its own embedding tables) and its own MLP, so nothing is
shared and no task can help or hurt another. This is the reference every multi-task model
should beat: if MMoE does not do better than this on a task, sharing is not paying off.

Example:
    >>> import torch
    >>> from shoprec.models.features import CategoricalFeature, Task
    >>> model = SingleTask([CategoricalFeature("item", 100)], [Task("click")], SingleTaskConfig())
    >>> model({"item": torch.tensor([1, 2])})["click"].shape
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
class SingleTaskConfig:
    hidden_dims: tuple[int, ...] = (128, 64)  # MLP widths of each task's network
    dropout: float = 0.0  # after each hidden activation
    activation: str = "relu"
    batchnorm: bool = False  # BatchNorm1d in the MLPs
    attention_dims: tuple[int, ...] = (80, 40)  # DIN attention unit, for attention pooling
    embedding_init_std: float = 0.05  # std of the normal init of the embedding tables


class SingleTask(MultiTaskModel):
    """One independent input layer + MLP + head per task."""

    model_name = "single_task"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: SingleTaskConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        self.inputs = nn.ModuleDict()
        self.mlps = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for task in tasks:
            inputs = InputLayer(features, c.attention_dims, c.embedding_init_std)
            mlp = MLP(inputs.output_dim, c.hidden_dims, c.dropout, c.activation, c.batchnorm)
            self.inputs[task.name] = inputs
            self.mlps[task.name] = mlp
            self.heads[task.name] = TaskHead(mlp.out_dim, task)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Raw output per task: ``(B,)`` or ``(B, C)``."""
        outputs = {}
        for name in self.task_names:
            x = self.inputs[name](batch)  # (B, I)
            outputs[name] = self.heads[name](self.mlps[name](x))
        return outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        """Nothing is shared."""
        return []

    def last_shared_layer(self) -> list[nn.Parameter]:
        """Nothing is shared."""
        return []
