"""Metrics against scikit-learn on random data, plus small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    ndcg_score,
    roc_auc_score,
)

from shoprec.evaluate.metrics import (
    accuracy,
    auc,
    csr_from_lists,
    csr_from_pairs,
    gauc,
    grouped_auc,
    hit_rate_at_k,
    logloss,
    macro_f1,
    mae,
    mrr,
    ndcg_at_k,
    rank_of_targets,
    ranking_metrics,
    recall_at_k,
    rmse,
    sampled_ranks,
)

# ---------------------------------------------------------------------------- pointwise


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 2000))
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n) + 0.3 * y, 1)  # rounding makes many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_hand_cases() -> None:
    assert auc([0, 1], [0.2, 0.8]) == 1.0
    assert auc([0, 1], [0.8, 0.2]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    assert auc(np.array([True, False, True]), np.array([3.0, -1.0, 0.0])) == 1.0  # logits
    with pytest.raises(ValueError, match="one class"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="binary"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, np.nan])


def test_gauc_matches_per_group_sklearn() -> None:
    rng = np.random.default_rng(0)
    n = 1500
    groups = rng.integers(0, 500, n)  # ~3 per group: some one-class
    y = (rng.random(n) < 0.3).astype(int)
    p = np.round(rng.random(n) + 0.2 * y, 2)
    aucs, sizes, positives = [], [], []
    for g in np.unique(groups):
        m = groups == g
        if y[m].min() == y[m].max():
            continue  # one class: skipped
        aucs.append(roc_auc_score(y[m], p[m]))
        sizes.append(m.sum())
        positives.append(y[m].sum())
    assert len(aucs) < len(np.unique(groups))  # the test does exercise skipping
    assert gauc(y, p, groups) == pytest.approx(np.average(aucs, weights=sizes), abs=1e-12)
    assert gauc(y, p, groups, weight="positives") == pytest.approx(
        np.average(aucs, weights=positives), abs=1e-12
    )
    # Group keys can be strings and in any order.
    assert gauc(y, p, groups.astype(str)) == pytest.approx(gauc(y, p, groups), abs=1e-12)


def test_gauc_hand_case_and_edge_cases() -> None:
    y = [1, 0, 0, 1, 0, 1]
    p = [0.9, 0.1, 0.5, 0.2, 0.3, 0.7]
    g = ["u1", "u1", "u1", "u2", "u2", "u3"]
    # u1: AUC 1 (3 samples, 1 positive); u2: AUC 0 (2 samples, 1 positive); u3 skipped.
    assert gauc(y, p, g) == pytest.approx(3 / 5)
    assert gauc(y, p, g, weight="positives") == pytest.approx(1 / 2)
    keys, a, n, npos = grouped_auc(y, p, g)
    assert keys.tolist() == ["u1", "u2", "u3"]
    assert a[:2].tolist() == [1.0, 0.0] and math.isnan(a[2])
    assert n.tolist() == [3, 2, 1] and npos.tolist() == [1, 1, 1]
    assert math.isnan(gauc([1, 1], [0.2, 0.3], [0, 1]))
    with pytest.raises(ValueError, match="weight"):
        gauc(y, p, g, weight="clicks")  # type: ignore[arg-type]


def test_logloss_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000)
    p = np.clip(rng.random(1000), 0.01, 0.99)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)
    assert math.isfinite(logloss([1, 0], [0.0, 1.0]))  # clipped, not inf
    assert logloss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_accuracy_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    proba = rng.random(500)
    assert accuracy(y, proba) == pytest.approx(accuracy_score(y, proba >= 0.5))
    labels = rng.integers(0, 2, 500)
    assert accuracy(y, labels) == pytest.approx(accuracy_score(y, labels))
    y3 = rng.integers(0, 4, 500)
    logits = rng.normal(size=(500, 4))
    assert accuracy(y3, logits) == pytest.approx(accuracy_score(y3, logits.argmax(1)))


def test_macro_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 400)
    pred = rng.integers(0, 5, 400)
    pred[pred == 3] = 4  # class 3 never predicted -> F1 0 for it
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    assert macro_f1(y, pred, n_classes=5) == pytest.approx(f1_score(y, pred, average="macro"))
    y2 = rng.integers(0, 2, 400)
    proba = rng.random(400)
    assert macro_f1(y2, proba) == pytest.approx(f1_score(y2, proba >= 0.5, average="macro"))
    scores = rng.normal(size=(400, 5))
    assert macro_f1(y, scores) == pytest.approx(f1_score(y, scores.argmax(1), average="macro"))


def test_regression_errors_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    y, pred = rng.normal(size=300), rng.normal(size=300)
    assert rmse(y, pred) == pytest.approx(math.sqrt(mean_squared_error(y, pred)))
    assert mae(y, pred) == pytest.approx(mean_absolute_error(y, pred))


# ---------------------------------------------------------------------------- single target


def _brute_ranks(scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Reference: a plain loop over users, pessimistic ties."""
    out = []
    for u, t in enumerate(targets):
        keep = ~exclude[u].copy()
        keep[t] = False
        out.append(int(np.sum(keep & (scores[u] >= scores[u, t]))))
    return np.array(out)


def test_rank_of_targets_hand_cases() -> None:
    scores = np.array(
        [
            [0.1, 0.9, 0.5, 0.3],  # target 2: item 1 above -> rank 1
            [0.1, 0.9, 0.5, 0.3],  # target 2, item 1 excluded -> rank 0
            [0.4, 0.4, 0.4, 0.1],  # target 0, tied with 1 and 2 -> pessimistic rank 2
            [0.4, 0.4, 0.4, 0.1],  # target 0, tied item 1 excluded -> rank 1
            [0.2, 0.2, 0.9, 0.8],  # target 3 is itself excluded: still ranked -> 1
        ]
    )
    targets = np.array([2, 2, 0, 0, 3])
    exclude = csr_from_lists([[], [1], [], [1], [3, 0]])
    assert rank_of_targets(scores, targets).tolist() == [1, 1, 2, 2, 1]
    assert rank_of_targets(scores, targets, exclude).tolist() == [1, 0, 2, 1, 1]


def test_excluded_item_above_target_does_not_hurt() -> None:
    scores = np.array([[5.0, 1.0, 0.0]])
    assert rank_of_targets(scores, np.array([1])).tolist() == [1]
    assert rank_of_targets(scores, np.array([1]), exclude=csr_from_lists([[0]])).tolist() == [0]


def test_rank_of_targets_random_vs_brute_force_all_input_kinds() -> None:
    rng = np.random.default_rng(5)
    u, i = 57, 40
    scores = np.round(rng.random((u, i)), 1).astype(np.float32)  # ties
    targets = rng.integers(0, i, u)
    mask = rng.random((u, i)) < 0.2
    rows, cols = np.nonzero(mask)
    csr = csr_from_pairs(rows, cols, u)
    want = _brute_ranks(scores, targets, mask)
    assert rank_of_targets(scores, targets, mask, chunk_size=8).tolist() == want.tolist()
    assert rank_of_targets(scores, targets, csr, chunk_size=8).tolist() == want.tolist()
    assert rank_of_targets(scores, targets, sp.csr_matrix(csr)).tolist() == want.tolist()
    got = rank_of_targets(torch.from_numpy(scores), targets, torch.from_numpy(mask))
    assert got.tolist() == want.tolist()


def test_rank_metrics_hand_cases() -> None:
    ranks = np.array([0, 1, 4, 20])
    assert hit_rate_at_k(ranks, 1) == 0.25
    assert hit_rate_at_k(ranks, 5) == 0.75
    assert ndcg_at_k(ranks, 5) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert ndcg_at_k(ranks, 1) == pytest.approx(0.25)
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 21) / 4)


def test_sampled_ranks_tie_rule() -> None:
    pos = np.array([0.5, 0.9, 0.1])
    neg = np.array([[0.7, 0.5, 0.1], [0.1, 0.2, 0.3], [0.2, 0.3, 0.4]])
    assert sampled_ranks(pos, neg).tolist() == [2, 0, 3]  # the tie at 0.5 counts above


# ---------------------------------------------------------------------------- multi-target


def _brute_multi(
    scores: np.ndarray,
    relevant: list[list[int]],
    exclude: list[list[int]],
    k: int,
    prec: list[float] | None = None,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Reference with distinct scores: sort each user's list explicitly (Precision@k into prec)."""
    hr, rec, ndcg, rr = [], [], [], []
    prec = [] if prec is None else prec
    for u, rel in enumerate(relevant):
        if not rel:
            continue
        keep = np.ones(scores.shape[1], dtype=bool)
        keep[exclude[u]] = False
        keep[rel] = True
        items = np.flatnonzero(keep)
        ranked = items[np.argsort(-scores[u, items], kind="stable")]
        pos = np.flatnonzero(np.isin(ranked, rel))
        top = pos[pos < k]
        hr.append(float(len(top) > 0))
        rec.append(len(top) / len(rel))
        prec.append(len(top) / k)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(rel), k)))
        ndcg.append(sum(1 / math.log2(p + 2) for p in top) / idcg)
        rr.append(1 / (pos[0] + 1))
    return hr, rec, ndcg, rr


def _random_lists(rng: np.random.Generator, u: int, i: int, lo: int, hi: int) -> list[list[int]]:
    return [sorted(rng.choice(i, int(rng.integers(lo, hi)), replace=False)) for _ in range(u)]


def test_ranking_metrics_random_vs_brute_force_and_sklearn() -> None:
    rng = np.random.default_rng(6)
    u, i = 90, 60
    scores = rng.random((u, i))  # continuous: no ties
    relevant = _random_lists(rng, u, i, 0, 6)  # some users have none
    exclude = _random_lists(rng, u, i, 0, 15)
    m = ranking_metrics(
        scores, csr_from_lists(relevant), csr_from_lists(exclude), ks=(5, 10), chunk_size=16
    )
    for k in (5, 10):
        prec: list[float] = []
        hr, rec, ndcg, rr = _brute_multi(scores, relevant, exclude, k, prec)
        assert m[f"hr@{k}"] == pytest.approx(np.mean(hr))
        assert m[f"recall@{k}"] == pytest.approx(np.mean(rec))
        assert m[f"ndcg@{k}"] == pytest.approx(np.mean(ndcg))
        assert m["mrr"] == pytest.approx(np.mean(rr))
        assert m[f"precision@{k}"] == pytest.approx(np.mean(prec))

        # scikit-learn's NDCG: excluded items pushed to the bottom (relevant ones kept).
        has = np.array([len(r) > 0 for r in relevant])
        y_true = np.zeros((u, i))
        sk_scores = scores.copy()
        for v in range(u):
            sk_scores[v, exclude[v]] = -1e9
            y_true[v, relevant[v]] = 1
            sk_scores[v, relevant[v]] = scores[v, relevant[v]]
        want = ndcg_score(y_true[has], sk_scores[has], k=k)
        assert m[f"ndcg@{k}"] == pytest.approx(want, abs=1e-12)
        assert recall_at_k(scores, csr_from_lists(relevant), k, csr_from_lists(exclude)) == (
            pytest.approx(np.mean(rec))
        )


def test_ranking_metrics_single_target_agrees_with_rank_functions() -> None:
    rng = np.random.default_rng(7)
    u, i = 200, 50
    scores = np.round(rng.normal(size=(u, i)), 1)  # ties included
    targets = rng.integers(0, i, u)
    mask = rng.random((u, i)) < 0.3
    ranks = rank_of_targets(scores, targets, mask)
    m = ranking_metrics(scores, csr_from_lists([[t] for t in targets]), mask, ks=(1, 5, 100))
    for k in (1, 5, 100):
        assert m[f"hr@{k}"] == pytest.approx(hit_rate_at_k(ranks, k))
        assert m[f"recall@{k}"] == pytest.approx(hit_rate_at_k(ranks, k))
        assert m[f"ndcg@{k}"] == pytest.approx(ndcg_at_k(ranks, k))
    assert m["mrr"] == pytest.approx(mrr(ranks))


def test_ranking_metrics_ties_and_exclusion_hand_case() -> None:
    scores = np.array(
        [
            [0.5, 0.5, 0.5, 0.1],  # relevant {0, 1}, tied with other item 2
            [0.9, 0.8, 0.7, 0.6],  # relevant {3}; items 0, 1 excluded (they score higher)
            [0.3, 0.2, 0.1, 0.0],  # no relevant items
        ]
    )
    relevant = csr_from_lists([[0, 1], [3], []])
    exclude = csr_from_lists([[], [0, 1], [0]])
    per = ranking_metrics(scores, relevant, exclude, ks=(2,), per_user=True)
    # User 0, pessimistic: item 2 first, then the two relevant at positions 1 and 2.
    d = 1 / math.log2(3)
    assert per["hr@2"][0] == 1.0
    assert per["recall@2"][0] == 0.5
    assert per["ndcg@2"][0] == pytest.approx(d / (1 + d))
    assert per["mrr"][0] == 0.5
    # User 1: only item 2 (0.7) is above item 3 after exclusion.
    assert per["recall@2"][1] == 1.0 and per["mrr"][1] == 0.5
    assert per["ndcg@2"][1] == pytest.approx(d)
    assert per["precision@2"][0] == 0.5  # one of the two top places holds a relevant item
    assert per["precision@2"][1] == 0.5
    assert all(math.isnan(v[2]) for v in per.values())
    means = ranking_metrics(scores, relevant, exclude, ks=(2,))
    assert means["recall@2"] == pytest.approx(0.75)  # user 2 left out of the mean
    assert means["precision@2"] == pytest.approx(0.5)


def test_ranking_metrics_k_beyond_items_and_chunking() -> None:
    rng = np.random.default_rng(8)
    scores = rng.random((33, 7)).astype(np.float32)
    relevant = csr_from_lists(_random_lists(rng, 33, 7, 1, 4))
    a = ranking_metrics(scores, relevant, ks=(3, 50), chunk_size=5)
    b = ranking_metrics(torch.from_numpy(scores), relevant, ks=(3, 50), chunk_size=1000)
    assert a == pytest.approx(b)
    assert a["hr@50"] == 1.0 and a["recall@50"] == 1.0 and a["ndcg@50"] <= 1.0
    # Precision divides by k even when k exceeds the catalog (as RecBole).
    n_rel = np.diff(relevant.indptr)
    assert a["precision@50"] == pytest.approx(np.mean(n_rel / 50))


def test_precision_keys_and_existing_metrics_unchanged() -> None:
    """precision@k is added next to the other keys; the other values do not move."""
    rng = np.random.default_rng(10)
    scores = np.round(rng.random((40, 30)), 1)  # ties
    relevant = csr_from_lists(_random_lists(rng, 40, 30, 0, 5))
    exclude = csr_from_lists(_random_lists(rng, 40, 30, 0, 8))
    per = ranking_metrics(scores, relevant, exclude, ks=(3, 10), per_user=True)
    assert list(per) == [
        *(f"{m}@{k}" for m in ("hr", "recall", "ndcg", "precision") for k in (3, 10)),
        "mrr",
    ]
    for k in (3, 10):
        n_rel = np.diff(relevant.indptr).astype(float)
        has = n_rel > 0
        # hits in the top k = Recall * n_relevant = Precision * k
        np.testing.assert_allclose(
            per[f"precision@{k}"][has] * k, per[f"recall@{k}"][has] * n_rel[has], atol=1e-12
        )
        assert np.isnan(per[f"precision@{k}"][~has]).all()
    # Single target: Precision@k = HR@k / k.
    targets = rng.integers(0, 30, 40)
    m = ranking_metrics(scores, csr_from_lists([[t] for t in targets]), ks=(5,))
    assert m["precision@5"] == pytest.approx(m["hr@5"] / 5)


def test_ranking_metrics_medium_scale_is_fast() -> None:
    rng = np.random.default_rng(9)
    u, i = 2000, 5000
    scores = torch.from_numpy(rng.random((u, i)).astype(np.float32))
    relevant = csr_from_pairs(np.arange(u).repeat(3), rng.integers(0, i, 3 * u), u)
    exclude = csr_from_pairs(np.arange(u).repeat(20), rng.integers(0, i, 20 * u), u)
    m = ranking_metrics(scores, relevant, exclude, ks=(10, 20))
    assert 0.0 <= m["ndcg@10"] <= m["ndcg@20"] <= 1.0  # random scores: small but valid
    assert m["recall@10"] <= m["recall@20"]
