"""Adaptive Information Transfer Multi-task (AITM) framework.

Xi, Chen, Wang, Zhang, Fan, Yang. "Modeling the Sequential Dependence among Audience
Multi-step Conversions with Multi-task Learning in Targeted Display Advertising". KDD 2021.

Why it fits a shop funnel: shop behaviours are *sequentially dependent* steps —
``click -> add to cart -> buy`` — where each step can only happen after the previous one and
the deeper the step, the fewer the positives (a few clicks in a hundred impressions, a few
purchases in a hundred clicks). ESMM handles exactly two steps by multiplying
probabilities; AITM handles any number of steps and lets each step *learn* how much to take
from the step before it, instead of fixing the relation to a product:

    q_t  = tower_t(e)                                  # task t's own representation, (B, D)
    p_t-1 = info_t-1(z_t-1)                            # what step t-1 passes on, (B, D)
    z_t  = sum_{u in {p_t-1, q_t}} w_u * h1(u),   w_u = softmax_u(<h2(u), h3(u)> / sqrt(D))
    y_t  = sigmoid(head_t(z_t))                        # z_1 = q_1

The Adaptive Information Transfer (AIT) attention decides per sample how much of the earlier
step's knowledge flows into the later (sparser) one, so rich click signal helps the sparse
purchase task. A *behavioural expectation calibrator* adds the funnel's logic to the loss:
a later step should never be likelier than an earlier one::

    L = sum_t BCE(y_t, label_t) + alpha * sum_{t>=2} mean(max(y_t - y_{t-1}, 0))

Tasks are the funnel steps in order (e.g. ``[click, cart, buy]``), all binary, every task
trained on all impressions. The calibrator term of step ``t`` is added to task ``t``'s loss
in :meth:`AITM.task_losses` (so the per-task losses still add up to the total). The paper's
code sums the calibrator over the batch; here it is the batch mean, so ``alpha`` does not
depend on the batch size.

Example:
    >>> import torch
    >>> from shoprec.models.features import CategoricalFeature, Task
    >>> tasks = [Task("click"), Task("cart"), Task("buy")]
    >>> model = AITM([CategoricalFeature("item", 100)], tasks, AITMConfig())
    >>> model({"item": torch.tensor([1, 2])})["buy"].shape
    torch.Size([2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shoprec.models.base import MultiTaskModel, task_loss
from shoprec.models.features import FeatureSpec, Task
from shoprec.models.layers import MLP, Batch, InputLayer, TaskHead


@dataclass(frozen=True)
class AITMConfig:
    tower_dims: tuple[int, ...] = (128, 64, 32)  # widths of each task's tower (paper's code)
    calibration_weight: float = 0.6  # alpha of the behavioural expectation calibrator (paper)
    dropout: float = 0.0  # after each hidden activation (towers and info modules)
    activation: str = "relu"
    batchnorm: bool = False  # BatchNorm1d in the towers
    attention_dims: tuple[int, ...] = (80, 40)  # DIN attention unit, for attention pooling
    embedding_init_std: float = 0.05  # std of the normal init of the embedding tables


class AITAttention(nn.Module):
    """The AIT unit: attention over ``[p_{t-1}, q_t]`` with self-scored weights."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value = nn.Linear(dim, dim, bias=False)  # h1
        self.query = nn.Linear(dim, dim, bias=False)  # h2
        self.key = nn.Linear(dim, dim, bias=False)  # h3
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, transferred: Tensor, own: Tensor) -> Tensor:
        """``p_{t-1}`` and ``q_t``, ``(B, D)`` each -> ``z_t`` ``(B, D)``."""
        u = torch.stack([transferred, own], dim=1)  # (B, 2, D)
        scores = (self.query(u) * self.key(u)).sum(-1) * self.scale  # (B, 2)
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)  # (B, 2, 1)
        return (weights * self.value(u)).sum(1)  # (B, D)


class AITM(MultiTaskModel):
    """Per-step towers linked by AIT attention, with the behavioural expectation calibrator."""

    model_name = "aitm"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: AITMConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        if len(tasks) < 2 or any(t.kind != "binary" for t in tasks):
            raise ValueError("AITM needs two or more binary tasks, in funnel order")
        if not c.tower_dims:
            raise ValueError("AITM needs at least one tower layer")
        self.inputs = InputLayer(features, c.attention_dims, c.embedding_init_std)
        d_in, dim = self.inputs.output_dim, c.tower_dims[-1]
        self.towers = nn.ModuleList(
            MLP(d_in, c.tower_dims, c.dropout, c.activation, c.batchnorm) for _ in tasks
        )
        self.info = nn.ModuleList(  # info_t: step t -> step t+1, for all but the last step
            MLP(dim, (dim,), c.dropout, c.activation) for _ in tasks[1:]
        )
        self.ait = nn.ModuleList(AITAttention(dim) for _ in tasks[1:])  # for steps 2..T
        self.heads = nn.ModuleList(TaskHead(dim, t) for t in tasks)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Logit ``(B,)`` per step."""
        e = self.inputs(batch)  # (B, I), shared by every tower
        outputs = {}
        z = self.towers[0](e)  # z_1 = q_1, (B, D)
        outputs[self.tasks[0].name] = self.heads[0](z)
        for t in range(1, len(self.tasks)):
            q = self.towers[t](e)  # (B, D)
            z = self.ait[t - 1](self.info[t - 1](z), q)  # (B, D)
            outputs[self.tasks[t].name] = self.heads[t](z)
        return outputs

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """BCE per step; step ``t >= 2`` adds ``alpha * mean(relu(y_t - y_{t-1}))``."""
        losses = {t.name: task_loss(t, outputs[t.name], batch) for t in self.tasks}
        alpha = self.config.calibration_weight
        if alpha:
            probs = [torch.sigmoid(outputs[t.name]) for t in self.tasks]
            for t in range(1, len(self.tasks)):
                excess = torch.relu(probs[t] - probs[t - 1]).mean()
                losses[self.tasks[t].name] = losses[self.tasks[t].name] + alpha * excess
        return losses

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters more than one step's loss depends on.

        Step ``t``'s loss reaches the embeddings, towers ``1..t``, AIT units ``2..t``, info
        modules ``1..t-1`` and head ``t`` (and head ``t-1`` through the calibrator). So shared are:
        the input layer, and for every step but the last its tower, AIT unit and (when the
        calibrator is on) head, and every info module but the last.
        """
        params = list(self.inputs.parameters())
        modules = [*self.towers[:-1], *self.ait[:-1], *self.info[:-1]]
        if self.config.calibration_weight:
            modules.extend(self.heads[:-1])
        for module in modules:
            params.extend(module.parameters())
        return params

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The embedding tables (and attention units): the layer every tower reads."""
        return list(self.inputs.parameters())
