"""Multi-gate Mixture-of-Experts (MMoE).

Ma, Zhao, Yi, Chen, Hong, Chi. "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts". KDD 2018.

Instead of one shared bottom, ``E`` expert networks read the shared input, and each task
mixes the experts' outputs with its own softmax gate::

    f_k(x) = sum_e softmax(W_k x)_e * expert_e(x),      y_k = head_k(tower_k(f_k(x)))

so tasks that disagree can lean on different experts. Here the experts run as one batched
matmul (:class:`~shoprec.models.layers.ExpertBank`), not a Python loop over experts.

Example:
    >>> import torch
    >>> from shoprec.models.features import CategoricalFeature, Task
    >>> model = MMoE([CategoricalFeature("item", 100)], [Task("click"), Task("buy")], MMoEConfig())
    >>> model.gate_weights({"item": torch.tensor([1, 2])})["buy"].shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shoprec.models.base import MultiTaskModel
from shoprec.models.features import FeatureSpec, Task
from shoprec.models.layers import MLP, Batch, ExpertBank, InputLayer, TaskHead


@dataclass(frozen=True)
class MMoEConfig:
    n_experts: int = 8  # number of shared experts
    expert_dims: tuple[int, ...] = (64,)  # widths of each expert MLP
    tower_dims: tuple[int, ...] = (32,)  # widths of each task's tower
    dropout: float = 0.0  # after each hidden activation
    activation: str = "relu"
    batchnorm: bool = False  # BatchNorm1d in the towers
    attention_dims: tuple[int, ...] = (80, 40)  # DIN attention unit, for attention pooling
    embedding_init_std: float = 0.05  # std of the normal init of the embedding tables


class MMoE(MultiTaskModel):
    """Shared experts, one softmax gate, tower and head per task."""

    model_name = "mmoe"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: MMoEConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        self.inputs = InputLayer(features, c.attention_dims, c.embedding_init_std)
        d_in = self.inputs.output_dim
        self.experts = ExpertBank(c.n_experts, d_in, c.expert_dims, c.dropout, c.activation)
        self.gates = nn.ModuleList(nn.Linear(d_in, c.n_experts) for _ in tasks)
        self.towers = nn.ModuleList(
            MLP(self.experts.out_dim, c.tower_dims, c.dropout, c.activation, c.batchnorm)
            for _ in tasks
        )
        self.heads = nn.ModuleList(
            TaskHead(tower.out_dim, t) for tower, t in zip(self.towers, tasks, strict=True)
        )

    def _gates(self, x: Tensor) -> Tensor:
        """``(B, I) -> (B, T, E)`` softmax gate weights, one row per task."""
        logits = torch.stack([gate(x) for gate in self.gates], dim=1)  # (B, T, E)
        return torch.softmax(logits, dim=-1)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Raw output per task: ``(B,)`` or ``(B, C)``."""
        # The experts' first layer and the gates read the same input: one product for all,
        # which InputLayer.linear computes without building x when vocabularies are small.
        e, d0 = self.experts.first_bias.shape
        weight = torch.cat(
            [self.experts.first_weight.view(-1, e * d0), *(g.weight.t() for g in self.gates)], 1
        )  # (I, E*D0 + T*E)
        bias = torch.cat([self.experts.first_bias.view(-1), *(g.bias for g in self.gates)])
        pre = self.inputs.linear(batch, weight, bias)  # (B, E*D0 + T*E) = x @ weight + bias
        first, logits = pre.split([e * d0, len(self.tasks) * e], dim=1)
        experts = self.experts.from_first_layer(first)  # (B, E, D)
        logits = logits.reshape(-1, len(self.tasks), e)  # (B, T, E)
        # On CPU a softmax over a short last dim (E = 8) is many times slower than over the
        # first dim of a contiguous tensor: take it as (E, B, T) and view the result back.
        gates = torch.softmax(logits.permute(2, 0, 1).contiguous(), dim=0).permute(1, 2, 0)
        mixed = torch.bmm(gates, experts)  # (B, T, D)
        return {
            task.name: head(tower(mixed[:, k]))
            for k, (task, tower, head) in enumerate(
                zip(self.tasks, self.towers, self.heads, strict=True)
            )
        }

    def gate_weights(self, batch: Batch) -> dict[str, Tensor]:
        """Task name -> ``(B, n_experts)`` gate weights (rows sum to 1), without grad."""
        with torch.no_grad():
            gates = self._gates(self.inputs(batch))  # (B, T, E)
        return {name: gates[:, k] for k, name in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Input layer and experts (each gate belongs to one task)."""
        return [*self.inputs.parameters(), *self.experts.parameters()]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last layer of the experts."""
        return self.experts.last_layer()
