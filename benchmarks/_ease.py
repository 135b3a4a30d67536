"""EASE (Steck, WWW 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): the
closed-form item-item linear model, a peer of the benchmarks.

With the user x item matrix ``X`` and ``G = X^T X + lambda I``, ``P = G^-1``, the weights are
``B = I - P diag(1 / diag(P))`` (zero diagonal) and a user's scores are ``x_u B``.

Memory: ``G`` is dense, ``n^2`` float32 (n = 30,796 Sport items: 3.8 GB; 39,008 Cloth: 6.1 GB;
both domains 69,804: 19.5 GB), and the Cholesky inverse costs ``n^3 / 3`` flops (6,000
items: 4 s on one core of the benchmark machine, so 30,000 about 8 min). ``max_items`` keeps
the model on the most frequent items (ties by id); the rest get no learned weights and score
below every modelled item, in popularity order.

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    >>> m = EASE(lam=1.0).fit(x)
    >>> np.round(m.weights, 3)
    array([[ 0.   ,  0.667, -0.25 ],
           [ 0.571,  0.   ,  0.375],
           [-0.286,  0.5  ,  0.   ]], dtype=float32)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["EASE"]


class EASE:
    """Closed-form EASE over the ``max_items`` most frequent items.

    Args:
        lam: the L2 weight ``lambda`` added to the Gram matrix's diagonal.
        max_items: most items modelled (None: all).
    """

    def __init__(self, lam: float, max_items: int | None = None) -> None:
        if lam <= 0:
            raise ValueError(f"lambda must be > 0, got {lam}")
        self.lam = float(lam)
        self.max_items = max_items
        self.weights: np.ndarray | None = None  # (m, m) over the modelled items
        self.kept: np.ndarray | None = None  # (m,) item columns modelled
        self.prior: np.ndarray | None = None  # (n,) popularity tie-break, below any real score

    def fit(self, x: sp.csr_matrix) -> EASE:
        """Fit on a binary ``(users, items)`` matrix."""
        x = sp.csr_matrix(x, dtype=np.float32)
        x.data[:] = 1.0
        count = np.asarray(x.sum(axis=0)).ravel()
        order = np.lexsort((np.arange(len(count)), -count))
        m = len(count) if self.max_items is None else min(self.max_items, len(count))
        kept = np.sort(order[:m])
        kept = kept[count[kept] > 0]
        xs = x[:, kept]
        gram = torch.from_numpy((xs.T @ xs).toarray().astype(np.float32))  # (m, m)
        gram.diagonal().add_(self.lam)
        p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        del gram
        b = -p / p.diagonal().unsqueeze(0)  # B = I - P diag(1 / diag P)
        b.diagonal().zero_()
        self.weights = b.numpy()
        self.kept = kept
        self.prior = (count / (count.max() + 1.0) * 1e-6).astype(np.float32)
        return self

    def score(self, x: sp.csr_matrix) -> np.ndarray:
        """``(U, n_items)`` scores of users given their binary rows ``(U, n_items)``: learned
        scores on the modelled items, plus a popularity tie-break far below them."""
        if self.weights is None or self.kept is None or self.prior is None:
            raise RuntimeError("EASE is not fitted")
        x = sp.csr_matrix(x, dtype=np.float32)
        out = np.tile(self.prior - 1.0, (x.shape[0], 1))  # unmodelled: below any modelled
        modelled = np.asarray(x[:, self.kept] @ self.weights)
        out[:, self.kept] = modelled + self.prior[self.kept]
        return out
