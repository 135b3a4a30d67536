"""Evaluation protocols over score functions: hand-computed cases and agreement checks."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from shoprec.evaluate.metrics import (
    Sparse,
    auc,
    csr_from_lists,
    gauc,
    logloss,
    ranking_metrics,
    sampled_ranks,
)
from shoprec.evaluate.protocols import (
    RankingResult,
    bootstrap_ci,
    evaluate_slices,
    full_ranking,
    item_slices,
    pointwise,
    restrict,
    sample_negatives,
    sampled_ranking,
    union,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fn(scores: np.ndarray, calls: list[tuple[int, int]] | None = None):
    """A score function over a fixed matrix, recording (n_users, n_items) of each call."""

    def score(users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        out = scores[users] if items is None else scores[users][:, items]
        if calls is not None:
            calls.append(out.shape)
        return out

    return score


def _random_csr(rng: np.random.Generator, u: int, i: int, lo: int, hi: int) -> Sparse:
    return csr_from_lists(
        [np.sort(rng.choice(i, int(rng.integers(lo, hi)), replace=False)) for _ in range(u)]
    )


# ---------------------------------------------------------------------------- full ranking


def test_full_ranking_hand_case() -> None:
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],  # relevant {1, 3}, item 0 excluded -> positions 0 and 2
            [0.1, 0.2, 0.3, 0.4, 0.5],  # relevant {0}: last of 5 -> position 4
            [0.5, 0.5, 0.5, 0.5, 0.5],  # relevant {2}, all tied: pessimistic -> position 4
            [0.3, 0.2, 0.1, 0.0, 0.4],  # nothing relevant: left out of the means
        ]
    )
    relevant = csr_from_lists([[1, 3], [0], [2], []])
    exclude = csr_from_lists([[0], [], [], []])
    r = full_ranking(_fn(scores), 4, 5, relevant, exclude, ks=(1, 3))
    d2 = 1 / math.log2(4)  # discount of position 2
    ideal2 = 1 + 1 / math.log2(3)
    assert r.metrics["users"] == 3
    assert r.metrics["hr@1"] == pytest.approx(1 / 3)
    assert r.metrics["hr@3"] == pytest.approx(1 / 3)
    assert r.metrics["recall@3"] == pytest.approx((2 / 2) / 3)
    assert r.metrics["precision@1"] == pytest.approx((1 / 1) / 3)
    assert r.metrics["precision@3"] == pytest.approx((2 / 3) / 3)
    assert r.metrics["ndcg@1"] == pytest.approx(1 / 3)
    assert r.metrics["ndcg@3"] == pytest.approx(((1 + d2) / ideal2) / 3)
    assert r.metrics["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 5) / 3)
    assert r.per_user["mrr"][:3].tolist() == pytest.approx([1, 0.2, 0.2])
    assert math.isnan(r.per_user["mrr"][3])
    assert r.protocol == "full"


@pytest.mark.parametrize("dense_exclude", [False, True])
def test_full_ranking_equals_ranking_metrics(dense_exclude: bool) -> None:
    rng = np.random.default_rng(0)
    u, i = 73, 41
    scores = np.round(rng.normal(size=(u, i)), 1)  # ties
    relevant = _random_csr(rng, u, i, 0, 5)
    exclude = _random_csr(rng, u, i, 0, 10)
    exc = exclude
    if dense_exclude:
        exc = np.zeros((u, i), dtype=bool)
        exc[np.repeat(np.arange(u), np.diff(exclude.indptr)), exclude.indices] = True
    r = full_ranking(_fn(scores), u, i, relevant, exc, ks=(5, 10))
    want = ranking_metrics(scores, relevant, exclude, ks=(5, 10))
    assert {k.lower(): v for k, v in want.items()} == pytest.approx(
        {k: v for k, v in r.metrics.items() if k != "users"}
    )
    per = ranking_metrics(scores, relevant, exclude, ks=(5, 10), per_user=True)
    for k, v in per.items():
        np.testing.assert_array_equal(r.per_user[k.lower()], v)


def test_full_ranking_chunking_does_not_change_results() -> None:
    rng = np.random.default_rng(1)
    u, i = 50, 30
    scores = torch.from_numpy(rng.random((u, i)).astype(np.float32))  # a torch score function
    relevant = _random_csr(rng, u, i, 1, 4)
    exclude = _random_csr(rng, u, i, 0, 6)
    results = []
    for chunk in (1, 7, 50, 1000):
        calls: list[tuple[int, int]] = []
        results.append(full_ranking(_fn(scores, calls), u, i, relevant, exclude, chunk_size=chunk))
        assert len(calls) == math.ceil(u / chunk)  # one call per chunk, never all at once
        assert max(c[0] for c in calls) == min(chunk, u)
        assert all(c[1] == i for c in calls)
    for r in results[1:]:
        for k, v in r.per_user.items():
            np.testing.assert_array_equal(v, results[0].per_user[k])


def test_full_ranking_checks_shapes() -> None:
    scores = np.zeros((3, 4))
    with pytest.raises(ValueError, match="rows"):
        full_ranking(_fn(scores), 2, 4, csr_from_lists([[0], [1], [2]]))
    with pytest.raises(ValueError, match="shape"):
        full_ranking(_fn(scores), 3, 5, csr_from_lists([[0], [1], [2]]))
    empty = full_ranking(_fn(scores), 0, 4, csr_from_lists([]), ks=(2,))
    assert empty.metrics["users"] == 0 and math.isnan(empty.metrics["hr@2"])


# ---------------------------------------------------------------------------- sampled ranking


def test_sampled_ranking_hand_case() -> None:
    # 6 items; user 0: relevant {0, 2}, item 1 excluded -> negatives are exactly {3, 4, 5}.
    scores = np.array([[0.5, 9.0, 0.2, 0.4, 0.6, 0.5], [0.0, 0.3, 0.2, 0.9, 0.1, 0.0]])
    relevant = csr_from_lists([[0, 2], [3]])
    exclude = csr_from_lists([[1], [0, 5]])  # user 1: negatives {1, 2, 4}
    r = sampled_ranking(_fn(scores), 2, 6, relevant, exclude, n_negatives=3, ks=(1, 2))
    # user 0: item 0 (0.5) vs {0.4, 0.6, 0.5}: 0.6 and the tie above -> rank 2;
    #         item 2 (0.2) vs all three above -> rank 3.   user 1: item 3 first -> rank 0.
    assert r.per_user["mrr"].tolist() == pytest.approx([(1 / 3 + 1 / 4) / 2, 1.0])
    assert r.per_user["hr@2"].tolist() == [0.0, 1.0]
    assert r.per_user["ndcg@1"].tolist() == [0.0, 1.0]
    assert r.metrics["hr@1"] == 0.5 and r.metrics["users"] == 2
    assert r.metrics["mrr"] == pytest.approx(((1 / 3 + 1 / 4) / 2 + 1) / 2)
    assert "3 uniform negatives" in r.protocol


def _setup(seed: int = 2, u: int = 60, i: int = 400) -> tuple[Sparse, Sparse, np.ndarray]:
    rng = np.random.default_rng(seed)
    relevant = _random_csr(rng, u, i, 0, 4)
    exclude = _random_csr(rng, u, i, 0, 30)
    popularity = rng.pareto(1.2, i) * (rng.random(i) < 0.8)  # heavy tail, some zeros
    return relevant, exclude, popularity


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_sampled_perfect_and_constant_scorers(sampling: str) -> None:
    relevant, exclude, popularity = _setup()
    u, i = relevant.shape[0], 400
    is_rel = np.zeros((u, i))
    is_rel[np.repeat(np.arange(u), np.diff(relevant.indptr)), relevant.indices] = 1.0
    kw = dict(n_negatives=99, sampling=sampling, popularity=popularity, ks=(1, 10))
    perfect = sampled_ranking(
        _fn(is_rel + 0.1 * np.random.default_rng(0).random((u, i))), u, i, relevant, exclude, **kw
    )
    assert perfect.metrics["hr@1"] == 1.0 and perfect.metrics["mrr"] == 1.0
    assert perfect.metrics["ndcg@10"] == 1.0
    assert perfect.metrics["users"] == int((np.diff(relevant.indptr) > 0).sum())
    constant = sampled_ranking(_fn(np.ones((u, i))), u, i, relevant, exclude, **kw)
    assert constant.metrics["hr@10"] == 0.0  # every tie counts against the positive
    assert constant.metrics["mrr"] == pytest.approx(1 / 100)


def test_sampled_ranking_matches_manual_ranks_and_item_subsets() -> None:
    relevant, exclude, _ = _setup(3, u=40, i=2000)  # small draws: items subset is scored
    rng = np.random.default_rng(4)
    scores = np.round(rng.random((40, 2000)), 2)
    calls: list[tuple[int, int]] = []
    r = sampled_ranking(
        _fn(scores, calls),
        40,
        2000,
        relevant,
        exclude,
        n_negatives=20,
        seed=5,
        ks=(5,),
        chunk_size=16,
    )
    assert all(c[1] < 2000 for c in calls) and all(c[0] <= 16 for c in calls)
    neg = sample_negatives(relevant, 2000, 20, exclude, seed=5)
    users = np.repeat(np.arange(40), np.diff(relevant.indptr))
    ranks = sampled_ranks(scores[users, relevant.indices], scores[users[:, None], neg])
    with np.errstate(invalid="ignore"):  # users without a positive: 0 / 0
        per_user_mrr = np.bincount(users, 1 / (ranks + 1), 40) / np.bincount(users, minlength=40)
    np.testing.assert_allclose(r.per_user["mrr"], per_user_mrr)
    # One big chunk needs more than half the catalog: every item is scored, same ranks.
    calls_all: list[tuple[int, int]] = []
    r_all = sampled_ranking(
        _fn(scores, calls_all), 40, 2000, relevant, exclude, n_negatives=20, seed=5, ks=(5,)
    )
    assert calls_all == [(40, 2000)]
    np.testing.assert_allclose(r_all.per_user["mrr"], r.per_user["mrr"])


@pytest.mark.parametrize("max_rounds", [16, 0])  # 0: all rows drawn by Gumbel-top-k
@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_negatives_avoid_relevant_and_excluded_and_are_distinct(
    sampling: str, max_rounds: int
) -> None:
    relevant, exclude, popularity = _setup()
    neg = sample_negatives(
        relevant,
        400,
        99,
        exclude,
        sampling,
        popularity,
        seed=1,
        max_rounds=max_rounds,
        max_block=5000,
    )
    assert neg.shape == (len(relevant.indices), 99)
    users = np.repeat(np.arange(relevant.shape[0]), np.diff(relevant.indptr))
    forbidden = union(relevant, exclude)
    keys = set(np.repeat(np.arange(60), np.diff(forbidden.indptr)) * 400 + forbidden.indices)
    drawn = (users[:, None] * 400 + neg).ravel()
    assert not np.isin(drawn, list(keys)).any()
    assert (np.diff(np.sort(neg, axis=1), axis=1) > 0).all()  # distinct within each pair
    if sampling == "popularity":
        assert (popularity[neg] > 0).all()  # weight 0 is never drawn


def test_popularity_sampling_prefers_popular_items_and_seed_is_fixed() -> None:
    n_items = 200
    popularity = np.arange(1, n_items + 1, dtype=float) ** 2
    relevant = csr_from_lists([[0]] * 500)
    neg = sample_negatives(relevant, n_items, 10, None, "popularity", popularity, seed=0)
    counts = np.bincount(neg.ravel(), minlength=n_items)
    assert counts[-50:].sum() > 5 * counts[:50].sum()
    assert np.corrcoef(counts, popularity)[0, 1] > 0.9
    # The exact Gumbel-top-k stage draws from the same distribution.
    gumbel = sample_negatives(relevant, n_items, 10, None, "popularity", popularity, 0, 0)
    g_counts = np.bincount(gumbel.ravel(), minlength=n_items)
    assert np.corrcoef(g_counts, popularity)[0, 1] > 0.9
    assert abs(g_counts[-50:].sum() - counts[-50:].sum()) < 0.05 * counts.sum()
    uni = sample_negatives(relevant, n_items, 10, None, "uniform", seed=0)
    uni_counts = np.bincount(uni.ravel(), minlength=n_items)
    assert uni_counts[-50:].sum() < 1.5 * uni_counts[:50].sum()
    # A fixed seed gives the same negatives (and results); another seed does not.
    again = sample_negatives(relevant, n_items, 10, None, "popularity", popularity, seed=0)
    np.testing.assert_array_equal(neg, again)
    other = sample_negatives(relevant, n_items, 10, None, "popularity", popularity, seed=1)
    assert not np.array_equal(neg, other)
    scores = np.random.default_rng(0).random((500, n_items))
    kw = dict(n_negatives=10, sampling="popularity", popularity=popularity, seed=3)
    a = sampled_ranking(_fn(scores), 500, n_items, relevant, **kw)
    b = sampled_ranking(_fn(scores), 500, n_items, relevant, chunk_size=7, **kw)
    assert a.metrics == b.metrics


def test_sampling_errors() -> None:
    relevant = csr_from_lists([[0, 1], [2]])
    with pytest.raises(ValueError, match="only 3 items"):
        sample_negatives(relevant, 5, 4)  # user 0 has 3 items left
    with pytest.raises(ValueError, match="only 2 items"):  # item 4 has weight 0
        sample_negatives(relevant, 5, 3, sampling="popularity", popularity=np.r_[1, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="popularity"):
        sample_negatives(relevant, 5, 2, sampling="popularity")
    with pytest.raises(ValueError, match="sampling"):
        sample_negatives(relevant, 5, 2, sampling="random")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- CIs and slices


def test_bootstrap_ci_contains_mean_and_narrows() -> None:
    rng = np.random.default_rng(6)
    small = rng.random(100)
    large = rng.random(10_000)
    lo, hi = bootstrap_ci(small, n_boot=500)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(large, n_boot=500)
    assert lo2 < large.mean() < hi2
    assert (hi2 - lo2) < (hi - lo) / 5  # ~ 1 / sqrt(100) of the width
    # NaNs are dropped; the seed fixes the interval; small blocks give the same numbers.
    with_nan = np.r_[small, [np.nan] * 30]
    assert bootstrap_ci(with_nan, n_boot=500) == bootstrap_ci(small, n_boot=500)
    assert bootstrap_ci(small, n_boot=500, max_block=1000) == (lo, hi)
    assert bootstrap_ci(small, n_boot=500, seed=1) != (lo, hi)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([np.nan])))
    # A wider coverage gives a wider interval.
    lo90, hi90 = bootstrap_ci(small, n_boot=500, alpha=0.1)
    assert lo <= lo90 and hi90 <= hi


def test_slice_equals_recomputation_on_the_subset() -> None:
    rng = np.random.default_rng(7)
    u, i = 80, 50
    scores = rng.random((u, i))
    relevant = _random_csr(rng, u, i, 0, 4)
    exclude = _random_csr(rng, u, i, 0, 8)
    full = full_ranking(_fn(scores), u, i, relevant, exclude)
    mask = rng.random(u) < 0.4
    idx = np.flatnonzero(mask)
    sub_rel = csr_from_lists(
        [relevant.indices[relevant.indptr[j] : relevant.indptr[j + 1]] for j in idx]
    )
    sub_exc = csr_from_lists(
        [exclude.indices[exclude.indptr[j] : exclude.indptr[j + 1]] for j in idx]
    )
    direct = full_ranking(_fn(scores[idx]), len(idx), i, sub_rel, sub_exc)
    sliced = full.slice(mask)
    assert sliced.metrics == pytest.approx(direct.metrics)
    assert full.slice(idx).metrics == pytest.approx(direct.metrics)  # index arrays work too
    with pytest.raises(ValueError, match="shape"):
        full.slice(mask[:-1])

    slices = evaluate_slices(full, {"some": mask, "rest": ~mask}, n_boot=200)
    assert list(slices) == ["all", "some", "rest"]
    assert slices["all"].metrics == pytest.approx(full.metrics)
    assert slices["some"].metrics == pytest.approx(direct.metrics)
    assert (
        slices["some"].metrics["users"] + slices["rest"].metrics["users"] == (full.metrics["users"])
    )
    lo, hi = slices["some"].ci["ndcg@10"]
    assert lo <= slices["some"].metrics["ndcg@10"] <= hi


def test_with_ci_and_to_dict_are_json() -> None:
    r = RankingResult.from_per_user(
        {"hr@10": np.r_[1.0, 0.0, np.nan], "mrr": np.r_[1, 0.2, np.nan]}
    )
    assert r.metrics == {"hr@10": 0.5, "mrr": 0.6, "users": 2}
    ci = r.with_ci(n_boot=100)
    assert not r.ci and set(ci.ci) == {"hr@10", "mrr"}
    text = json.dumps(ci.to_dict(), allow_nan=False)
    assert json.loads(text)["metrics"]["users"] == 2
    empty = RankingResult.from_per_user({"mrr": np.array([np.nan])})
    assert json.loads(json.dumps(empty.to_dict(), allow_nan=False))["metrics"]["mrr"] is None


def test_restrict_and_union() -> None:
    rel = csr_from_lists([[0, 2, 3], [1], [], [3, 1]])
    keep = np.array([True, False, True, False])
    r = restrict(rel, keep)
    assert r.indptr.tolist() == [0, 2, 2, 2, 2] and r.indices.tolist() == [0, 2]
    dropped = restrict(rel, ~keep)
    assert dropped.indptr.tolist() == [0, 1, 2, 2, 4]
    u = union(csr_from_lists([[3, 1], [], [2]]), csr_from_lists([[1, 0], [4], []]))
    assert u.indptr.tolist() == [0, 3, 4, 5] and u.indices.tolist() == [0, 1, 3, 4, 2]
    with pytest.raises(ValueError, match="rows"):
        union(csr_from_lists([[0]]), csr_from_lists([[0], [1]]))


def test_item_slices_rerun_with_restricted_relevant_items() -> None:
    rng = np.random.default_rng(8)
    u, i = 60, 40
    scores = rng.random((u, i))
    relevant = _random_csr(rng, u, i, 1, 5)
    exclude = _random_csr(rng, u, i, 0, 5)
    cold = rng.random(i) < 0.3

    def run(rel: Sparse, exc: Sparse | None) -> object:
        return full_ranking(_fn(scores), u, i, rel, exc, ks=(5,))

    out = item_slices(run, relevant, exclude, {"cold items": cold, "warm items": ~cold})
    cold_rel = restrict(relevant, cold)
    want = full_ranking(
        _fn(scores), u, i, cold_rel, union(exclude, restrict(relevant, ~cold)), ks=(5,)
    )
    assert out["cold items"].metrics == pytest.approx(want.metrics)
    # Users without a cold relevant item are left out of that slice's means.
    assert out["cold items"].metrics["users"] == int((np.diff(cold_rel.indptr) > 0).sum())
    # Without excluding the dropped items, warm positives rank as misses: never better.
    plain = item_slices(run, relevant, exclude, {"cold items": cold}, exclude_dropped=False)
    assert plain["cold items"].metrics["mrr"] <= out["cold items"].metrics["mrr"]
    assert plain["cold items"].metrics == pytest.approx(
        full_ranking(_fn(scores), u, i, cold_rel, exclude, ks=(5,)).metrics
    )


def test_pointwise_wraps_the_metric_functions() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + 0.7 * rng.random(300), 0.01, 0.99)
    users = rng.integers(0, 30, 300)
    m = pointwise(y, p, users)
    assert m["auc"] == auc(y, p) and m["gauc"] == gauc(y, p, users)
    assert m["logloss"] == logloss(y, p) and m["n"] == 300 and m["positives"] == y.sum()
    one_class = pointwise(np.ones(4), np.full(4, 0.5))
    assert math.isnan(one_class["auc"]) and "gauc" not in one_class


class _TwoDomainScorer:
    """Scores a fixed matrix for the target domain ``t`` (what evaluate_scorer needs)."""

    target, domain = "buy", "t"

    def __init__(self, items: list[str], users: list[str], scores: np.ndarray) -> None:
        self.items, self.n_items = items, len(items)
        self._row = {u: r for r, u in enumerate(users)}
        self._scores = scores

    def rank_scores(self, users: list[str], positions: np.ndarray | None = None) -> np.ndarray:
        s = self._scores[[self._row[u] for u in users]]
        return s if positions is None else s[:, positions]


def test_twin_free_slices_leave_out_users_and_items_known_in_the_source_domain() -> None:
    import polars as pl

    from shoprec.config import EvaluateSection
    from shoprec.data.schema import Interactions
    from shoprec.data.split import Split
    from shoprec.experiment import evaluate_scorer, twins

    rng = np.random.default_rng(0)
    users = [f"u{j}" for j in range(40)]
    items = [f"i{j}" for j in range(30)]

    def frame(rows: list[tuple[str, str, str]]) -> Interactions:
        u, i, d = zip(*rows, strict=True)
        return Interactions.from_frame(
            pl.DataFrame({"user": u, "item": i, "behavior": ["buy"] * len(u), "domain": d})
        )

    train = [(u, items[int(rng.integers(30))], "t") for u in users]
    # a source domain: users 0-14 and items 0-9 have twins there
    train += [(users[j], items[j % 10], "s") for j in range(15)]
    test = [(u, items[int(rng.integers(30))], "t") for u in users for _ in range(2)]
    split = Split(frame(train), None, frame(test), kind="given")
    scorer = _TwoDomainScorer(items, users, rng.random((40, 30)))
    user_twin, item_twin = twins(scorer, split, "test", users)  # type: ignore[misc, arg-type]
    assert user_twin.tolist() == [j < 15 for j in range(40)]
    assert item_twin.tolist() == [j < 10 for j in range(30)]
    ev = evaluate_scorer(scorer, split, EvaluateSection(bootstrap=0, baselines=False))  # type: ignore[arg-type]
    s = ev.slices
    assert {"twin-free users", "twin users", "twin-free items", "twin-free"} <= set(s)
    assert (
        s["twin-free users"]["metrics"]["users"] + s["twin users"]["metrics"]["users"]
        == (ev.metrics["users"])
    )
    # twin-free items: the users with a relevant item outside 0-9, ranked among the rest
    test_df = pl.DataFrame(test, schema=["user", "item", "domain"], orient="row")
    free = test_df.filter(~pl.col("item").is_in(items[:10]))
    assert s["twin-free items"]["metrics"]["users"] == free["user"].n_unique()
    both = free.filter(~pl.col("user").is_in(users[:15]))
    assert s["twin-free"]["metrics"]["users"] == both["user"].n_unique()
    # no source domain, no twin slices
    plain = Split(frame([r for r in train if r[2] == "t"]), None, frame(test), kind="given")
    assert twins(scorer, plain, "test", users) is None  # type: ignore[arg-type]
