"""Item-kNN (Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS 2004): cosine item-item
similarities from a binary user x item matrix, each item keeping its ``k`` nearest
neighbours, a user's score for item ``j`` the sum of the similarities of their items to
``j``. A peer of the benchmarks (plain cosine, no shrink, no per-domain top-k: the textbook
method; ours, :class:`shoprec.transfer.neighbours.ItemNeighbours`, adds those).

Two sparse products: ``S = X^T X`` scaled by ``1 / sqrt(d_i d_j)``, pruned to the top ``k``
per row, then ``scores = X_u S``.

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0]], dtype=np.float32))
    >>> knn = ItemKNN(k=1).fit(x)
    >>> knn.similarity.toarray().round(3)
    array([[0.   , 0.816, 0.   ],
           [0.816, 0.   , 0.   ],
           [0.577, 0.   , 0.   ]], dtype=float32)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["ItemKNN"]


def top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (ties: the lower column first)."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    lengths = np.diff(m.indptr)
    row = np.repeat(np.arange(m.shape[0]), lengths)
    order = np.lexsort((m.indices, -m.data, row))  # by row, value desc, column asc
    rank = np.arange(len(order)) - np.repeat(m.indptr[:-1], lengths)
    keep = order[rank < k]
    return sp.csr_matrix(
        (m.data[keep], (row[keep], m.indices[keep])), shape=m.shape, dtype=np.float32
    )


class ItemKNN:
    """Cosine item-kNN.

    Args:
        k: neighbours kept per item.
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.similarity: sp.csr_matrix | None = None  # (n, n), row i: neighbours of item i
        self.prior: np.ndarray | None = None

    def fit(self, x: sp.csr_matrix) -> ItemKNN:
        """Fit on a binary ``(users, items)`` matrix."""
        x = sp.csr_matrix(x, dtype=np.float32)
        x.data[:] = 1.0
        count = np.asarray(x.sum(axis=0)).ravel()
        inv = np.where(count > 0, 1.0 / np.sqrt(np.maximum(count, 1.0)), 0.0).astype(np.float32)
        co = sp.csr_matrix(x.T @ x)
        co.setdiag(0)
        co.eliminate_zeros()
        d = sp.diags(inv)
        self.similarity = top_k_rows(sp.csr_matrix(d @ co @ d), self.k)
        small = float(self.similarity.data.min()) if self.similarity.nnz else 1.0
        self.prior = (count / (count.max() + 1.0) * 0.5 * small).astype(np.float32)
        return self

    def score(self, x: sp.csr_matrix) -> np.ndarray:
        """``(U, n_items)`` scores of users given their binary rows; items no history item
        points to are ordered by popularity, below every real neighbour."""
        if self.similarity is None or self.prior is None:
            raise RuntimeError("ItemKNN is not fitted")
        x = sp.csr_matrix(x, dtype=np.float32)
        return np.asarray((x @ self.similarity).toarray()) + self.prior
