"""EASE (Steck, WWW 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): the
closed-form item-item linear model, a peer of the benchmarks.

With the user x item matrix ``X`` and ``G = X^T X + lambda I``, ``P = G^-1``, the weights are
``B = I - P diag(1 / diag(P))`` (zero diagonal) and a user's scores are ``x_u B``.

Two exact ways to the same model:

* primal (``max_items`` set, or fewer items than users): ``G`` is dense, ``n^2`` float32
  (n = 30,796 Sport items: 3.8 GB; both domains 69,804: 19.5 GB) and its Cholesky inverse
  costs ``n^3 / 3`` flops. ``max_items`` keeps the model on the most frequent items (ties by
  id); the rest get no learned weights and score below every modelled item, by popularity.
* dual (``max_items=None`` and fewer users than items; the Woodbury identity):
  ``P = (I - X^T K^-1 X) / lambda`` with the ``(users, users)`` matrix
  ``K = X X^T + lambda I``, so ``diag P`` is ``(1 - g) / lambda`` with
  ``g_j = x_j^T K^-1 x_j`` and a user's ``x P`` is ``(x - (x X^T) K^-1 X) / lambda``
  (``K^-1 X`` row ``u`` for a user of ``X`` itself). Scores ``x B = x - (x P) / diag P``.
  Memory ``users^2`` (9,928 users: 0.8 GB in float64), every item modelled, no ``n^2`` matrix;
  ``weights`` (the ``n x n`` B) is not formed.

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
        # dual form: the fitted matrix, K^-1 and diag(P) * lambda
        self._x: sp.csr_matrix | None = None
        self._kinv: np.ndarray | None = None
        self._diag: np.ndarray | None = None

    def fit(self, x: sp.csr_matrix) -> EASE:
        """Fit on a binary ``(users, items)`` matrix."""
        x = sp.csr_matrix(x, dtype=np.float32)
        x.eliminate_zeros()  # a stored 0 is no purchase
        x.data[:] = 1.0
        count = np.asarray(x.sum(axis=0)).ravel()
        order = np.lexsort((np.arange(len(count)), -count))
        m = len(count) if self.max_items is None else min(self.max_items, len(count))
        kept = np.sort(order[:m])
        kept = kept[count[kept] > 0]
        self.prior = (count / (count.max() + 1.0) * 1e-6).astype(np.float32)
        self.kept = kept
        xs = x[:, kept]
        if self.max_items is None and x.shape[0] < len(kept):
            return self._fit_dual(sp.csr_matrix(xs))
        gram = torch.from_numpy((xs.T @ xs).toarray().astype(np.float32))  # (m, m)
        gram.diagonal().add_(self.lam)
        p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        del gram
        b = -p / p.diagonal().unsqueeze(0)  # B = I - P diag(1 / diag P)
        b.diagonal().zero_()
        self.weights = b.numpy()
        return self

    def _fit_dual(self, xs: sp.csr_matrix) -> EASE:
        """The Woodbury form over users (see the module docstring)."""
        xd = xs.astype(np.float64)
        k = torch.from_numpy((xd @ xd.T).toarray())
        k.diagonal().add_(self.lam)
        kinv = torch.cholesky_inverse(torch.linalg.cholesky(k)).numpy()
        del k
        # g_j = x_j^T K^-1 x_j, by blocks of items: K^-1 X costs users * nnz flops (X sparse)
        xc = xd.tocsc()
        g = np.zeros(xs.shape[1])
        for lo in range(0, xs.shape[1], 4096):
            block = xc[:, lo : lo + 4096]
            g[lo : lo + 4096] = np.asarray(block.multiply((block.T @ kinv).T).sum(axis=0)).ravel()
        # scoring in float32 (g, the one cancellation-prone quantity, came out in float64)
        self._x, self._kinv = xs.astype(np.float32).tocsr(), kinv.astype(np.float32)
        self._diag = np.maximum(1.0 - g, 1e-12).astype(np.float32)
        return self

    def score(self, x: sp.csr_matrix, rows: np.ndarray | None = None) -> np.ndarray:
        """``(U, n_items)`` scores of users given their binary rows ``(U, n_items)``: learned
        scores on the modelled items, plus a popularity tie-break far below them. ``rows``:
        when ``x`` is exactly those rows of the fitted matrix (a shortcut of the dual form)."""
        if self.kept is None or self.prior is None:
            raise RuntimeError("EASE is not fitted")
        x = sp.csr_matrix(x, dtype=np.float32)
        out = np.tile(self.prior - 1.0, (x.shape[0], 1))  # unmodelled: below any modelled
        out[:, self.kept] = self._modelled(x[:, self.kept], rows) + self.prior[self.kept]
        return out

    def _modelled(self, xs: sp.csr_matrix, rows: np.ndarray | None) -> np.ndarray:
        if self._kinv is not None and self._x is not None and self._diag is not None:
            xd = xs.astype(np.float32)
            if rows is not None:  # users of the fitted matrix: x P lambda = lambda K^-1 X rows
                xp = self.lam * np.asarray((self._x.T @ self._kinv[rows].T).T)
            else:
                z = np.asarray((xd @ self._x.T).todense()) @ self._kinv  # (B, users)
                xp = xd.toarray() - np.asarray((self._x.T @ z.T).T)
            return (xd.toarray() - xp / self._diag).astype(np.float32)
        assert self.weights is not None
        return np.asarray(xs @ self.weights)
