"""Exposure, coverage and popularity-bias measures, and the group-floor re-ranking knob."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from shoprec.evaluate import fairness
from shoprec.evaluate.metrics import csr_from_lists, top_k_items
from shoprec.evaluate.protocols import full_ranking, top_k_lists
from shoprec.recommend import rerank


def _lists(rng: np.random.Generator, u: int, i: int, k: int) -> np.ndarray:
    return np.argsort(rng.random((u, i)), axis=1)[:, :k]


def test_exposure_and_coverage_count_every_slot() -> None:
    lists = np.array([[0, 1, -1], [0, 2, 3]])
    assert fairness.item_exposure(lists, 5).tolist() == [2, 1, 1, 1, 0]
    assert fairness.item_exposure(lists, 5, k=1).tolist() == [2, 0, 0, 0, 0]
    pos = fairness.item_exposure(lists, 5, weighting="position")
    assert pos[0] == pytest.approx(2.0) and pos[3] == pytest.approx(0.5)  # 1/log2(4)
    assert fairness.catalog_coverage(lists, 5) == 0.8
    assert fairness.catalog_coverage(lists, 5, k=1) == 0.2
    with pytest.raises(ValueError, match="out of range"):
        fairness.item_exposure(np.array([[5]]), 5)


def test_gini_equals_mean_absolute_difference_form() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.pareto(1.2, 37) * (rng.random(37) < 0.6)
        brute = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
        assert fairness.gini(x) == pytest.approx(brute, rel=1e-12)
    assert fairness.gini(np.ones(10)) == 0.0
    assert fairness.gini(np.r_[np.zeros(9), 1.0]) == pytest.approx(0.9)
    assert np.isnan(fairness.gini(np.zeros(4)))


def test_popularity_deciles_and_group_shares() -> None:
    rng = np.random.default_rng(1)
    pop = rng.integers(0, 5, 103).astype(float)  # many ties
    d = fairness.popularity_deciles(pop)
    counts = np.bincount(d, minlength=10)
    assert counts.sum() == 103 and counts.max() - counts.min() <= 1  # equal tenths
    order = np.argsort(pop, kind="stable")
    assert (np.diff(d[order]) >= 0).all()  # more popular never in a lower decile
    shares = fairness.share_by_group(pop, d, 10)
    assert shares.sum() == pytest.approx(1.0)
    groups = np.array([0, 1, -1, 1])
    assert fairness.share_by_group(np.array([1.0, 2, 3, 4]), groups, 2).tolist() == [0.1, 0.6]


def test_summary_of_a_popularity_list_puts_all_exposure_on_the_head() -> None:
    rng = np.random.default_rng(2)
    n_items, u, k = 200, 50, 10
    pop = rng.pareto(1.0, n_items)
    groups = rng.integers(-1, 6, n_items)
    head = np.tile(np.argsort(-pop)[:k], (u, 1))
    s = fairness.exposure_summary(
        head, pop, (5, 10), groups, [f"g{j}" for j in range(6)], "category", max_groups=4
    )
    m = s["metrics"]
    assert m["coverage@10"] == pytest.approx(k / n_items) and m["coverage@5"] == 5 / n_items
    assert m["gini@10"] == pytest.approx(1 - k / n_items)  # k items shown equally, rest 0
    dec = s["by_popularity_decile"]
    assert s["k"] == 5 and dec["exposure"][9] == pytest.approx(1.0)
    assert sum(dec["events"]) == pytest.approx(1.0)
    g = s["by_group"]
    assert g["column"] == "category" and len(g["groups"]) == 5  # 4 named + other
    assert sum(v["items"] for v in g["groups"].values()) == pytest.approx((groups >= 0).mean())
    random_lists = _lists(rng, u, n_items, k)
    r = fairness.exposure_summary(random_lists, pop, (10,))["metrics"]
    assert r["coverage@10"] > m["coverage@10"] and r["gini@10"] < m["gini@10"]


def test_top_k_items_leaves_out_excluded_items_and_matches_full_ranking() -> None:
    rng = np.random.default_rng(3)
    u, i, k = 40, 30, 6
    scores = rng.random((u, i))
    excl = [rng.choice(i, rng.integers(0, 5), replace=False) for _ in range(u)]
    excl[0] = np.arange(i - 3)  # only three items left: the list is padded
    exclude = csr_from_lists(excl, i)
    got = top_k_items(scores, k, exclude, chunk_size=7)
    for r in range(u):
        s = scores[r].copy()
        s[excl[r]] = -np.inf
        want = np.argsort(-s)[: min(k, i - len(excl[r]))]
        assert got[r][: len(want)].tolist() == want.tolist()
        assert (got[r][len(want) :] == -1).all()
    relevant = csr_from_lists([[j % i] for j in range(u)], i)

    def fn(users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return scores[users]

    result = full_ranking(fn, u, i, relevant, exclude, ks=(k,), chunk_size=9, top_k=k)
    assert np.array_equal(result.top_items, got)
    assert np.array_equal(top_k_lists(fn, u, i, k, exclude, chunk_size=11), got)


def test_group_floor_reaches_each_floor_and_keeps_the_rest_in_order() -> None:
    rng = np.random.default_rng(4)
    for trial in range(30):
        n, k = 60, 10
        total = rng.normal(size=n)
        groups = rng.integers(-1, 4, n)
        groups[np.argsort(-total)[:k]] = 0  # the top of the list is all one group
        floor = [0.1, 0.2, 0.3][trial % 3]
        order = np.argsort(-total)[:k].tolist()
        out = rerank.group_floor(order, total, groups, k, floor)
        need = int(np.ceil(floor * k))
        assert len(out) == k and len(set(out)) == k
        n_groups = len(set(groups[groups >= 0].tolist()))
        if need * n_groups <= k:  # feasible: every group with candidates gets its floor
            for g in set(groups[groups >= 0].tolist()):
                have = int((groups[out] == g).sum())
                assert have >= min(need, int((groups == g).sum())), (trial, g, out)
        kept = [i for i in out if i in order]
        assert kept == [i for i in order if i in kept]  # untouched items keep their order
        added = [i for i in out if i not in order]
        assert out[len(kept) :] == added  # added ones take the last places, best first
        assert all(total[a] >= total[b] for a, b in itertools.pairwise(added))
    order = [3, 1, 2]
    assert rerank.group_floor(order, np.zeros(5), np.zeros(5, int), 3, 0.0) is order


class _Catalog:
    def __init__(self, table: pl.DataFrame) -> None:
        self.table, self.n_items = table, table.height


def test_exposure_groups_by_popularity_and_by_column() -> None:
    table = pl.DataFrame({"item": list("abcdefghij"), "seller": ["x", "y", None, "x"] + ["z"] * 6})
    cat = _Catalog(table)
    pop = np.array([9, 0, 5, 1, 0, 0, 7, 0, 0, 0])
    head = rerank.exposure_groups(cat, pop, "popularity", head_share=0.2)  # type: ignore[arg-type]
    assert head.tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    codes = rerank.exposure_groups(cat, pop, "seller")  # type: ignore[arg-type]
    assert codes[2] == -1 and codes[0] == codes[3] != codes[1] and len(set(codes[4:])) == 1
    with pytest.raises(ValueError, match="floor_groups"):
        rerank.exposure_groups(cat, pop, "market")  # type: ignore[arg-type]
