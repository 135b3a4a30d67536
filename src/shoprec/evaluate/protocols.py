"""Evaluation protocols on top of a score function: full ranking, sampled ranking, slices, CIs.

Every recipe and benchmark hands this module a **score function**
``score_fn(users, items) -> scores``:

* ``users``: ``(U,)`` int row indices into the list of evaluated users (``0 .. n_users - 1``);
* ``items``: ``(C,)`` int item positions (columns), or ``None`` for the whole catalog;
* returns ``(U, C)`` (or ``(U, n_items)``) float scores, numpy or torch; higher is better.

Two protocols turn it into a :class:`RankingResult` (means, per-user values, optional
bootstrap confidence intervals):

* :func:`full_ranking` follows RecBole's *full-sort* evaluation (``eval_args.mode: full``):
  each user's relevant (held-out) items are ranked against the whole catalog with the user's
  training items excluded, and HR@k, Recall@k, NDCG@k, Precision@k and MRR are averaged over
  users that have at least one relevant item. Users are scored ``chunk_size`` at a time, so a
  ``(n_users, n_items)`` matrix never exists.
* :func:`sampled_ranking` is the "1 positive + N sampled negatives" protocol of the papers
  (NCF, He et al. 2017: 99 uniform negatives; RecBole's ``uni100`` / ``pop100``): every
  (user, relevant item) pair is ranked among ``n_negatives`` items drawn, with a fixed seed,
  uniformly or in proportion to popularity from the items that are neither relevant to nor
  excluded for that user. Sampled metrics are cheap but can disagree with full ranking
  (Krichene and Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020); report
  them next to the papers that used them, not instead of :func:`full_ranking`.

Where we differ from RecBole:

* **Ties are pessimistic** (as everywhere in :mod:`shoprec.evaluate.metrics`): an item scoring
  the same as a relevant item counts as ranked above it. RecBole's ``torch.topk`` breaks ties
  by item position, so a constant (or heavily tied) model can look good there; here it gets
  the worst rank.
* MRR is over the full list (the best relevant item's 1 / (position + 1), uncut), not MRR@k.
* Sampled negatives are distinct within each (user, positive) pair, never one of the user's
  relevant or excluded items; each pair gets its own negatives.
* In the sampled protocol a user's value is the mean over that user's pairs, and the reported
  number the mean over users (with one held-out item per user, the usual leave-one-out
  setting, this equals RecBole's mean over pairs).

Slices: :meth:`RankingResult.slice` / :func:`evaluate_slices` take boolean masks over users
(warm / cold users, a domain, ...). Item-side slices (cold items, "twin-free" items) change
what is relevant, so they rerun a protocol on :func:`restrict`-ed relevant lists, see
:func:`item_slices`. Users with no relevant item in a slice are left out of its means.

Example:
    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    >>> fn = lambda u, i: scores[u] if i is None else scores[u][:, i]
    >>> r = full_ranking(fn, 2, 3, csr_from_lists([[2], [1]]), csr_from_lists([[0], []]), ks=(1,))
    >>> r.metrics["hr@1"], r.metrics["users"]
    (1.0, 2)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from shoprec.evaluate.metrics import (
    Sparse,
    as_csr,
    auc,
    csr_from_lists,  # noqa: F401 (the doctests use it)
    csr_from_pairs,
    gauc,
    logloss,
    ranking_metrics,
    sampled_ranks,
    top_k_items,
)

__all__ = [
    "RankingResult",
    "ScoreFn",
    "bootstrap_ci",
    "evaluate_slices",
    "evaluated_users",
    "full_ranking",
    "item_lists",
    "item_slices",
    "pointwise",
    "restrict",
    "sample_negatives",
    "sampled_ranking",
    "take_rows",
    "top_k_lists",
    "union",
]

ScoreFn = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""``score_fn(users (U,), items (C,) | None) -> (U, C)`` scores, higher is better."""

ExcludeArg = Sparse | np.ndarray | None


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass
class RankingResult:
    """Metrics of one evaluation, with the per-user values they are means of.

    Attributes:
        metrics: means over users with at least one relevant item, keys in lower case
            (``hr@10``, ``recall@10``, ``ndcg@10``, ``precision@10``, ``mrr``) plus ``users``,
            the number of users counted.
        per_user: ``(U,)`` float arrays under the same keys (NaN for a user without a
            relevant item), kept for bootstrapping and slicing.
        ci: ``metric -> (low, high)`` bootstrap interval, filled by :meth:`with_ci`.
        protocol: a short description of how the numbers were made (e.g. ``"full"``,
            ``"sampled: 99 uniform negatives"``).
        top_items: ``(U, K)`` each user's top-K items (excluded ones left out, ``-1`` pads),
            when the protocol was asked for them (``full_ranking(..., top_k=K)``); what the
            exposure measures of :mod:`shoprec.evaluate.fairness` read.
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    protocol: str = ""
    top_items: np.ndarray | None = None

    @classmethod
    def from_per_user(cls, per_user: Mapping[str, np.ndarray], protocol: str = "") -> RankingResult:
        """Means of per-user arrays; a user counts where its ``mrr`` (or first key) is not NaN.

        Args:
            per_user: metric -> ``(U,)`` float array, NaN for users without relevant items.
            protocol: stored as :attr:`protocol`.

        Returns:
            A result without confidence intervals.
        """
        per = {k: np.asarray(v, dtype=np.float64) for k, v in per_user.items()}
        if not per:
            return cls({"users": 0}, {}, protocol=protocol)
        key = "mrr" if "mrr" in per else next(iter(per))
        has = ~np.isnan(per[key])
        n = int(has.sum())
        metrics: dict[str, float] = {
            k: (float(v[has].mean()) if n else float("nan")) for k, v in per.items()
        }
        metrics["users"] = n
        return cls(metrics, per, protocol=protocol)

    @property
    def n_users(self) -> int:
        """Length of the per-user arrays (all users, counted or not)."""
        return len(next(iter(self.per_user.values()))) if self.per_user else 0

    def with_ci(self, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> RankingResult:
        """A copy with :attr:`ci` filled by :func:`bootstrap_ci` for every metric.

        Args:
            n_boot: bootstrap resamples of the users.
            alpha: ``1 - alpha`` is the interval's coverage.
            seed: seed of the resampling (the same users are drawn for every metric).

        Returns:
            A new :class:`RankingResult`; this one is left unchanged.
        """
        ci = {
            k: bootstrap_ci(v, n_boot=n_boot, alpha=alpha, seed=seed)
            for k, v in self.per_user.items()
        }
        return dataclasses.replace(self, ci=ci)

    def slice(self, user_mask: np.ndarray) -> RankingResult:
        """The same evaluation restricted to some users (means recomputed, no CI).

        Args:
            user_mask: ``(U,)`` bool mask over the evaluated users, or an int index array.

        Returns:
            A result whose per-user arrays hold only the chosen users.
        """
        sel = np.asarray(user_mask)
        if sel.dtype == bool and sel.shape != (self.n_users,):
            raise ValueError(f"user_mask must have shape ({self.n_users},), got {sel.shape}")
        return RankingResult.from_per_user(
            {k: v[sel] for k, v in self.per_user.items()}, protocol=self.protocol
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary: ``{"metrics", "ci", "protocol"}`` (per-user arrays left out).

        NaN means become ``None`` so the output is strict JSON.
        """

        def num(x: float) -> float | int | None:
            if isinstance(x, int | np.integer):
                return int(x)
            return None if math.isnan(x) else float(x)

        return {
            "metrics": {k: num(v) for k, v in self.metrics.items()},
            "ci": {k: [num(lo), num(hi)] for k, (lo, hi) in self.ci.items()},
            "protocol": self.protocol,
        }


# --------------------------------------------------------------------------------------------
# CSR helpers
# --------------------------------------------------------------------------------------------


def _csr(x: Sparse) -> Sparse:
    return as_csr(x)


def _row_ids(csr: Sparse) -> np.ndarray:
    """``(nnz,)`` row index of every stored entry."""
    return np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))


def _indices(csr: Sparse) -> np.ndarray:
    """``(nnz,)`` int64 column index of every stored entry."""
    return csr.indices.astype(np.int64, copy=False)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique`` for int keys by sorting (numpy's hash-based unique is slower here)."""
    x = np.sort(x)
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def restrict(relevant: Sparse, keep_item: np.ndarray) -> sp.csr_array:
    """Keep only the items with ``keep_item[item]`` in every row (e.g. the cold items).

    Rows keep their order and count; a row can become empty (that user then drops out of
    the means of a protocol run on the result).

    Args:
        relevant: CSR of item positions per user.
        keep_item: ``(I,)`` bool over items.

    Returns:
        The restricted CSR.

    Example:
        >>> restrict(csr_from_lists([[0, 2], [1]]), np.array([True, False, True])).indptr.tolist()
        [0, 2, 2]
    """
    rel = _csr(relevant)
    keep_item = np.asarray(keep_item, dtype=bool)
    cols = _indices(rel)
    keep = keep_item[cols]
    return csr_from_pairs(_row_ids(rel)[keep], cols[keep], rel.shape[0], rel.shape[1])


def union(a: Sparse, b: Sparse) -> sp.csr_array:
    """Row-wise union of two CSRs with the same rows; each row sorted, without duplicates.

    Example:
        >>> union(csr_from_lists([[3, 1], []]), csr_from_lists([[1], [0]])).indices.tolist()
        [1, 3, 0]
    """
    a, b = _csr(a), _csr(b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"rows differ: {a.shape[0]} vs {b.shape[0]}")
    rows = np.concatenate([_row_ids(a), _row_ids(b)])
    cols = np.concatenate([_indices(a), _indices(b)])
    return csr_from_pairs(rows, cols, a.shape[0], max(a.shape[1], b.shape[1]))


def take_rows(x: Sparse, rows: np.ndarray) -> sp.csr_array:
    """Rows ``rows`` (an int index array, any order, repeats allowed) of a CSR, as a new one.

    Example:
        >>> take_rows(csr_from_lists([[0], [1, 2]]), np.array([1, 1])).indices.tolist()
        [1, 2, 1, 2]
    """
    return sp.csr_array(_csr(x)[np.asarray(rows, dtype=np.int64)])


def _exclude_rows(exclude: ExcludeArg, start: int, stop: int) -> Sparse | np.ndarray | None:
    if exclude is None:
        return None
    if isinstance(exclude, np.ndarray):
        return exclude[start:stop]
    return _csr(exclude)[start:stop]


def _check_scores(s: object, n_rows: int, n_cols: int) -> torch.Tensor:
    t = torch.as_tensor(s)
    if tuple(t.shape) != (n_rows, n_cols):
        raise ValueError(f"score_fn returned shape {tuple(t.shape)}, expected {(n_rows, n_cols)}")
    return t


# --------------------------------------------------------------------------------------------
# Full ranking
# --------------------------------------------------------------------------------------------


def full_ranking(
    score_fn: ScoreFn,
    n_users: int,
    n_items: int,
    relevant: Sparse,
    exclude: ExcludeArg = None,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 1024,
    top_k: int = 0,
) -> RankingResult:
    """Rank every user's relevant items against the whole catalog (RecBole's full sort).

    ``score_fn`` is called once per chunk of ``chunk_size`` users with ``items=None``; the
    chunk is scored by :func:`~shoprec.evaluate.metrics.ranking_metrics` (pessimistic ties,
    excluded items dropped, relevant items always ranked).

    Args:
        score_fn: ``(users (U,), None) -> (U, n_items)`` scores.
        n_users: number of evaluated users (rows of ``relevant``).
        n_items: catalog size (columns).
        relevant: CSR of held-out relevant item positions per user.
        exclude: items to drop from each user's ranking (usually the training items): CSR,
            ``(n_users, n_items)`` bool mask, or None.
        ks: cut-offs.
        chunk_size: users scored at a time.
        top_k: also keep every user's top ``top_k`` items (:attr:`RankingResult.top_items`)
            from the same scores (0: no lists).

    Returns:
        :class:`RankingResult` with ``hr@k``, ``recall@k``, ``ndcg@k``, ``precision@k`` for
        each k, ``mrr`` and ``users``.

    Example:
        >>> s = np.array([[0.1, 0.9, 0.5]])
        >>> full_ranking(lambda u, i: s[u], 1, 3, csr_from_lists([[2]]), ks=(1,)).metrics["mrr"]
        0.5
    """
    rel = _csr(relevant)
    if rel.shape[0] != n_users:
        raise ValueError(f"relevant has {rel.shape[0]} rows, expected n_users={n_users}")
    if isinstance(exclude, np.ndarray) and exclude.shape != (n_users, n_items):
        raise ValueError(f"exclude mask must be {(n_users, n_items)}, got {exclude.shape}")
    parts: dict[str, list[np.ndarray]] = {}
    tops: list[np.ndarray] = []
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        users = np.arange(start, stop, dtype=np.int64)
        scores = _check_scores(score_fn(users, None), stop - start, n_items)
        exc = _exclude_rows(exclude, start, stop)
        per = ranking_metrics(
            scores, rel[start:stop], exc, ks=ks, chunk_size=stop - start, per_user=True
        )
        for name, values in per.items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
        if top_k > 0:
            tops.append(top_k_items(scores, top_k, exc, chunk_size=stop - start))
    if not parts:  # no users: keys still present
        names = [f"{m}@{k}" for m in ("hr", "recall", "ndcg", "precision") for k in ks]
        parts = {n: [np.zeros(0)] for n in [*names, "mrr"]}
    per_user = {name: np.concatenate(v) for name, v in parts.items()}
    result = RankingResult.from_per_user(per_user, protocol="full")
    if top_k > 0:
        width = min(top_k, n_items)
        result.top_items = np.concatenate(tops) if tops else np.zeros((0, width), np.int64)
    return result


def top_k_lists(
    score_fn: ScoreFn,
    n_users: int,
    n_items: int,
    k: int,
    exclude: ExcludeArg = None,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Every user's top ``k`` items over the whole catalog, excluded items left out.

    The lists a full ranking looks at (for exposure and coverage when the accuracy protocol
    is a sampled one); ``full_ranking(..., top_k=k)`` gives the same lists without scoring
    twice.

    Returns:
        ``(n_users, k)`` int64 item positions, best first (``-1`` pads).
    """
    tops = []
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        users = np.arange(start, stop, dtype=np.int64)
        scores = _check_scores(score_fn(users, None), stop - start, n_items)
        tops.append(
            top_k_items(scores, k, _exclude_rows(exclude, start, stop), chunk_size=stop - start)
        )
    return np.concatenate(tops) if tops else np.zeros((0, min(k, n_items)), np.int64)


# --------------------------------------------------------------------------------------------
# Sampled ranking
# --------------------------------------------------------------------------------------------


def sample_negatives(
    relevant: Sparse,
    n_items: int,
    n_negatives: int = 99,
    exclude: Sparse | None = None,
    sampling: Literal["uniform", "popularity"] = "uniform",
    popularity: np.ndarray | None = None,
    seed: int = 0,
    max_rounds: int = 16,
    max_block: int = 2**22,
) -> np.ndarray:
    """Negatives for every (user, relevant item) pair, in the order of ``relevant.indices``.

    Each pair gets ``n_negatives`` distinct items, none of them relevant to or excluded for
    its user, drawn uniformly or with probability proportional to ``popularity`` (sampling
    without replacement). Draws are vectorised in two stages:

    1. Rejection: all slots are drawn at once, then only the slots holding a forbidden item
       or a repeat within their row are drawn again, for up to ``max_rounds`` rounds. This
       is fast whenever the forbidden and already-drawn items carry little of the weight.
    2. Rows still unfinished (a heavy popularity head, a small catalog) are drawn afresh,
       exactly, with the Gumbel-top-k trick: the ``n_negatives`` largest
       ``log w + Gumbel noise`` over the user's allowed items, in blocks of rows.

    Args:
        relevant: CSR of relevant item positions per user; one pair per stored entry.
        n_items: catalog size.
        n_negatives: negatives per pair.
        exclude: CSR of further items never to draw for a user (e.g. training items).
        sampling: ``"uniform"`` or ``"popularity"``.
        popularity: ``(n_items,)`` non-negative weights (e.g. training counts); required for
            ``"popularity"``. Items of weight 0 are never drawn.
        seed: seed of the draw; the same inputs and seed give the same negatives.
        max_rounds: rejection rounds before the remaining rows switch to Gumbel-top-k.
        max_block: bound on the entries of one Gumbel block (rows x items; memory).

    Returns:
        ``(P, n_negatives)`` int64 item positions, ``P = len(relevant.indices)``.

    Raises:
        ValueError: if some user has fewer than ``n_negatives`` items left to draw from.

    Example:
        >>> sorted(sample_negatives(csr_from_lists([[0]]), 4, 3)[0].tolist())  # all the rest
        [1, 2, 3]
    """
    rel = _csr(relevant)
    if sampling == "uniform":
        weights = np.ones(n_items, dtype=np.float64)
    elif sampling == "popularity":
        if popularity is None:
            raise ValueError("sampling='popularity' needs popularity weights")
        weights = np.asarray(popularity, dtype=np.float64).ravel()
        if weights.shape != (n_items,) or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(f"popularity must be ({n_items},) non-negative with a positive sum")
    else:
        raise ValueError(f"sampling must be 'uniform' or 'popularity', got {sampling!r}")

    forbidden = rel if exclude is None else union(rel, exclude)
    f_keys = _sorted_unique(_row_ids(forbidden) * n_items + _indices(forbidden))  # (user, item)
    # Feasibility: drawable items (weight > 0) minus the user's forbidden drawable ones.
    f_user, f_item = f_keys // n_items, f_keys % n_items
    blocked = np.bincount(f_user[weights[f_item] > 0], minlength=rel.shape[0])
    room = int((weights > 0).sum()) - blocked
    pair_user = _row_ids(rel)  # (P,)
    n_pairs = len(pair_user)
    if n_pairs and room[pair_user].min() < n_negatives:
        u = int(pair_user[np.argmin(room[pair_user])])
        raise ValueError(
            f"user row {u} has only {room[u]} items to draw {n_negatives} negatives from"
        )

    rng = np.random.default_rng(seed)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]

    def draw(n: int) -> np.ndarray:
        if sampling == "uniform":
            return rng.integers(0, n_items, n)
        # Inverse CDF; side="right" never lands on an item of weight 0.
        return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), n_items - 1)

    # Stage 1: rejection.
    neg = draw(n_pairs * n_negatives).reshape(n_pairs, n_negatives)
    todo = np.arange(n_pairs)  # pairs whose negatives still need checking
    for _ in range(max_rounds):
        sub = neg[todo]  # (T, N)
        keys = pair_user[todo][:, None] * n_items + sub
        pos = np.searchsorted(f_keys, keys)
        bad = (pos < len(f_keys)) & (f_keys[np.minimum(pos, len(f_keys) - 1)] == keys)
        # Repeats within a row: keep the first slot holding an item, redraw the later ones.
        order = np.argsort(sub, axis=1, kind="stable")
        sorted_sub = np.take_along_axis(sub, order, axis=1)
        repeat_sorted = np.zeros_like(bad)
        repeat_sorted[:, 1:] = sorted_sub[:, 1:] == sorted_sub[:, :-1]
        repeat = np.zeros_like(bad)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        bad |= repeat
        rows_bad = bad.any(axis=1)
        todo, bad = todo[rows_bad], bad[rows_bad]
        if not len(todo):
            return neg.astype(np.int64)
        r, c = np.nonzero(bad)
        neg[todo[r], c] = draw(len(r))

    # Stage 2: Gumbel-top-k for the rows rejection did not finish (they are redrawn whole).
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)  # -inf for weight 0: never drawn
    step = max(1, max_block // max(n_items, 1))
    for b in range(0, len(todo), step):
        rows = todo[b : b + step]
        g = log_w + rng.gumbel(size=(len(rows), n_items))  # (B, I)
        lo = np.searchsorted(f_keys, pair_user[rows] * n_items)
        hi = np.searchsorted(f_keys, (pair_user[rows] + 1) * n_items)
        lens = hi - lo
        idx = np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        g[np.repeat(np.arange(len(rows)), lens), f_item[idx]] = -np.inf
        neg[rows] = np.argpartition(-g, n_negatives - 1, axis=1)[:, :n_negatives]
    return neg.astype(np.int64)


def sampled_ranking(
    score_fn: ScoreFn,
    n_users: int,
    n_items: int,
    relevant: Sparse,
    exclude: Sparse | None = None,
    n_negatives: int = 99,
    sampling: Literal["uniform", "popularity"] = "uniform",
    popularity: np.ndarray | None = None,
    seed: int = 0,
    ks: Sequence[int] = (10,),
    chunk_size: int = 1024,
) -> RankingResult:
    """Rank each (user, relevant item) pair among ``n_negatives`` sampled items.

    Negatives come from :func:`sample_negatives` (fixed by ``seed``, independent of the model
    and of ``chunk_size``). Each chunk of users is scored once (all items, or only the items
    the chunk needs when that is less than half the catalog) and the scores are gathered.
    Ranks use :func:`~shoprec.evaluate.metrics.sampled_ranks` (pessimistic ties). A pair's
    ``hr@k`` is ``rank < k``, ``ndcg@k`` is ``1 / log2(rank + 2)`` when ``rank < k``, ``mrr``
    is ``1 / (rank + 1)``; a user's value is the mean over its pairs.

    Args:
        score_fn: ``(users (U,), items (C,) | None) -> (U, C)`` scores.
        n_users: number of evaluated users (rows of ``relevant``).
        n_items: catalog size.
        relevant: CSR of held-out relevant items; every entry is one positive.
        exclude: CSR of items never drawn as negatives for a user (e.g. training items).
        n_negatives: negatives per positive (99 in NCF and most papers).
        sampling: ``"uniform"`` or ``"popularity"`` (proportional to ``popularity``).
        popularity: ``(n_items,)`` weights for popularity sampling.
        seed: seed of the negatives.
        ks: cut-offs.
        chunk_size: users scored at a time.

    Returns:
        :class:`RankingResult` with ``hr@k``, ``ndcg@k`` for each k, ``mrr`` and ``users``.
    """
    rel = _csr(relevant)
    if rel.shape[0] != n_users:
        raise ValueError(f"relevant has {rel.shape[0]} rows, expected n_users={n_users}")
    ks = tuple(int(k) for k in ks)
    neg = sample_negatives(rel, n_items, n_negatives, exclude, sampling, popularity, seed)
    rel_items = _indices(rel)
    ranks = np.zeros(len(rel_items), dtype=np.int64)
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        p0, p1 = int(rel.indptr[start]), int(rel.indptr[stop])
        if p0 == p1:
            continue  # nobody in this chunk has a positive: nothing to score
        users = np.arange(start, stop, dtype=np.int64)
        pos_items, neg_items = rel_items[p0:p1], neg[p0:p1]  # (P,), (P, N)
        row = np.repeat(np.arange(stop - start), np.diff(rel.indptr[start : stop + 1]))
        needed = np.unique(np.concatenate([pos_items, neg_items.ravel()]))
        if 2 * len(needed) < n_items:
            s = _check_scores(score_fn(users, needed), stop - start, len(needed))
            pos_col = np.searchsorted(needed, pos_items)
            neg_col = np.searchsorted(needed, neg_items)
        else:
            s = _check_scores(score_fn(users, None), stop - start, n_items)
            pos_col, neg_col = pos_items, neg_items
        s = s.detach().to("cpu", torch.float64).numpy()
        ranks[p0:p1] = sampled_ranks(s[row, pos_col], s[row[:, None], neg_col])

    pair_user = _row_ids(rel)
    n_pairs = np.bincount(pair_user, minlength=n_users).astype(np.float64)
    r = ranks.astype(np.float64)
    per_pair = {f"hr@{k}": (r < k).astype(np.float64) for k in ks}
    for k in ks:
        per_pair[f"ndcg@{k}"] = np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)
    per_pair["mrr"] = 1.0 / (r + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_user = {
            name: np.bincount(pair_user, weights=v, minlength=n_users) / n_pairs
            for name, v in per_pair.items()
        }  # 0 / 0 = NaN for users without a positive
    label = f"sampled: {n_negatives} {sampling} negatives (seed {seed})"
    return RankingResult.from_per_user(per_user, protocol=label)


# --------------------------------------------------------------------------------------------
# Confidence intervals and slices
# --------------------------------------------------------------------------------------------


def bootstrap_ci(
    per_user: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    max_block: int = 2**24,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-user values (NaNs dropped).

    Users are resampled with replacement ``n_boot`` times; the interval is the
    ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the resampled means. Resamples are drawn
    as index matrices in blocks of at most ``max_block`` entries (no loop over users).

    Args:
        per_user: ``(U,)`` values, e.g. :attr:`RankingResult.per_user` ``["ndcg@10"]``.
        n_boot: number of resamples.
        alpha: ``1 - alpha`` is the coverage.
        seed: seed of the resampling.
        max_block: bound on the entries of one index block (memory).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no value is left.

    Example:
        >>> lo, hi = bootstrap_ci(np.r_[np.zeros(50), np.ones(50)], n_boot=200)
        >>> bool(lo < 0.5 < hi)
        True
    """
    x = np.asarray(per_user, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0 or n_boot < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    step = max(1, max_block // n)
    means = np.concatenate(
        [
            x[rng.integers(0, n, (min(step, n_boot - b), n))].mean(axis=1)
            for b in range(0, n_boot, step)
        ]
    )
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def evaluate_slices(
    result: RankingResult,
    slices: Mapping[str, np.ndarray],
    n_boot: int = 0,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, RankingResult]:
    """User-side slices of one evaluation: ``{"all": result, name: result.slice(mask), ...}``.

    Args:
        result: a :class:`RankingResult` over all evaluated users.
        slices: slice name -> ``(U,)`` bool mask over the evaluated users.
        n_boot: if positive, every slice gets bootstrap intervals (:meth:`with_ci`).
        alpha: interval coverage ``1 - alpha``.
        seed: bootstrap seed.

    Returns:
        Slice name -> result; ``"all"`` first.
    """
    out = {"all": result.slice(np.ones(result.n_users, dtype=bool))}
    for name, mask in slices.items():
        out[name] = result.slice(np.asarray(mask, dtype=bool))
    if n_boot > 0:
        out = {k: v.with_ci(n_boot, alpha, seed) for k, v in out.items()}
    return out


def item_slices(
    evaluate: Callable[[Sparse, Sparse | None], RankingResult],
    relevant: Sparse,
    exclude: Sparse | None,
    keep_items: Mapping[str, np.ndarray],
    exclude_dropped: bool = True,
) -> dict[str, RankingResult]:
    """Item-side slices: rerun a protocol with only some relevant items (cold, twin-free).

    For each slice the relevant lists are :func:`restrict`-ed to the kept items. The dropped
    relevant items are true positives of the user, so by default they are added to
    ``exclude`` and neither help nor hurt; set ``exclude_dropped=False`` to rank them as
    ordinary non-relevant items.

    Args:
        evaluate: ``(relevant, exclude) -> RankingResult``, e.g.
            ``lambda r, e: full_ranking(fn, n_users, n_items, r, e)``.
        relevant: CSR of relevant items per user.
        exclude: CSR of excluded items per user, or None.
        keep_items: slice name -> ``(n_items,)`` bool mask of the items it keeps.
        exclude_dropped: add the dropped relevant items to ``exclude``.

    Returns:
        Slice name -> result (users left with no relevant item are not counted).
    """
    rel = _csr(relevant)
    out = {}
    for name, keep in keep_items.items():
        keep = np.asarray(keep, dtype=bool)
        kept = restrict(rel, keep)
        exc = exclude
        if exclude_dropped:
            dropped = restrict(rel, ~keep)
            exc = dropped if exclude is None else union(exclude, dropped)
        out[name] = evaluate(kept, None if exc is None else _csr(exc))
    return out


# --------------------------------------------------------------------------------------------
# From event frames to item lists
# --------------------------------------------------------------------------------------------


def evaluated_users(
    events: pl.DataFrame, behavior: str, known: Collection[str] | pl.Series | None = None
) -> list[str]:
    """Sorted users with at least one ``behavior`` event, kept to ``known`` ones if given.

    Args:
        events: a frame with ``user`` and ``behavior`` columns (e.g. the test period).
        behavior: the behavior that makes a user count, e.g. ``"buy"``.
        known: users the model has seen (e.g. the training users); others are left out.

    Returns:
        The users, sorted, as strings.
    """
    users = events.filter(pl.col("behavior") == behavior).select(pl.col("user").cast(pl.String))
    if known is not None:
        known_frame = pl.DataFrame({"user": pl.Series(list(known)).cast(pl.String)})
        users = users.join(known_frame, on="user", how="semi")
    return sorted(users["user"].unique().to_list())


def item_lists(
    events: pl.DataFrame,
    users: Sequence[str],
    items: Sequence[str] | pl.Series,
    behavior: str | None = None,
) -> sp.csr_array:
    """Each user's distinct items with ``behavior`` (any behavior if None), as CSR rows.

    Rows follow ``users``; columns are positions in ``items`` (e.g. the columns of a score
    matrix). Items not in ``items`` are dropped; users with no such event get an empty row.
    With a relevant and an exclusion list, a full ranking is three calls::

        users = evaluated_users(test_events, "buy", known=train_users)
        relevant = item_lists(test_events, users, items, "buy")
        ranking_metrics(scores, relevant, item_lists(train_events, users, items, "buy"))

    Example:
        >>> ev = pl.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
        ...                    "behavior": ["buy", "view", "buy"]})
        >>> item_lists(ev, ["b", "a"], ["x", "y"], "buy").indices.tolist()
        [0, 0]
    """
    if behavior is not None:
        events = events.filter(pl.col("behavior") == behavior)
    pairs = (
        events.select(pl.col("user").cast(pl.String), pl.col("item").cast(pl.String))
        .unique()
        .join(pl.DataFrame({"user": list(users), "row": np.arange(len(users))}), on="user")
        .join(pl.DataFrame({"item": list(items), "col": np.arange(len(items))}), on="item")
    )
    return csr_from_pairs(pairs["row"].to_numpy(), pairs["col"].to_numpy(), len(users), len(items))


# --------------------------------------------------------------------------------------------
# Pointwise (binary tasks)
# --------------------------------------------------------------------------------------------


def pointwise(y: np.ndarray, p: np.ndarray, users: np.ndarray | None = None) -> dict[str, float]:
    """AUC, GAUC (if ``users`` given) and log loss of a binary task.

    Args:
        y: ``(N,)`` binary labels.
        p: ``(N,)`` predicted probabilities.
        users: ``(N,)`` user key per example, for GAUC (weighted by impressions).

    Returns:
        ``{"auc", "logloss", "n", "positives"}`` plus ``"gauc"``; AUC is NaN when ``y`` has
        one class only (instead of raising).

    Example:
        >>> pointwise(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.6]))["auc"]
        1.0
    """
    y = np.asarray(y).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    n_pos = int(np.sum(y))
    out: dict[str, float] = {
        "auc": auc(y, p) if 0 < n_pos < len(y) else float("nan"),
        "logloss": logloss(y, p) if len(y) else float("nan"),
        "n": len(y),
        "positives": n_pos,
    }
    if users is not None:
        out["gauc"] = gauc(y, p, np.asarray(users).ravel())
    return out
