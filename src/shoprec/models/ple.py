"""Progressive Layered Extraction (PLE).

Tang, Liu, Zhao, Gong. "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations". RecSys 2020.

MMoE lets every task mix every expert, so task-specific knowledge and shared knowledge end
up in the same experts and tasks still see-saw (one improves as another degrades). PLE splits
the experts: each task owns ``n_task_experts`` experts, and ``n_shared_experts`` serve all.
One *Customized Gate Control* (CGC) level is::

    task k:  g_k = softmax(W_k x_k) over [experts of task k, shared experts]
             x_k' = sum of those experts' outputs weighted by g_k
    shared:  x_s' = softmax(W_s x_s) over [ALL experts]          (not on the last level)

Stacking levels (``n_levels``) extracts deeper shared representations progressively; the
first level reads the input layer for every branch. One level is the paper's "CGC" model.
Each task's final ``x_k`` goes through its tower and head. Within each group the experts run
as one batched matmul (:class:`~shoprec.models.layers.ExpertBank`).

Example:
    >>> import torch
    >>> from shoprec.models.features import CategoricalFeature, Task
    >>> model = PLE([CategoricalFeature("item", 100)], [Task("click"), Task("buy")], PLEConfig())
    >>> model.gate_weights({"item": torch.tensor([1, 2])})["buy"].shape
    torch.Size([2, 4])
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
class PLEConfig:
    n_levels: int = 2  # stacked CGC levels (1 = the paper's CGC)
    n_task_experts: int = 2  # experts owned by each task, per level
    n_shared_experts: int = 2  # experts shared by all tasks, per level
    expert_dims: tuple[int, ...] = (64,)  # widths of each expert MLP (every level)
    tower_dims: tuple[int, ...] = (32,)  # widths of each task's tower
    dropout: float = 0.0  # after each hidden activation
    activation: str = "relu"
    batchnorm: bool = False  # BatchNorm1d in the towers
    attention_dims: tuple[int, ...] = (80, 40)  # DIN attention unit, for attention pooling
    embedding_init_std: float = 0.05  # std of the normal init of the embedding tables


class CGCLevel(nn.Module):
    """One Customized Gate Control level: task experts, shared experts and their gates.

    Args:
        in_dim: width of every branch's input.
        n_tasks: number of tasks ``T``.
        config: the PLE config (expert counts and shapes).
        shared_gate: whether to build the shared branch's output (all levels but the last).
    """

    def __init__(self, in_dim: int, n_tasks: int, config: PLEConfig, shared_gate: bool) -> None:
        super().__init__()
        c = config
        k, s = c.n_task_experts, c.n_shared_experts
        self.task_experts = nn.ModuleList(
            ExpertBank(k, in_dim, c.expert_dims, c.dropout, c.activation) for _ in range(n_tasks)
        )
        self.shared_experts = ExpertBank(s, in_dim, c.expert_dims, c.dropout, c.activation)
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, k + s) for _ in range(n_tasks))
        self.shared_gate = nn.Linear(in_dim, n_tasks * k + s) if shared_gate else None
        self.out_dim = self.shared_experts.out_dim

    def forward(
        self, task_inputs: list[Tensor], shared_input: Tensor
    ) -> tuple[list[Tensor], Tensor | None, list[Tensor]]:
        """T inputs ``(B, I)`` and the shared ``(B, I)`` -> T outputs ``(B, D)``, the shared
        output ``(B, D)`` (None on the last level) and T gate weights ``(B, K + S)``."""
        shared = self.shared_experts(shared_input)  # (B, S, D)
        own = [bank(x) for bank, x in zip(self.task_experts, task_inputs, strict=True)]  # (B, K, D)
        outputs, gates = [], []
        for x, experts, gate in zip(task_inputs, own, self.task_gates, strict=True):
            weights = torch.softmax(gate(x), dim=-1)  # (B, K + S)
            pool = torch.cat([experts, shared], dim=1)  # (B, K + S, D)
            outputs.append(torch.bmm(weights.unsqueeze(1), pool).squeeze(1))  # (B, D)
            gates.append(weights)
        shared_out = None
        if self.shared_gate is not None:
            weights = torch.softmax(self.shared_gate(shared_input), dim=-1)  # (B, T*K + S)
            pool = torch.cat([*own, shared], dim=1)  # (B, T*K + S, D)
            shared_out = torch.bmm(weights.unsqueeze(1), pool).squeeze(1)  # (B, D)
        return outputs, shared_out, gates


class PLE(MultiTaskModel):
    """Stacked CGC levels, then one tower + head per task."""

    model_name = "ple"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: PLEConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        if c.n_levels < 1 or c.n_task_experts < 1 or c.n_shared_experts < 1:
            raise ValueError("PLE needs n_levels, n_task_experts and n_shared_experts >= 1")
        self.inputs = InputLayer(features, c.attention_dims, c.embedding_init_std)
        self.levels = nn.ModuleList()
        width = self.inputs.output_dim
        for level in range(c.n_levels):
            self.levels.append(CGCLevel(width, len(tasks), c, shared_gate=level < c.n_levels - 1))
            width = self.levels[-1].out_dim
        self.towers = nn.ModuleList(
            MLP(width, c.tower_dims, c.dropout, c.activation, c.batchnorm) for _ in tasks
        )
        self.heads = nn.ModuleList(
            TaskHead(tower.out_dim, t) for tower, t in zip(self.towers, tasks, strict=True)
        )

    def _extract(self, batch: Batch) -> tuple[list[Tensor], list[Tensor]]:
        """Per-task outputs ``(B, D)`` and gate weights of the last level."""
        x = self.inputs(batch)  # (B, I)
        task_inputs, shared = [x] * len(self.tasks), x
        gates: list[Tensor] = []
        for level in self.levels:
            task_inputs, shared_out, gates = level(task_inputs, shared)
            if shared_out is not None:
                shared = shared_out
        return task_inputs, gates

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Raw output per task: ``(B,)`` or ``(B, C)``."""
        extracted, _ = self._extract(batch)
        return {
            task.name: head(tower(x))
            for task, x, tower, head in zip(
                self.tasks, extracted, self.towers, self.heads, strict=True
            )
        }

    def gate_weights(self, batch: Batch) -> dict[str, Tensor]:
        """Task name -> last-level gate weights ``(B, n_task_experts + n_shared_experts)``:
        the task's own experts first, then the shared ones; rows sum to 1. Without grad."""
        with torch.no_grad():
            _, gates = self._extract(batch)
        return dict(zip(self.task_names, gates, strict=True))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters more than one task's loss depends on.

        Those are the input layer, the last level's shared experts and everything on earlier
        levels (their task experts feed the shared gate, so the next level's shared experts),
        except the task gates of the level before the last: they feed only their own task.
        """
        params = list(self.inputs.parameters())
        for i, level in enumerate(self.levels[:-1]):
            private = level.task_gates if i == len(self.levels) - 2 else None
            for module in level.children():
                if module is not private:
                    params.extend(module.parameters())
        params.extend(self.levels[-1].shared_experts.parameters())
        return params

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last layer of the last level's shared experts."""
        return self.levels[-1].shared_experts.last_layer()
