"""Tensors in, batches out: the bridge from encoded columns to model input.

A batch is a ``dict[str, Tensor]`` keyed by feature and label names. :class:`TensorData`
holds whole columns as tensors and slices them with one index tensor per batch, so no
Python code runs per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def to_tensors(arrays: Mapping[str, np.ndarray | Tensor]) -> dict[str, Tensor]:
    """Convert numpy columns to tensors (int -> int64, float -> float32), sharing memory."""
    out: dict[str, Tensor] = {}
    for name, arr in arrays.items():
        if isinstance(arr, Tensor):
            t = arr
        else:
            arr = np.ascontiguousarray(arr)
            if not arr.flags.writeable:  # e.g. a zero-copy view of a Polars column
                arr = arr.copy()
            t = torch.from_numpy(arr)
        out[name] = t.float() if t.dtype.is_floating_point or t.dtype == torch.bool else t.long()
    return out


@dataclass
class TensorData:
    """Columns of equal length, as tensors.

    Example:
        >>> data = TensorData({"x": torch.arange(5), "y": torch.zeros(5)})
        >>> [b["x"].tolist() for b in data.batches(2)]
        [[0, 1], [2, 3], [4]]
    """

    columns: dict[str, Tensor]

    def __post_init__(self) -> None:
        lengths = {k: v.shape[0] for k, v in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length: {lengths}")

    def __len__(self) -> int:
        return next(iter(self.columns.values())).shape[0] if self.columns else 0

    def take(self, index: Tensor) -> dict[str, Tensor]:
        """Rows at ``index`` (a 1-D long tensor), as a batch."""
        return {k: v.index_select(0, index) for k, v in self.columns.items()}  # > v[index]

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, Tensor]]:
        """Yield batches in order, or in a seeded random order when ``shuffle``."""
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                yield self.take(order[start : start + batch_size])
        else:
            for start in range(0, n, batch_size):
                yield {k: v[start : start + batch_size] for k, v in self.columns.items()}

    def subset(self, index: Tensor) -> TensorData:
        return TensorData(self.take(index))
