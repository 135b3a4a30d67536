"""Entire Space Multi-task Model (ESMM).

Ma, Zhao, Huang, Zhu, He, Gai. "Entire Space Multi-Task Model: An Effective Approach for
Estimating Post-Click Conversion Rate". SIGIR 2018.

A conversion model trained only on clicked impressions sees a biased sample (sample selection
bias) and very few positives (data sparsity), yet it is applied to every impression. ESMM
models the funnel ``impression -> click -> conversion`` on ALL impressions instead::

    pCTR   = sigmoid(ctr_tower(e))                    # p(click | x)
    pCVR   = sigmoid(cvr_tower(e))                    # p(conversion | click, x)
    pCTCVR = pCTR * pCVR                              # p(click and conversion | x)
    loss   = BCE(pCTR, click) + BCE(pCTCVR, click AND conversion)     over all impressions

Both towers read the same embeddings ``e`` (so the sparse CVR task borrows the CTR task's
representation), and pCVR is never supervised directly: it is the factor that makes the
product right, which is what removes the selection bias.

Outputs: the ctr task's output is the pCTR logit; the cvr task's output is the logit of
**pCTCVR** (its label is ``click AND conversion``); :meth:`ESMM.predict` returns pCTR and
pCTCVR, the latter computed as the exact product; :meth:`ESMM.predict_cvr` gives pCVR.

Example:
    >>> import torch
    >>> from shoprec.models.features import CategoricalFeature, Task
    >>> model = ESMM([CategoricalFeature("item", 100)], [Task("click"), Task("buy")], ESMMConfig())
    >>> model.predict({"item": torch.tensor([1, 2])})["buy"].shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.models.base import MultiTaskModel, task_loss
from shoprec.models.features import FeatureSpec, Task
from shoprec.models.layers import MLP, Batch, InputLayer, TaskHead


@dataclass(frozen=True)
class ESMMConfig:
    ctr_task: str | None = None  # name of the click task; None: the first task
    cvr_task: str | None = None  # name of the conversion task; None: the second task
    tower_dims: tuple[int, ...] = (128, 64)  # widths of the CTR and the CVR tower
    dropout: float = 0.0  # after each hidden activation
    activation: str = "relu"
    batchnorm: bool = False  # BatchNorm1d in the towers
    attention_dims: tuple[int, ...] = (80, 40)  # DIN attention unit, for attention pooling
    embedding_init_std: float = 0.05  # std of the normal init of the embedding tables


class ESMM(MultiTaskModel):
    """Shared embeddings, a CTR tower and a CVR tower; trained on pCTR and pCTCVR."""

    model_name = "esmm"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: ESMMConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        if len(tasks) != 2 or any(t.kind != "binary" for t in tasks):
            raise ValueError("ESMM needs exactly two binary tasks: a click and a conversion task")
        by_name = {t.name: t for t in tasks}
        ctr_name = c.ctr_task or tasks[0].name
        cvr_name = c.cvr_task or next(t.name for t in tasks if t.name != ctr_name)
        if ctr_name not in by_name or cvr_name not in by_name or ctr_name == cvr_name:
            raise ValueError(
                f"ESMM's ctr_task {ctr_name!r} and cvr_task {cvr_name!r} must be two of the "
                f"tasks {list(by_name)}"
            )
        self.ctr_task, self.cvr_task = by_name[ctr_name], by_name[cvr_name]
        self.inputs = InputLayer(features, c.attention_dims, c.embedding_init_std)
        d_in = self.inputs.output_dim
        self.ctr_tower = MLP(d_in, c.tower_dims, c.dropout, c.activation, c.batchnorm)
        self.cvr_tower = MLP(d_in, c.tower_dims, c.dropout, c.activation, c.batchnorm)
        self.ctr_head = TaskHead(self.ctr_tower.out_dim, self.ctr_task)
        self.cvr_head = TaskHead(self.cvr_tower.out_dim, self.cvr_task)

    def _logits(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The pCTR and pCVR logits, ``(B,)`` each."""
        e = self.inputs(batch)  # (B, I), shared by both towers
        return self.ctr_head(self.ctr_tower(e)), self.cvr_head(self.cvr_tower(e))

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``{ctr_task: pCTR logit, cvr_task: pCTCVR logit}``, each ``(B,)``."""
        ctr, cvr = self._logits(batch)
        log_p = F.logsigmoid(ctr) + F.logsigmoid(cvr)  # log pCTCVR, (B,)
        # logit(p) = log p - log(1 - p), with log(1 - p) = log(-expm1(log p)) kept finite
        log_1mp = torch.log(-torch.expm1(log_p.clamp_max(-1e-7)))
        return {self.ctr_task.name: ctr, self.cvr_task.name: log_p - log_1mp}

    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """``{ctr_task: pCTR, cvr_task: pCTCVR}`` with ``pCTCVR = pCTR * pCVR`` exactly."""
        p_ctr, p_cvr = self._probabilities(batch)
        return {self.ctr_task.name: p_ctr, self.cvr_task.name: p_ctr * p_cvr}

    def predict_cvr(self, batch: Batch) -> Tensor:
        """pCVR = p(conversion | click, x), ``(B,)``: the post-click conversion rate."""
        return self._probabilities(batch)[1]

    def _probabilities(self, batch: Batch) -> tuple[Tensor, Tensor]:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                ctr, cvr = self._logits(batch)
        finally:
            self.train(was_training)
        return torch.sigmoid(ctr), torch.sigmoid(cvr)

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """BCE(pCTR, click) and BCE(pCTCVR, click AND conversion), both over all impressions."""
        click = batch[self.ctr_task.label]  # type: ignore[index]
        conversion = batch[self.cvr_task.label]  # type: ignore[index]
        ctcvr_label = click * conversion  # (B,), click AND conversion
        labels = {self.ctr_task.name: None, self.cvr_task.name: ctcvr_label}
        return {t.name: task_loss(t, outputs[t.name], batch, labels[t.name]) for t in self.tasks}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Embeddings and the CTR tower and head: pCTCVR = pCTR * pCVR depends on them too."""
        return [
            *self.inputs.parameters(),
            *self.ctr_tower.parameters(),
            *self.ctr_head.parameters(),
        ]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The embedding tables (and attention units): the layer both towers read."""
        return list(self.inputs.parameters())
