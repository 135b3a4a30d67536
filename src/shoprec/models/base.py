"""The contract every multi-task model keeps, so that one training loop fits them all.

A model is built as ``Model(features, tasks, config)`` and then:

* ``forward(batch)`` -> raw outputs per task: a logit ``(B,)`` for binary tasks, logits
  ``(B, C)`` for multiclass, a prediction ``(B,)`` for regression (a log-rate for ``poisson``,
  ``log1p(y)`` for ``log1p_mse``);
* ``predict(batch)`` -> probabilities, class probabilities or expected values, without grad;
* ``task_losses(outputs, batch)`` -> a scalar per task; ``loss(outputs, batch)`` -> their sum;
* ``shared_parameters()`` -> the parameters more than one task's loss depends on (what
  PCGrad projects); ``last_shared_layer()`` -> what GradNorm measures gradient norms on.

Subclasses define ``model_name``, ``__init__`` and ``forward``; those whose loss is not a
per-task sum of the standard losses (ESMM, AITM) override ``task_losses``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.models.features import FeatureSpec, Task, check_specs
from shoprec.models.layers import Batch


class MultiTaskModel(nn.Module):
    """Base class of every shoprec model. See the module docstring for the contract.

    Attributes:
        model_name: registry name, written to ``config.json``.
        features: the feature specs, as given.
        tasks: the task specs, as given (output order).
        config: the model's frozen config dataclass.
    """

    model_name: ClassVar[str] = ""

    def __init__(self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: Any) -> None:
        super().__init__()
        check_specs(list(features), list(tasks))
        self.features = tuple(features)
        self.tasks = tuple(tasks)
        self.config = config

    @property
    def task_names(self) -> list[str]:
        """Task names in output order."""
        return [t.name for t in self.tasks]

    def forward(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Raw outputs per task; see the module docstring."""
        raise NotImplementedError

    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Probabilities (binary), class probabilities ``(B, C)`` (multiclass) or expected values
        (regression), computed in eval mode without grad (the training mode is restored).

        Args:
            batch: a batch dict; labels are not needed.

        Returns:
            Task name -> tensor of ``(B,)`` or ``(B, C)``.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._outputs_to_predictions(self(batch))
        finally:
            self.train(was_training)

    def _outputs_to_predictions(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t.name: output_to_prediction(t, outputs[t.name]) for t in self.tasks}

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """One scalar loss per task (weighted mean over the batch if the task has a weight key).

        Args:
            outputs: what :meth:`forward` returned.
            batch: the batch, with labels (and weights) under each task's keys.

        Returns:
            Task name -> scalar tensor.
        """
        return {t.name: task_loss(t, outputs[t.name], batch) for t in self.tasks}

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Sum of :meth:`task_losses` (a balancing strategy weighs the parts itself)."""
        return torch.stack(list(self.task_losses(outputs, batch).values())).sum()

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that more than one task's loss depends on."""
        raise NotImplementedError

    def last_shared_layer(self) -> list[nn.Parameter]:
        """Parameters of the last layer shared by the tasks ([] if none is shared)."""
        raise NotImplementedError


def output_to_prediction(task: Task, output: Tensor) -> Tensor:
    """Map one raw task output to a probability, class probabilities or an expected value."""
    if task.kind == "binary":
        return torch.sigmoid(output)
    if task.kind == "multiclass":
        return torch.softmax(output, dim=-1)
    if task.loss == "poisson":
        return torch.exp(output)
    if task.loss == "log1p_mse":
        return torch.expm1(output).clamp_min(0)
    return output


def per_sample_loss(task: Task, output: Tensor, label: Tensor) -> Tensor:
    """Unreduced loss ``(B,)`` of one task."""
    if task.loss == "bce":
        return F.binary_cross_entropy_with_logits(output, label.to(output.dtype), reduction="none")
    if task.loss == "ce":
        return F.cross_entropy(output, label.long(), reduction="none")
    label = label.to(output.dtype)
    if task.loss == "mse":
        return (output - label).square()
    if task.loss == "poisson":  # output is log(rate); constant log(y!) dropped
        return torch.exp(output) - label * output
    if task.loss == "log1p_mse":
        return (output - torch.log1p(label)).square()
    raise ValueError(f"unknown loss {task.loss!r}")


def task_loss(task: Task, output: Tensor, batch: Batch, label: Tensor | None = None) -> Tensor:
    """Scalar loss of one task, honouring ``task.weight_key``.

    Args:
        task: the task spec.
        output: its raw output from ``forward``.
        batch: the batch.
        label: the label to use instead of ``batch[task.label]`` (ESMM passes click AND buy).

    Returns:
        The mean loss, or with weights ``sum(w * l) / sum(w)`` over samples of weight > 0 (0 if
        every weight is 0).
    """
    y = batch[task.label] if label is None else label  # type: ignore[index]
    if task.weight_key is None:
        return per_sample_loss(task, output, y).mean()
    w = batch[task.weight_key].to(output.dtype)
    keep = w > 0
    y = torch.where(keep, y, torch.zeros_like(y))  # masked labels may hold anything, NaN too
    losses = torch.where(keep, per_sample_loss(task, output, y), 0.0)
    return (losses * w).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
