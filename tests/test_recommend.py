"""The Python recommender: candidates, filters, live events, diversity, explanations."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from serving_helpers import tiny_artifact
from shoprec.experiment import Artifact
from shoprec.models import build_model
from shoprec.models.base import output_to_prediction
from shoprec.models.features import CategoricalFeature, NumericFeature, Task
from shoprec.pipeline import score_pairs
from shoprec.recommend import (
    SOURCES,
    Fusion,
    Recommender,
    RecommenderConfig,
    SessionLog,
    TwoTower,
    UnknownItemError,
    integrated_gradients,
)
from shoprec.recommend.recommender import REACH_TOLERANCE
from shoprec.recommend.retrieve import CoOccurrence, ItemIndex, Retrieval
from shoprec.recommend.two_tower import embed_items

Make = Callable[..., Recommender]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a busy machine they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def make(artifact: Path) -> Make:
    """A factory of recommenders over the same loaded artifact, each with its own sessions."""
    art = Artifact.load(artifact)
    retrieval = Retrieval.load(artifact, art.builder, art.seen)

    def build(**config: object) -> Recommender:
        return Recommender(art, retrieval, RecommenderConfig(**config), sessions=SessionLog())

    return build


@pytest.fixture(scope="module")
def rec(make: Make) -> Recommender:
    return make()


def _user_with_buys(rec: Recommender) -> str:
    seen = rec.artifact.seen
    buyers = seen.filter(pl.col("behavior") == "buy")["user"].value_counts(sort=True)
    return str(buyers["user"][0])


def test_recommend_returns_k_distinct_scored_items(rec: Recommender) -> None:
    user = rec.top_users(1)[0][0]
    recs = rec.recommend(user, k=8)
    assert [r.rank for r in recs] == list(range(1, 9))
    assert len({r.item for r in recs}) == 8
    for r in recs:
        assert set(r.predictions) == set(rec.tasks)
        assert all(0.0 <= p <= 1.0 for p in r.predictions.values())
        assert r.sources and set(r.sources) <= set(SOURCES)
        assert math.isclose(r.score, r.fused * math.exp(r.session_boost), rel_tol=1e-9)
        assert {"category", "price", "title"} <= set(r.attributes)


def test_training_buys_are_filtered(rec: Recommender) -> None:
    user = _user_with_buys(rec)
    bought = set(rec.artifact.history(user).filter(pl.col("behavior") == "buy")["item"])
    assert bought
    assert not bought & {r.item for r in rec.recommend(user, k=20)}


def test_live_buy_removes_the_item_at_once(make: Make) -> None:
    rec = make()
    user = rec.top_users(1)[0][0]
    top = rec.recommend(user, k=5)[0].item
    rec.record(user, top, "buy")
    assert top not in {r.item for r in rec.recommend(user, k=5)}


def test_live_views_pull_similar_items_into_the_list(make: Make) -> None:
    rec = make()
    user = rec.top_users(3)[2][0]
    before = rec.recommend(user, k=10)
    v = rec.retrieval.similarity_vectors
    popular = rec._popular[:100]
    listed = v[[rec.position(r.item) for r in before]].mean(0)
    p = int(popular[np.argmin(v[popular] @ listed)])  # a popular item unlike the list
    target = rec.items[p]

    def closeness(recs: list) -> float:
        return float(np.mean([v[rec.position(r.item)] @ v[p] for r in recs if r.item != target]))

    for behavior in ("view", "view", "cart"):
        rec.record(user, target, behavior)
    after = rec.recommend(user, k=10)
    assert [r.item for r in after] != [r.item for r in before]
    assert closeness(after) > closeness(before) + 0.1
    assert max(r.session_boost for r in after) > 0
    history = rec.history(user, limit=3)
    assert (history[0].item, history[0].behavior, history[0].source) == (target, "cart", "session")


def test_unknown_user_gets_a_cold_start_list(rec: Recommender) -> None:
    recs = rec.recommend("never-seen-before", k=6, explain=True)
    assert len(recs) == 6
    assert not rec.is_known_user("never-seen-before")
    assert recs[0].explanation is not None
    assert recs[0].explanation.because is None
    assert any("new shopper" in n for n in recs[0].explanation.notes)


def test_stock_and_category_filters(make: Make) -> None:
    rec = make()
    user = rec.top_users(1)[0][0]
    first = rec.recommend(user, k=5)
    assert rec.set_stock({first[0].item: 0, "no-such-item": 3}) == ["no-such-item"]
    assert first[0].item not in {r.item for r in rec.recommend(user, k=5)}
    category = first[1].attributes["category"]
    recs = rec.recommend(user, k=10, exclude_categories=[category])
    assert category not in {r.attributes["category"] for r in recs}


def test_new_item_slot(make: Make) -> None:
    rec = make(new_item_slots=1)
    assert rec.new_items()
    recs = rec.recommend(rec.top_users(1)[0][0], k=5)
    assert any(r.is_new for r in recs)
    assert all(r.slot == "ranked" for r in recs if not r.is_new)
    none = make(new_item_slots=0, n_new=0).recommend(rec.top_users(1)[0][0], k=5)
    assert all(r.slot == "ranked" for r in none)


def test_diversity_spreads_categories(make: Make) -> None:
    user = make().top_users(1)[0][0]
    plain = make(diversity=0.0, new_item_slots=0).recommend(user, k=8)
    diverse = make(diversity=0.9, new_item_slots=0).recommend(user, k=8)
    assert [r.score for r in plain] == sorted((r.score for r in plain), reverse=True)

    def n_categories(recs: list) -> int:
        return len({r.attributes["category"] for r in recs})

    assert n_categories(diverse) > n_categories(plain)


def test_fusion_formula_and_terms() -> None:
    f = Fusion.parse("view^0.5 * buy * price^0.5 * (1-return)^2")
    assert Fusion.parse(f.formula()) == f
    preds = {
        "view": np.array([0.5, 0.2]),
        "buy": np.array([0.1, 0.3]),
        "return": np.array([0.2, 0.05]),
    }
    price = np.array([4.0, 9.0])
    expected = np.sqrt(preds["view"]) * preds["buy"] * np.sqrt(price) * (1 - preds["return"]) ** 2
    np.testing.assert_allclose(f.score(preds, price), expected, rtol=1e-6)
    np.testing.assert_allclose(sum(f.log_terms(preds, price).values()), np.log(expected))
    with pytest.raises(ValueError, match="cannot read"):
        Fusion.parse("buy + price")
    with pytest.raises(ValueError, match="unknown task"):
        Fusion.parse("click * buy").check(["view", "buy"])
    assert Fusion.default(["view", "cart", "buy"]).formula() == "buy * price"


def test_explanation_sums_and_ranks_as_documented(rec: Recommender) -> None:
    user = _user_with_buys(rec)
    item = rec.recommend(user, k=3)[0].item
    exp = rec.explain(user, item)
    # task contributions: exact decomposition of log score against the reference items
    total = sum(t.contribution for t in exp.tasks)
    assert math.isclose(total, exp.log_score - exp.reference_log_score, abs_tol=1e-9)
    assert {t.name for t in exp.tasks} == {"buy", "price", "session"}
    assert [abs(t.contribution) for t in exp.tasks] == sorted(
        (abs(t.contribution) for t in exp.tasks), reverse=True
    )
    # feature attributions: Integrated Gradients completeness, sorted by |attribution|
    gap = exp.model_log_score - exp.baseline_model_log_score
    ig_sum = sum(f.attribution for f in exp.features)
    assert abs(ig_sum - gap) <= 0.03 * abs(gap) + 1e-3
    assert {f.feature for f in exp.features} == set(rec.builder.categorical + rec.builder.numeric)
    assert [abs(f.attribution) for f in exp.features] == sorted(
        (abs(f.attribution) for f in exp.features), reverse=True
    )
    price = rec.price[rec.position(item)]
    assert math.isclose(exp.model_log_score, math.log(exp.score / price), rel_tol=1e-4)
    # MMoE gates: one weight per expert, summing to 1 per task
    assert exp.gates is not None and set(exp.gates) == set(rec.tasks)
    for weights in exp.gates.values():
        assert len(weights) == 3 and math.isclose(sum(weights), 1.0, abs_tol=1e-4)
    # the most similar history item, and the sentence that says it
    assert exp.because is not None
    assert exp.because.item in set(rec.artifact.history(user)["item"])
    assert exp.sentence.startswith("Recommended") and "Because you" in exp.sentence


@pytest.mark.parametrize("name", ["single_task", "shared_bottom", "ple", "esmm"])
def test_integrated_gradients_completeness_on_other_models(name: str) -> None:
    torch.manual_seed(0)
    features = [CategoricalFeature("user", 20, 4), CategoricalFeature("item", 30, 4)]
    features.append(NumericFeature("price"))
    model = build_model(name, features, [Task("click"), Task("buy")]).eval()
    batch = {"user": torch.tensor([3]), "item": torch.tensor([7]), "price": torch.tensor([0.8])}

    def target(preds: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.log(preds["buy"]) + 0.5 * torch.log(preds["click"])

    with torch.no_grad():
        before = model(batch)
    ig = integrated_gradients(model, batch, target, steps=128)
    assert set(ig.attributions) == {"user", "item", "price"}
    gap = ig.value - ig.baseline_value
    assert abs(sum(ig.attributions.values()) - gap) <= 0.01 * abs(gap) + 1e-4
    with torch.no_grad():
        out = model(batch)
    preds = {t.name: output_to_prediction(t, out[t.name]) for t in model.tasks}
    assert math.isclose(ig.value, float(target(preds)[0]), rel_tol=1e-5)
    for key, value in out.items():  # the model is left as it was
        torch.testing.assert_close(value, before[key])


def test_similar_items(rec: Recommender) -> None:
    item = rec.items[0]
    sims = rec.similar(item, k=5)
    assert len(sims) == 5 and item not in {s.item for s in sims}
    assert [s.score for s in sims] == sorted((s.score for s in sims), reverse=True)
    with pytest.raises(UnknownItemError, match="unknown item"):
        rec.similar("no-such-item")


def test_cooccurrence_counts_golden() -> None:
    seen = pl.DataFrame(
        {
            "user": ["u1", "u1", "u2", "u2", "u2", "u3"],
            "item": ["a", "b", "a", "b", "c", "c"],
            "behavior": ["view", "buy", "view", "view", "cart", "return"],
        }
    )
    items = pl.Series("item", ["a", "b", "c"])
    co = CoOccurrence.fit(seen, items)
    top, score = co.neighbours(np.array([0]))
    assert top.tolist() == [1, 2]  # a: b in 2 of 2 users, c in 1 (u3's return is ignored)
    np.testing.assert_allclose(score, [2 / math.sqrt(2 * 2), 1 / math.sqrt(2 * 1)])
    again = CoOccurrence.from_frame(co.to_frame(items), items)
    for a, b in zip(
        again.neighbours(np.array([1, 2])), co.neighbours(np.array([1, 2])), strict=True
    ):
        np.testing.assert_allclose(a, b)


def test_numpy_search_matches_faiss(rec: Recommender) -> None:
    vectors = rec.retrieval.item_vectors
    queries = vectors[:4] * 0.9 + vectors[4:8] * 0.1
    exact = ItemIndex(vectors, use_faiss=False)
    fast = ItemIndex(vectors)
    (s1, i1), (s2, i2) = exact.search(queries, 10), fast.index.search(queries, 10)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)  # the same scores, in order
    # The same items, except that near-ties (equal scores up to float rounding, summed in
    # another order by faiss's kernels) may swap places.
    tied = np.abs(np.diff(s1, axis=1)) < 1e-5
    near_tie = np.zeros_like(s1, dtype=bool)
    near_tie[:, :-1] |= tied
    near_tie[:, 1:] |= tied
    assert (i1 == i2)[~near_tie].all()
    for row in range(len(queries)):
        if not near_tie[row, -1]:  # no tie across the cut: the same ten items
            assert set(i1[row]) == set(i2[row])


def test_two_tower_round_trip(artifact: Path, rec: Recommender) -> None:
    model, _, item_cols = TwoTower.load(artifact)
    items = rec.items[:20]
    np.testing.assert_allclose(
        embed_items(model, rec.builder, items, item_cols), rec.retrieval.item_vectors[:20]
    )


def test_merchant_view(rec: Recommender) -> None:
    reach = rec.new_item_reach(limit=5, audience=2)
    assert reach and all(r.item in set(rec.new_items()) for r in reach)
    assert [r.reach for r in reach] == sorted((r.reach for r in reach), reverse=True)
    assert all(len(r.audience) == 2 for r in reach)
    audience = rec.audience(reach[0].item, k=4)
    assert [a.margin for a in audience] == sorted((a.margin for a in audience), reverse=True)
    everyone = rec.audience(reach[0].item, k=10_000)
    assert sum(a.margin >= -REACH_TOLERANCE for a in everyone) == reach[0].reach
    # new items of different kinds reach different shoppers
    assert len({tuple(a.user for a in r.audience) for r in reach}) > 1


def test_explanation_without_attributions_still_answers(
    rec: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("this model reads its inputs another way")

    monkeypatch.setattr("shoprec.recommend.recommender.integrated_gradients", refuse)
    exp = rec.explain(rec.top_users(1)[0][0], rec.items[0])
    assert exp.features == [] and exp.model_log_score is None
    assert "another way" in exp.notes[0] and exp.sentence.startswith("Recommended")


def test_cached_model_input_matches_the_feature_builder(rec: Recommender) -> None:
    """The serving path's cached inputs give the same batch and predictions as the
    dataframe path, for a known shopper and for one the artifact has never seen."""
    positions = np.array([0, 7, 3, 7, rec.n_items - 1])
    items = rec.items[positions.tolist()]
    for user in (rec.known_users[3], "never-seen-shopper"):
        slow = rec.builder.pairs([user], items).columns
        fast = rec.features.batch(user, positions)
        assert set(fast) == set(slow)
        for key, value in slow.items():
            torch.testing.assert_close(fast[key], value, rtol=0, atol=0)
        expected = score_pairs(rec.model, rec.builder, [user], items)
        got = rec.predict(user, positions)
        for task in rec.tasks:
            np.testing.assert_allclose(got[task], expected[task][0], rtol=1e-5, atol=1e-7)


def test_candidates_fill_up_to_the_minimum(make: Make) -> None:
    small = make(n_two_tower=10, n_popular=5, n_cooccurrence=5, n_new=2, min_candidates=60)
    user = _user_with_buys(small)
    ranking = small.rank(user, k=5)
    assert ranking.candidates == 60 and len(ranking.items) == 5
    seen = small.artifact.seen
    bought = set(seen.filter((pl.col("user") == user) & (pl.col("behavior") == "buy"))["item"])
    assert bought and not bought & {r.item for r in ranking.items}
    # no fill-up: the union of the sources only
    plain = make(n_two_tower=10, n_popular=5, n_cooccurrence=5, n_new=2, min_candidates=0)
    assert plain.rank(user, k=5).candidates <= 22
    # a catalog smaller than the minimum: every allowed item is ranked
    everything = make(min_candidates=10_000)
    events, _, _ = everything._recent(user)
    allowed = int((~everything._excluded(user, events)).sum())
    assert everything.rank(user, k=5).candidates == allowed


def test_large_catalogs_get_an_inverted_file_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from shoprec.recommend import retrieve

    monkeypatch.setattr(retrieve, "IVF_MIN_ITEMS", 2000)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16))  # item vectors come in groups, as learned ones do
    vectors = (centres[rng.integers(0, 40, 4000)] + 0.3 * rng.normal(size=(4000, 16))).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.1 * rng.normal(size=(50, 16)).astype(np.float32)
    ivf = ItemIndex(vectors)
    assert "IVF" in ivf.describe()
    exact = ItemIndex(vectors, use_faiss=False).search(queries, 20)[1]
    found = ivf.search(queries, 20)[1]
    hits = np.mean([len(set(f) & set(e)) / 20 for f, e in zip(found, exact, strict=True)])
    assert hits > 0.9
    ivf.save(tmp_path / "items.faiss")
    loaded = ItemIndex.load(tmp_path / "items.faiss", vectors)
    assert loaded.describe() == ivf.describe()
    np.testing.assert_array_equal(loaded.search(queries, 20)[1], found)
    # a small catalog is searched exactly, and a saved flat index of a large one is rebuilt
    assert "exact" in ItemIndex(vectors[:100]).describe()
    np.testing.assert_array_equal(
        ItemIndex(vectors[:100]).search(queries, 20)[1],
        ItemIndex(vectors[:100], use_faiss=False).search(queries, 20)[1],
    )
