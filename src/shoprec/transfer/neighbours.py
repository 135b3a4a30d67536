"""Cross-domain item neighbours: item-to-item similarities learned over the items of every
domain from the users they share, so a shopper's history in one domain votes for items of
another.

Item-based collaborative filtering (Sarwar et al., WWW 2001) over one user x item matrix
whose columns are the items of all domains (the :class:`~shoprec.transfer.cross_domain.
DomainIndex` vocabulary). The similarity of items ``i`` and ``j`` bought by ``c_ij`` common
users, with ``d_i`` and ``d_j`` buyers each, is the asymmetric cosine (Aiolli, RecSys 2013)
with a shrink term::

    s_ij = c_ij / (d_i ** alpha * d_j ** (1 - alpha) + shrink)

``alpha = 0.5`` is the plain cosine; ``shrink`` damps pairs seen together by few users. Each
item keeps its ``top_k`` nearest neighbours (in each domain, if told the items' domains). A
user's score for a candidate ``j`` is the sum of ``s_ij`` over the items ``i`` of their
history, whatever the domain, so:

* a user with history in the target domain is scored from both domains (transfer through
  users bought in both: the same product listed in two markets, complementary categories);
* a user with **no** target history (a new market, a new category) is scored from their
  source history alone: cold-start users from another domain, with nothing to train;
* restricted to one domain's pairs, the model is the target-only baseline.

Fitting is two sparse matrix products; scoring a batch of users against a domain is one
more (users x items) @ (items x domain items), densified per chunk of users.

Example:
    >>> import numpy as np
    >>> users = np.array([1, 1, 2, 2, 3])
    >>> items = np.array([1, 3, 1, 3, 2])   # items 1, 2 in domain A; 3 in domain B
    >>> model = ItemNeighbours(NeighbourConfig(shrink=0.0)).fit(users, items, n_items=4)
    >>> history = ItemNeighbours.histories(np.array([0]), np.array([3]), 1, 4)  # bought item 3
    >>> model.score(history, 1, 3).round(decimals=3)   # scores of domain A's items 1, 2
    tensor([[1., 0.]])
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file

__all__ = ["ItemNeighbours", "NeighbourConfig", "top_k_per_row"]


@dataclass(frozen=True)
class NeighbourConfig:
    """Settings of :class:`ItemNeighbours`.

    Attributes:
        shrink: added to the similarity's denominator; damps pairs with few common users.
        alpha: exponent of the history item's count in the denominator (0.5: cosine; higher
            penalises popular history items more and popular candidates less).
        top_k: neighbours kept per item (``None``: all with a common user).
        popularity_tiebreak: add the item's training count, scaled to less than half the
            smallest kept similarity, to every score: candidates no history item points to
            (most of a sparse catalogue) are then ordered by popularity instead of tying at
            zero, while any real neighbour still ranks above every non-neighbour.
    """

    shrink: float = 10.0
    alpha: float = 0.5
    top_k: int | None = 20
    popularity_tiebreak: bool = True

    def __post_init__(self) -> None:
        if self.shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {self.shrink}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")


def top_k_per_row(
    matrix: sp.csr_matrix, k: int, column_group: np.ndarray | None = None
) -> sp.csr_matrix:
    """Keep the ``k`` largest stored values of each row of a CSR matrix (vectorised).

    Args:
        matrix: the matrix.
        k: values kept per row (per row and column group when ``column_group`` is given).
        column_group: optional group of each column (e.g. the domain of each item): the ``k``
            largest are then kept in every group of a row, so one group cannot crowd out
            another.

    Returns:
        A CSR matrix of the same shape. Ties at the cut go to the lower column id, so the
        result is deterministic.
    """
    m = matrix.tocsr()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    key = rows
    if column_group is not None:
        group = np.asarray(column_group, dtype=np.int64)
        key = rows * (int(group.max()) + 1) + group[m.indices]
    order = np.lexsort((m.indices, -m.data, key))  # by key, then value descending
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = order[np.arange(len(order)) - first < k]
    return sp.csr_matrix(
        (m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=m.dtype
    )


class ItemNeighbours:
    """Item-to-item similarities over all domains' items; see the module docstring.

    Args:
        config: the similarity settings.
    """

    def __init__(self, config: NeighbourConfig | None = None) -> None:
        self.config = config or NeighbourConfig()
        self.similarity: sp.csr_matrix | None = None  # (n_items, n_items), row = history item
        self.prior: np.ndarray | None = None  # (n_items,) tie-break added to every score

    @staticmethod
    def histories(rows: np.ndarray, items: np.ndarray, n_rows: int, n_items: int) -> sp.csr_matrix:
        """A binary ``(n_rows, n_items)`` history matrix from (row, item id) pairs."""
        rows, items = np.asarray(rows), np.asarray(items)
        if len(rows) != len(items):
            raise ValueError(f"{len(rows)} rows but {len(items)} items")
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(
                f"item ids must lie in [0, {n_items}); got {items.min()}..{items.max()}"
            )
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, items)), shape=(n_rows, n_items))
        m.data[:] = 1.0  # duplicates count once
        return m

    def fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        n_items: int,
        item_domain: np.ndarray | None = None,
    ) -> ItemNeighbours:
        """Learn the similarities from (user id, item id) pairs of every domain.

        Args:
            users: user ids (any non-negative integers).
            items: item ids in ``[0, n_items)`` (id 0, padding, may simply never occur).
            n_items: size of the item vocabulary.
            item_domain: optional domain of each item id (length ``n_items``): each item then
                keeps its ``top_k`` neighbours *in every domain*, so the many neighbours of a
                big source domain do not crowd out the few in a small target domain.

        Returns:
            ``self``.
        """
        users = np.asarray(users)
        if len(users) == 0:
            raise ValueError("no training pairs")
        x = self.histories(users, items, int(users.max()) + 1, n_items)
        count = np.asarray(x.sum(axis=0)).ravel()
        co = (x.T @ x).tocoo()
        off = co.row != co.col
        r, c, v = co.row[off], co.col[off], co.data[off]
        a, s = self.config.alpha, self.config.shrink
        denom = np.power(count[r], a) * np.power(count[c], 1.0 - a) + s
        sim = sp.csr_matrix(((v / denom).astype(np.float32), (r, c)), shape=(n_items, n_items))
        if self.config.top_k is not None:
            if item_domain is not None and len(item_domain) != n_items:
                raise ValueError(f"item_domain has {len(item_domain)} entries, n_items {n_items}")
            sim = top_k_per_row(sim, self.config.top_k, item_domain)
        self.similarity = sim
        self.prior = np.zeros(n_items, dtype=np.float32)
        if self.config.popularity_tiebreak and sim.nnz:
            scale = 0.5 * float(sim.data.min()) / (float(count.max()) + 1.0)
            self.prior = (count * scale).astype(np.float32)
        return self

    def score(self, histories: sp.csr_matrix, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Scores of candidate items ``lo .. hi - 1`` (e.g. one domain's id slice).

        Args:
            histories: ``(n_users, n_items)`` binary history matrix (:meth:`histories`).
            lo: first candidate item id.
            hi: one past the last (default: all items).

        Returns:
            ``(n_users, hi - lo)`` float32 scores; a user with no history gets the popularity
            tie-break alone (zeros without it).
        """
        if self.similarity is None:
            raise RuntimeError("ItemNeighbours is not fitted; call fit() first")
        if histories.shape[1] != self.similarity.shape[0]:
            raise ValueError(
                f"histories have {histories.shape[1]} item columns, the model "
                f"{self.similarity.shape[0]}"
            )
        hi = self.similarity.shape[1] if hi is None else hi
        cols = self.similarity[:, lo:hi]
        out = (histories @ cols).toarray().astype(np.float32, copy=False)
        if self.prior is not None:
            out += self.prior[lo:hi]
        return torch.from_numpy(out)

    def neighbours(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar items of ``item`` (ids, similarities), best first: the
        "bought in the other shop too" explanation of a cross-domain recommendation."""
        if self.similarity is None:
            raise RuntimeError("ItemNeighbours is not fitted; call fit() first")
        row = self.similarity.getrow(item)
        order = np.argsort(-row.data, kind="stable")[:k]
        return row.indices[order], row.data[order]

    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``similarity.safetensors`` (CSR arrays) to a directory."""
        if self.similarity is None:
            raise RuntimeError("ItemNeighbours is not fitted; nothing to save")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        s = self.similarity
        meta = {"kind": "item_neighbours", "config": asdict(self.config), "shape": list(s.shape)}
        (out / "config.json").write_text(json.dumps(meta, indent=2))
        save_file(
            {"data": s.data, "indices": s.indices.astype(np.int64),
             "indptr": s.indptr.astype(np.int64), "prior": self.prior},
            str(out / "similarity.safetensors"),
        )  # fmt: skip

    @classmethod
    def load(cls, directory: str | Path) -> ItemNeighbours:
        """Read a model written by :meth:`save`."""
        d = Path(directory)
        meta = json.loads((d / "config.json").read_text())
        if meta.get("kind") != "item_neighbours":
            raise ValueError(f"{d} does not hold an ItemNeighbours model")
        arrays = load_file(str(d / "similarity.safetensors"))
        model = cls(NeighbourConfig(**meta["config"]))
        model.similarity = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(meta["shape"])
        )
        model.prior = arrays["prior"]
        return model
