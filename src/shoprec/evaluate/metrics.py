"""Evaluation metrics as pure, vectorised functions.

Every function takes arrays and returns numbers (or per-user arrays); none of them knows
about models, encoders or data frames. There are no Python loops over users or groups:
grouped metrics use sorting and ``np.bincount``; ranking metrics run in chunks of users on
``torch`` (``topk`` + ``searchsorted``), so a 15k users x 12k items score matrix is fine.

Three families:

* **Pointwise** (one prediction per labelled example): :func:`auc`, :func:`gauc`,
  :func:`logloss`, :func:`accuracy`, :func:`macro_f1`, :func:`rmse`, :func:`mae`.
* **Full ranking** (each user scored against every item): :func:`rank_of_targets` for one
  held-out item per user, then :func:`hit_rate_at_k`, :func:`ndcg_at_k`, :func:`mrr` on the
  ranks; :func:`ranking_metrics` / :func:`recall_at_k` for several relevant items per user.
* **Sampled candidates** (the positive against N sampled negatives): :func:`sampled_ranks`,
  then the same rank metrics.

Metric keys are spelled one way everywhere in shoprec: lower case, ``hr@10``, ``ndcg@10``,
``recall@20``, ``precision@10``, ``mrr``, ``auc``; per task ``<task>/<metric>`` (``buy/auc``,
``buy/ndcg@10``).

Ranks are 0-based (0 = top of the list) and **pessimistic on ties**: an item that scores the
same as the target counts as ranked above it. A model that gives every item the same score
therefore gets the worst possible rank, never a flattering one, and the result does not depend
on how a sort breaks ties. (Pointwise AUC is different: it averages ties, exactly like
``sklearn.metrics.roc_auc_score``.)

Items already seen in training can be excluded from a user's ranking, given either as a
boolean ``(U, I)`` mask or as a ``scipy.sparse`` CSR array or matrix with one row per user
(:func:`csr_from_lists` / :func:`csr_from_pairs` build one; only the sparsity pattern is read).
Exclusion never applies to the items being ranked (a target that also appears in the
user's training history is still ranked).

Example:
    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    >>> ranks = rank_of_targets(scores, np.array([2, 1]), exclude=csr_from_lists([[0], []]))
    >>> ranks.tolist()  # user 0's item 0 is excluded, so item 2 comes first
    [0, 0]
    >>> hit_rate_at_k(ranks, 1)
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "Sparse",
    "accuracy",
    "as_csr",
    "auc",
    "csr_from_lists",
    "csr_from_pairs",
    "gauc",
    "grouped_auc",
    "hit_rate_at_k",
    "logloss",
    "macro_f1",
    "mae",
    "mrr",
    "ndcg_at_k",
    "rank_of_targets",
    "ranking_metrics",
    "recall_at_k",
    "rmse",
    "sampled_ranks",
    "top_k_items",
]

Scores = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# Item lists per user as scipy CSR
# --------------------------------------------------------------------------------------------

Sparse = sp.csr_array | sp.csr_matrix
"""Rows of item indices (users x items) in scipy's compressed sparse row layout: row ``u``
holds ``indices[indptr[u]:indptr[u + 1]]``; the stored values are ignored."""


def csr_from_pairs(
    rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int | None = None
) -> sp.csr_array:
    """A boolean ``(n_rows, n_cols)`` :class:`scipy.sparse.csr_array` from parallel ``(nnz,)``
    row and column indices (any order; a repeated pair is stored once, columns sorted).

    Args:
        rows: row (user) index of each pair.
        cols: column (item) index of each pair.
        n_rows: number of rows.
        n_cols: number of columns (default: the largest column index + 1).

    Example:
        >>> csr_from_pairs(np.array([1, 0, 0]), np.array([0, 3, 1]), 3).indptr.tolist()
        [0, 2, 3, 3]
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    cols = np.asarray(cols, dtype=np.int64).ravel()
    if len(rows) != len(cols):
        raise ValueError(f"got {len(rows)} row indices but {len(cols)} column indices")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"row index out of range for n_rows={n_rows}")
    if n_cols is None:
        n_cols = int(cols.max()) + 1 if len(cols) else 0
    data = np.ones(len(rows), dtype=bool)
    m = sp.csr_array((data, (rows, cols)), shape=(int(n_rows), int(n_cols)))
    m.sum_duplicates()
    return m


def csr_from_lists(rows: Iterable[Sequence[int]], n_cols: int | None = None) -> sp.csr_array:
    """A boolean :class:`scipy.sparse.csr_array` with one list of item indices per row.

    Example:
        >>> csr_from_lists([[3, 1], [], [0]]).indptr.tolist()
        [0, 2, 2, 3]
    """
    arrays = [np.asarray(r, dtype=np.int64).ravel() for r in rows]
    lengths = np.array([len(r) for r in arrays], dtype=np.int64)
    cols = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return csr_from_pairs(np.repeat(np.arange(len(arrays)), lengths), cols, len(arrays), n_cols)


def as_csr(x: Sparse | sp.sparray | sp.spmatrix) -> sp.csr_array | sp.csr_matrix:
    """``x`` in CSR layout (a CSR array or matrix is returned as it is).

    Raises:
        TypeError: ``x`` is not a scipy sparse array or matrix.
    """
    if isinstance(x, sp.csr_array | sp.csr_matrix):
        return x
    if sp.issparse(x):
        return x.tocsr()
    raise TypeError(f"expected a scipy.sparse CSR array of item lists, got {type(x).__name__}")


def _ptr_idx(x: Sparse) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` of a CSR as int64 arrays."""
    return x.indptr.astype(np.int64, copy=False), x.indices.astype(np.int64, copy=False)


ExcludeSpec = Sparse | np.ndarray | torch.Tensor | None


def _rows_mask(
    spec: ExcludeSpec, start: int, stop: int, n_rows: int, n_items: int, device: torch.device
) -> torch.Tensor:
    """Boolean ``(stop - start, n_items)`` mask of rows ``start:stop`` of a CSR or dense mask."""
    n = stop - start
    if spec is None:
        return torch.zeros(n, n_items, dtype=torch.bool, device=device)
    if isinstance(spec, np.ndarray | torch.Tensor):
        if tuple(spec.shape) != (n_rows, n_items):
            raise ValueError(f"mask must have shape {(n_rows, n_items)}, got {tuple(spec.shape)}")
        return torch.as_tensor(spec[start:stop], device=device).to(torch.bool)
    csr = as_csr(spec)
    if csr.shape[0] != n_rows:
        raise ValueError(f"CSR has {csr.shape[0]} rows, scores have {n_rows}")
    indptr, indices = _ptr_idx(csr)
    ptr = indptr[start : stop + 1]
    cols = indices[ptr[0] : ptr[-1]]
    if len(cols) and (cols.min() < 0 or cols.max() >= n_items):
        raise ValueError(f"CSR item index out of range [0, {n_items})")
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(ptr))
    mask = torch.zeros(n, n_items, dtype=torch.bool, device=device)
    mask[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = True
    return mask


def _as_scores(scores: Scores) -> torch.Tensor:
    s = torch.as_tensor(scores)  # shares memory with a numpy array
    if s.ndim != 2:
        raise ValueError(f"scores must be (users, items), got shape {tuple(s.shape)}")
    if not torch.is_floating_point(s):
        s = s.to(torch.float64)
    return s


# --------------------------------------------------------------------------------------------
# Pointwise metrics
# --------------------------------------------------------------------------------------------


def _binary_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y).ravel()
    if y.dtype == bool:
        return y
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    return y.astype(bool)


def _finite_scores(p: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(p) != n:
        raise ValueError(f"got {n} labels but {len(p)} scores")
    if np.isnan(p).any():
        raise ValueError("scores contain NaN")
    return p


def grouped_auc(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group at once, with ties averaged (as ``roc_auc_score``).

    Uses the Mann-Whitney form ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, where
    ``R_pos`` sums the tie-averaged within-group ranks of the positives. One ``lexsort`` by
    (group, score) gives all within-group ranks; ``bincount`` does the per-group sums.

    Args:
        y: ``(N,)`` binary labels.
        p: ``(N,)`` scores (any monotone scale: probabilities, logits).
        groups: ``(N,)`` group keys of any sortable dtype (user ids, strings).

    Returns:
        ``(keys, auc, n, n_pos)``, each ``(G,)`` in sorted key order; ``auc`` is NaN for a
        group with only one class.

    Example:
        >>> keys, a, n, npos = grouped_auc([1, 0, 1, 1], [0.9, 0.1, 0.2, 0.3], ["a", "a", "b", "b"])
        >>> a.tolist(), n.tolist()
        ([1.0, nan], [2, 2])
    """
    y = _binary_labels(y)
    p = _finite_scores(p, len(y))
    keys, codes = np.unique(np.asarray(groups).ravel(), return_inverse=True)
    codes = codes.ravel()
    if len(codes) != len(y):
        raise ValueError(f"got {len(y)} labels but {len(codes)} group keys")
    n_groups = len(keys)
    n = len(y)
    if n == 0:
        empty = np.zeros(0)
        return keys, empty, empty.astype(np.int64), empty.astype(np.int64)

    order = np.lexsort((p, codes))  # by group, then by score
    g, s, yy = codes[order], p[order], y[order]
    # Runs of equal (group, score): tied examples share the mean of their positions.
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_start, n))
    run_mid = run_start + (run_len - 1) / 2.0  # mean 0-based position of each run
    run_id = np.cumsum(new_run) - 1
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank = run_mid[run_id] - group_start + 1.0  # 1-based, tie-averaged, within group

    n_g = np.bincount(codes, minlength=n_groups)
    pos_g = np.bincount(codes, weights=y, minlength=n_groups)
    rank_sum = np.bincount(g, weights=rank * yy, minlength=n_groups)
    neg_g = n_g - pos_g
    with np.errstate(divide="ignore", invalid="ignore"):
        aucs = (rank_sum - pos_g * (pos_g + 1) / 2.0) / (pos_g * neg_g)
    aucs[(pos_g == 0) | (neg_g == 0)] = np.nan
    return keys, aucs, n_g, pos_g.astype(np.int64)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve; equals ``sklearn.metrics.roc_auc_score`` including ties.

    Args:
        y: ``(N,)`` binary labels.
        p: ``(N,)`` scores.

    Returns:
        The AUC in ``[0, 1]``.

    Raises:
        ValueError: if ``y`` holds only one class (AUC is undefined).

    Example:
        >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y = _binary_labels(y)
    _, a, _, _ = grouped_auc(y, p, np.zeros(len(y), dtype=np.int8))
    if len(a) == 0 or np.isnan(a[0]):
        raise ValueError("AUC is undefined when y holds only one class")
    return float(a[0])


def gauc(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    weight: Literal["samples", "positives"] = "samples",
) -> float:
    """Group AUC: the weighted mean of per-group (usually per-user) AUCs.

    ``GAUC = sum_g w_g AUC_g / sum_g w_g`` over groups that have both classes; groups with
    only positives or only negatives are skipped (their AUC is undefined).

    Args:
        y: ``(N,)`` binary labels.
        p: ``(N,)`` scores.
        groups: ``(N,)`` group key per example (e.g. user id).
        weight: ``"samples"`` weights a group by its number of examples (impressions), the
            usual definition (Zhou et al., DIN, 2018); ``"positives"`` by its number of
            positive examples (e.g. clicks).

    Returns:
        The GAUC, or NaN if no group has both classes.

    Example:
        >>> gauc([1, 0, 0, 1, 0, 1], [0.9, 0.1, 0.5, 0.2, 0.3, 0.7], [0, 0, 0, 1, 1, 2])
        0.6
    """
    _, a, n, npos = grouped_auc(y, p, groups)
    if weight == "samples":
        w = n.astype(np.float64)
    elif weight == "positives":
        w = npos.astype(np.float64)
    else:
        raise ValueError(f"weight must be 'samples' or 'positives', got {weight!r}")
    valid = ~np.isnan(a)
    if not valid.any():
        return float("nan")
    return float(np.sum(w[valid] * a[valid]) / np.sum(w[valid]))


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; equals ``sklearn.metrics.log_loss`` for ``p`` inside the clip.

    Args:
        y: ``(N,)`` labels in ``[0, 1]`` (hard or soft).
        p: ``(N,)`` predicted probabilities of class 1.
        eps: ``p`` is clipped to ``[eps, 1 - eps]`` so a confident mistake costs a finite
            ``-log(eps)``. The default suits float32 model outputs.

    Returns:
        The mean log loss (natural log).

    Example:
        >>> round(logloss([1, 0], [0.8, 0.4]), 4)
        0.367
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.clip(_finite_scores(p, len(y)), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _labels(pred: np.ndarray, threshold: float) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim == 2:
        return pred.argmax(axis=1)
    if np.issubdtype(pred.dtype, np.floating):
        return (pred >= threshold).astype(np.int64)
    return pred.astype(np.int64)


def accuracy(y: np.ndarray, pred_or_proba: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of correct predictions; equals ``sklearn.metrics.accuracy_score``.

    Args:
        y: ``(N,)`` integer class labels.
        pred_or_proba: ``(N,)`` integer predicted labels, or ``(N,)`` float probabilities of
            class 1 (thresholded at ``threshold``), or ``(N, C)`` class scores (argmax).
        threshold: decision threshold for 1-D float input.

    Returns:
        Accuracy in ``[0, 1]``.

    Example:
        >>> accuracy([1, 0, 1], [0.7, 0.6, 0.2])
        0.3333333333333333
    """
    y = np.asarray(y).ravel().astype(np.int64)
    pred = _labels(pred_or_proba, threshold)
    if len(pred) != len(y):
        raise ValueError(f"got {len(y)} labels but {len(pred)} predictions")
    return float(np.mean(y == pred))


def macro_f1(
    y: np.ndarray, pred: np.ndarray, n_classes: int | None = None, threshold: float = 0.5
) -> float:
    """Unweighted mean of per-class F1; equals ``f1_score(y, pred, average="macro")``.

    The mean runs over classes that occur in ``y`` or in the predictions (scikit-learn's
    default); a class never predicted but present in ``y`` scores 0.

    Args:
        y: ``(N,)`` non-negative integer class labels.
        pred: predictions, read as in :func:`accuracy` (labels, P(class 1), or ``(N, C)``).
        n_classes: number of classes, if known (only sizes the counts).
        threshold: decision threshold for 1-D float input.

    Returns:
        Macro F1 in ``[0, 1]``.

    Example:
        >>> macro_f1([0, 1, 2, 2], [0, 2, 2, 2])
        0.6
    """
    y = np.asarray(y).ravel().astype(np.int64)
    p = _labels(pred, threshold)
    if len(p) != len(y):
        raise ValueError(f"got {len(y)} labels but {len(p)} predictions")
    if len(y) == 0:
        return float("nan")
    if y.min() < 0 or p.min() < 0:
        raise ValueError("class labels must be non-negative integers")
    k = max(int(y.max()), int(p.max())) + 1
    k = max(k, n_classes or 0)
    tp = np.bincount(y[y == p], minlength=k)
    denom = np.bincount(y, minlength=k) + np.bincount(p, minlength=k)  # 2tp + fp + fn
    present = denom > 0
    return float(np.mean(2.0 * tp[present] / denom[present]))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error over ``(N,)`` targets and predictions."""
    y = np.asarray(y, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute error over ``(N,)`` targets and predictions."""
    y = np.asarray(y, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    return float(np.mean(np.abs(y - pred)))


# --------------------------------------------------------------------------------------------
# Ranking: one target per user
# --------------------------------------------------------------------------------------------


def rank_of_targets(
    scores: Scores,
    targets: np.ndarray,
    exclude: ExcludeSpec = None,
    chunk_size: int = 1024,
) -> np.ndarray:
    """0-based rank of each user's target among all items not excluded for that user.

    ``rank[u] = #{j != t_u, j not excluded for u : scores[u, j] >= scores[u, t_u]}``, i.e.
    ties count against the target (pessimistic) and excluded items never count, however
    high they score. The target itself is ranked even if it is in ``exclude``.

    Args:
        scores: ``(U, I)`` scores, numpy or torch (any device); higher is better. No NaN.
        targets: ``(U,)`` item index of each user's held-out target.
        exclude: items to leave out of each user's ranking (e.g. training items): a
            ``(U, I)`` boolean mask or a scipy CSR array (one row per user).
        chunk_size: users per chunk (bounds memory at a few ``(chunk_size, I)`` arrays).

    Returns:
        ``(U,)`` int64 ranks; 0 means the target is first.

    Example:
        >>> rank_of_targets(np.array([[0.5, 0.5, 0.1]]), np.array([0])).tolist()  # a tie
        [1]
    """
    s_all = _as_scores(scores)
    n_users, n_items = s_all.shape
    t_all = torch.as_tensor(np.asarray(targets, dtype=np.int64).ravel(), device=s_all.device)
    if len(t_all) != n_users:
        raise ValueError(f"got {n_users} score rows but {len(t_all)} targets")
    if n_users and (t_all.min() < 0 or t_all.max() >= n_items):
        raise ValueError(f"target index out of range [0, {n_items})")
    out = []
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        s = s_all[start:stop]  # (C, I)
        if torch.isnan(s).any():
            raise ValueError("scores contain NaN")
        t = t_all[start:stop]
        rows = torch.arange(stop - start, device=s.device)
        keep = ~_rows_mask(exclude, start, stop, n_users, n_items, s.device)
        keep[rows, t] = False  # the target does not count against itself
        ts = s[rows, t].unsqueeze(1)  # (C, 1)
        out.append(((s >= ts) & keep).sum(dim=1))
    if not out:
        return np.zeros(0, dtype=np.int64)
    return torch.cat(out).cpu().numpy().astype(np.int64)


def sampled_ranks(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """0-based rank of each positive among itself and its sampled negatives.

    Same tie rule as :func:`rank_of_targets`: a negative scoring equal to the positive
    counts as ranked above it.

    Args:
        pos_scores: ``(U,)`` score of each user's positive item.
        neg_scores: ``(U, N)`` scores of ``N`` sampled negatives per user.

    Returns:
        ``(U,)`` int64 ranks in ``[0, N]``.

    Example:
        >>> sampled_ranks(np.array([0.5, 0.9]), np.array([[0.7, 0.5, 0.1], [0.1, 0.2, 0.3]]))
        array([2, 0])
    """
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64)
    if neg.ndim != 2 or neg.shape[0] != len(pos):
        raise ValueError(f"neg_scores must be ({len(pos)}, N), got {neg.shape}")
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("scores contain NaN")
    return (neg >= pos[:, None]).sum(axis=1).astype(np.int64)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of users whose target is in the top ``k`` (``rank < k``).

    Args:
        ranks: ``(U,)`` 0-based ranks from :func:`rank_of_targets` or :func:`sampled_ranks`.
        k: cut-off.

    Example:
        >>> hit_rate_at_k(np.array([0, 3, 10]), 5)
        0.6666666666666666
    """
    return float(np.mean(np.asarray(ranks) < k))


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item per user: ``1 / log2(rank + 2)`` if ``rank < k``.

    (The ideal DCG of a single relevant item is 1.)

    Args:
        ranks: ``(U,)`` 0-based ranks.
        k: cut-off.

    Example:
        >>> ndcg_at_k(np.array([0, 1, 7]), 5)  # (1 + 1/log2(3) + 0) / 3
        0.5436432511904858
    """
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank ``mean(1 / (rank + 1))`` over ``(U,)`` 0-based ranks.

    Example:
        >>> mrr(np.array([0, 1, 3]))
        0.5833333333333334
    """
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(1.0 / (r + 1.0)))


# --------------------------------------------------------------------------------------------
# Ranking: several relevant items per user
# --------------------------------------------------------------------------------------------


def _chunk_ranking(
    s: torch.Tensor, rel: torch.Tensor, exc: torch.Tensor, ks: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Per-user metrics for one chunk. ``s``: (C, I) scores; ``rel``/``exc``: (C, I) bool.

    The list is sorted by score, ties broken pessimistically: other items tied with a
    relevant item go above it; relevant items tied with each other take consecutive places.
    So the m-th best relevant item (0-based) sits at position ``m + #{others scoring >= it}``,
    where "others" are the items neither relevant nor excluded. Only positions below
    ``max(ks)`` matter for the @k metrics, so the others are cut to their top ``max(ks)``
    with ``topk`` and counted with ``searchsorted``; MRR needs the full position of the best
    relevant item only, which is one comparison per item.
    """
    n_items = s.shape[1]
    dev = s.device
    neg_inf = torch.tensor(float("-inf"), dtype=s.dtype, device=dev)
    exc = exc & ~rel
    other = ~(rel | exc)  # (C, I)
    n_rel = rel.sum(dim=1)  # (C,)
    n_other = other.sum(dim=1)  # (C,)
    m_max = max(int(n_rel.max()), 1)
    rel_s = torch.where(rel, s, neg_inf).topk(m_max, dim=1).values  # (C, M) descending
    valid = torch.arange(m_max, device=dev).unsqueeze(0) < n_rel.unsqueeze(1)  # (C, M)

    k_cut = min(max(ks), n_items)
    top_other = torch.where(other, s, neg_inf).topk(k_cut, dim=1).values  # (C, K) descending
    # #{top others >= r}: searchsorted on the ascending sequence -top_other.
    n_above = torch.searchsorted(-top_other, -rel_s, right=True)  # (C, M)
    n_above = torch.minimum(n_above, n_other.unsqueeze(1))  # -inf padding never counts
    pos = torch.arange(m_max, device=dev).unsqueeze(0) + n_above  # exact when < k_cut

    best_pos = ((s >= rel_s[:, :1]) & other).sum(dim=1)  # (C,) full position of best relevant
    has = n_rel > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=dev)
    out = {"mrr": torch.where(has, 1.0 / (best_pos.double() + 1.0), nan)}

    disc = 1.0 / torch.log2(pos.double() + 2.0)  # (C, M)
    ideal = torch.cumsum(1.0 / torch.log2(torch.arange(max(ks), device=dev).double() + 2.0), 0)
    n_rel_f = n_rel.double()
    for k in ks:
        in_k = valid & (pos < k)  # (C, M)
        hits = in_k.sum(dim=1).double()
        dcg = (disc * in_k).sum(dim=1)
        idcg = ideal[(torch.clamp(n_rel, max=k) - 1).clamp(min=0)]
        out[f"hr@{k}"] = torch.where(has, (hits > 0).double(), nan)
        out[f"recall@{k}"] = torch.where(has, hits / n_rel_f.clamp(min=1), nan)
        out[f"ndcg@{k}"] = torch.where(has, dcg / idcg, nan)
        out[f"precision@{k}"] = torch.where(has, hits / k, nan)
    return out


def ranking_metrics(
    scores: Scores,
    relevant: Sparse,
    exclude: ExcludeSpec = None,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 1024,
    per_user: bool = False,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Full-ranking metrics with any number of relevant items per user.

    For each user the non-excluded items are sorted by score (ties pessimistic, see
    :func:`_chunk_ranking`); relevant items are always ranked, even if also excluded. Then:

    * ``hr@k``: 1 if any relevant item is in the top k.
    * ``recall@k``: relevant items in the top k / number of relevant items.
    * ``ndcg@k``: ``DCG@k / IDCG@k`` with binary gains, ``DCG = sum 1/log2(pos + 2)`` over
      relevant items at 0-based positions ``pos < k`` and ``IDCG`` the DCG of the
      ``min(n_relevant, k)`` relevant items placed first.
    * ``precision@k``: relevant items in the top k / k (always over ``k``, also when a user
      has fewer than ``k`` relevant items or the catalog fewer than ``k`` items, as RecBole).
    * ``mrr``: ``1 / (pos + 1)`` of the best-placed relevant item (uncut).

    With one relevant item per user these equal :func:`hit_rate_at_k`, :func:`ndcg_at_k` and
    :func:`mrr` on :func:`rank_of_targets`. Users with no relevant item are left out of the
    means (their per-user values are NaN).

    Args:
        scores: ``(U, I)`` scores, numpy or torch (any device; a GPU tensor stays there).
        relevant: scipy CSR ``(U, >= I)`` with the held-out relevant items of each user.
        exclude: items to drop from each user's ranking: ``(U, I)`` bool mask or CSR.
        ks: cut-offs.
        chunk_size: users per chunk (memory is a few ``(chunk_size, I)`` arrays).
        per_user: return ``(U,)`` float64 arrays instead of means.

    Returns:
        ``{"hr@k", "recall@k", "ndcg@k", "precision@k" for each k, "mrr"}`` -> mean over
        users with at least one relevant item (NaN if none), or per-user arrays.

    Example:
        >>> scores = np.array([[0.9, 0.8, 0.7, 0.1]])
        >>> m = ranking_metrics(scores, csr_from_lists([[2, 3]]), csr_from_lists([[0]]), ks=(2,))
        >>> m["recall@2"], m["hr@2"], m["mrr"]  # ranking is 1, 2, 3 -> item 2 second
        (0.5, 1.0, 0.5)
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    s_all = _as_scores(scores)
    n_users, n_items = s_all.shape
    rel_csr = as_csr(relevant)
    if rel_csr.shape[0] != n_users:
        raise ValueError(f"relevant has {rel_csr.shape[0]} rows, scores have {n_users}")
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        s = s_all[start:stop]
        if torch.isnan(s).any():
            raise ValueError("scores contain NaN")
        rel = _rows_mask(rel_csr, start, stop, n_users, n_items, s.device)
        exc = _rows_mask(exclude, start, stop, n_users, n_items, s.device)
        for name, v in _chunk_ranking(s, rel, exc, ks).items():
            parts.setdefault(name, []).append(v)
    names = [f"{m}@{k}" for m in ("hr", "recall", "ndcg", "precision") for k in ks] + ["mrr"]
    per = {
        n: (torch.cat(parts[n]).cpu().numpy() if parts else np.zeros(0, dtype=np.float64))
        for n in names
    }
    if per_user:
        return per
    has = ~np.isnan(per["mrr"])
    return {n: (float(v[has].mean()) if has.any() else float("nan")) for n, v in per.items()}


def top_k_items(
    scores: Scores, k: int, exclude: ExcludeSpec = None, chunk_size: int = 1024
) -> np.ndarray:
    """Each user's ``k`` best items that are not excluded, best first (the list a user sees).

    Args:
        scores: ``(U, I)`` scores, numpy or torch; higher is better.
        k: list length (cut to ``I``).
        exclude: items left out of each user's list: ``(U, I)`` bool mask or scipy CSR.
        chunk_size: users per chunk.

    Returns:
        ``(U, k)`` int64 item positions; ``-1`` where a user has fewer than ``k`` items left.

    Example:
        >>> top_k_items(np.array([[0.1, 0.9, 0.5]]), 2, csr_from_lists([[1]])).tolist()
        [[2, 0]]
    """
    s_all = _as_scores(scores)
    n_users, n_items = s_all.shape
    k = min(int(k), n_items)
    out = []
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        s = s_all[start:stop].to(torch.float64)
        exc = _rows_mask(exclude, start, stop, n_users, n_items, s.device)
        top = s.masked_fill(exc, float("-inf")).topk(k, dim=1)
        idx = torch.where(torch.isfinite(top.values) | ~exc.gather(1, top.indices), top.indices, -1)
        out.append(idx.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def recall_at_k(
    scores: Scores,
    relevant: Sparse,
    k: int,
    exclude: ExcludeSpec = None,
    chunk_size: int = 1024,
) -> float:
    """Mean Recall@k over users with at least one relevant item.

    ``recall_u = |top-k(u) ∩ relevant(u)| / |relevant(u)|``; see :func:`ranking_metrics` for
    the tie and exclusion rules.

    Args:
        scores: ``(U, I)`` scores.
        relevant: scipy CSR of relevant items per user.
        k: cut-off.
        exclude: items to drop from each user's ranking: ``(U, I)`` bool mask or CSR.
        chunk_size: users per chunk.

    Example:
        >>> recall_at_k(np.array([[0.1, 0.9, 0.5]]), csr_from_lists([[0, 1]]), k=2)
        0.5
    """
    m = ranking_metrics(scores, relevant, exclude, ks=(k,), chunk_size=chunk_size)
    return float(m[f"recall@{k}"])
