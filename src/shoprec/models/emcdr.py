"""EMCDR's mapping: a user's vector in one domain from their vector in another.

Man, Shen, Jin, Cheng. "Cross-Domain Recommendation: An Embedding and Mapping Approach".
IJCAI 2017.

Two models are trained, one per domain; then, on the users active in both, an MLP learns to
map a user's source vector to their target vector (squared error). A user with no target
history gets ``mapping(source vector)`` in the target. :func:`shoprec.transfer.cross_domain.
fit_mapping` trains it with the one fit loop; :mod:`shoprec.transfer.cold_start` uses it.

Example:
    >>> import torch
    >>> mapping = EMCDRMapping(8, 6, hidden=(16,))
    >>> mapping.map(torch.zeros(3, 8)).shape
    torch.Size([3, 6])
    >>> batch = {"source": torch.zeros(3, 8), "target": torch.ones(3, 6)}
    >>> mapping.loss(mapping(batch), batch).shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.models.layers import MLP, Batch

__all__ = ["EMCDRMapping"]


class EMCDRMapping(nn.Module):
    """``f(source user vector) -> target user vector``: an MLP plus a linear shortcut.

    Batch keys: ``source`` ``(B, in_dim)`` and, for the loss, ``target`` ``(B, out_dim)``.

    Args:
        in_dim: width of the source vectors.
        out_dim: width of the target vectors.
        hidden: hidden widths of the MLP (tanh activations).
    """

    model_name = "emcdr"

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256,)) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden, activation="tanh")
        self.out = nn.Linear(self.mlp.out_dim, out_dim)
        self.linear = nn.Linear(in_dim, out_dim, bias=False)

    def map(self, source: Tensor) -> Tensor:
        """Target vectors ``(B, out_dim)`` of source vectors ``(B, in_dim)``."""
        return self.out(self.mlp(source)) + self.linear(source)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``target``: the mapped ``batch["source"]``, ``(B, out_dim)``."""
        return {"target": self.map(batch["source"])}

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``target``: mean squared error against ``batch["target"]`` (over rows and
        dimensions)."""
        return {"target": F.mse_loss(outputs["target"], batch["target"])}

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """The one loss of :meth:`task_losses`."""
        return self.task_losses(outputs, batch)["target"]

    def shared_parameters(self) -> list[nn.Parameter]:
        """None: there is one loss."""
        return []

    def last_shared_layer(self) -> list[nn.Parameter]:
        """None: there is one loss."""
        return []
