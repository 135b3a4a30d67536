"""The Python recommender over any recipe's scorer: candidates, filters, live events,
diversity, explanations, products added at run time.

Two artifacts: the ``pairs`` recipe (MMoE, the lead's PairsScorer) and :class:`FakeScorer`
(no model at all, ``tests/serving_helpers.py``), so nothing here may assume a neural model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from serving_helpers import FakeScorer, fake_artifact, tiny_artifact
from shoprec.artifact import Artifact
from shoprec.models import build_model
from shoprec.models.base import output_to_prediction
from shoprec.models.features import CategoricalFeature, NumericFeature, Task
from shoprec.models.two_tower import TwoTower
from shoprec.recommend import (
    SOURCES,
    CatalogError,
    DuplicateItemError,
    Fusion,
    Recommender,
    RecommenderConfig,
    Retrieval,
    SessionLog,
    UnknownItemError,
    integrated_gradients,
)
from shoprec.recommend.candidates import bit, union
from shoprec.recommend.merchant import REACH_TOLERANCE
from shoprec.recommend.retrieve import CoOccurrence, ItemIndex, retrieval_dir
from shoprec.recommend.two_tower import RetrievalFeatures, embed_items

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
    """A factory of recommenders over the same loaded artifact, each with its own sessions.
    The whole-catalog source is off (``rank_all_below=0``) unless asked for, so the
    retrieval sources are what these tests see."""
    art = Artifact.load(artifact)
    retrieval = Retrieval.load(artifact, art.items, art.seen)

    def build(**config: object) -> Recommender:
        config = {"rank_all_below": 0, **config}
        return Recommender(art, retrieval, RecommenderConfig(**config), sessions=SessionLog())

    return build


@pytest.fixture(scope="module")
def rec(make: Make) -> Recommender:
    return make()


@pytest.fixture(scope="module")
def fake_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_artifact(tmp_path_factory.getbasetemp())


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
    popular = rec.candidates.popular[:100]
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


def test_new_item_slot_only_where_the_recipe_scores_new_items(make: Make, fake_path: Path) -> None:
    # the pairs recipe scores a new item through its untrained unknown-item embedding: no slot
    rec = make(new_item_slots=1)
    assert rec.new_items() and not hasattr(rec.scorer, "add_items")
    user = rec.top_users(1)[0][0]
    assert all(r.slot == "ranked" for r in rec.recommend(user, k=5))
    # a scorer that scores new products (it has add_items) gets the slot
    fake = Artifact.load(fake_path).recommender(
        RecommenderConfig(new_item_slots=1, filter_out_of_stock=False)
    )
    assert fake.new_items()
    user = fake.top_users(1)[0][0]
    recs = fake.recommend(user, k=5)
    assert any(r.is_new for r in recs)
    assert all(r.slot == "ranked" for r in recs if not r.is_new)
    none = Artifact.load(fake_path).recommender(
        RecommenderConfig(new_item_slots=0, n_new=0, filter_out_of_stock=False)
    )
    assert all(r.slot == "ranked" for r in none.recommend(user, k=5))


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
    assert Fusion.default(["view", "cart", "buy"]).formula() == "buy"
    assert Fusion.default(["buy", "return"], "buy").formula() == "buy"


def test_fusion_keeps_the_order_of_any_positive_scores() -> None:
    """Task outputs are not clipped at 1 (a quantity) nor at 1e-7 (a recipe's fallback
    scores just above 0), so the fused order is the scorer's order."""
    f = Fusion.parse("qty")
    assert np.all(np.diff(f.log_score({"qty": np.array([3.0, 2.0, 1.0, 0.5])})) < 0)
    tiny = np.array([0.3, 2e-7, 1e-9, 5e-10])
    assert np.all(np.diff(Fusion.parse("buy").log_score({"buy": tiny})) < 0)


def test_explanation_sums_and_ranks_as_documented(rec: Recommender) -> None:
    user = _user_with_buys(rec)
    item = rec.recommend(user, k=3)[0].item
    exp = rec.explain(user, item)
    # task contributions: exact decomposition of log score against the reference items
    total = sum(t.contribution for t in exp.tasks)
    assert math.isclose(total, exp.log_score - exp.reference_log_score, abs_tol=1e-9)
    assert {t.name for t in exp.tasks} == {"buy", "session"}  # the default: the target
    assert [abs(t.contribution) for t in exp.tasks] == sorted(
        (abs(t.contribution) for t in exp.tasks), reverse=True
    )
    # feature attributions: Integrated Gradients completeness, sorted by |attribution|
    gap = exp.model_log_score - exp.baseline_model_log_score
    ig_sum = sum(f.attribution for f in exp.features)
    assert abs(ig_sum - gap) <= 0.03 * abs(gap) + 1e-3
    builder = rec.scorer.builder
    assert {f.feature for f in exp.features} == set(builder.categorical + builder.numeric)
    assert [abs(f.attribution) for f in exp.features] == sorted(
        (abs(f.attribution) for f in exp.features), reverse=True
    )
    assert math.isclose(exp.model_log_score, exp.log_score, rel_tol=1e-4)  # no session here
    # MMoE gates: one weight per expert, summing to 1 per task
    assert exp.gates is not None and set(exp.gates) == set(rec.tasks)
    for weights in exp.gates.values():
        assert len(weights) == 3 and math.isclose(sum(weights), 1.0, abs_tol=1e-4)
    # the most similar history item, and the sentence that says it
    assert exp.because is not None
    assert exp.because.item in set(rec.artifact.history(user)["item"])
    assert exp.sentence.startswith("Recommended") and "Because you" in exp.sentence
    # a price-weighted fusion, asked for per request
    priced = rec.explain(user, item, fusion="buy * price")
    assert {t.name for t in priced.tasks} == {"buy", "price", "session"}
    price = rec.catalog.price[rec.position(item)]
    assert math.isclose(priced.model_log_score, math.log(priced.score / price), rel_tol=1e-4)


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
    model = TwoTower.load(retrieval_dir(artifact))
    features = RetrievalFeatures.load(retrieval_dir(artifact))
    items = rec.artifact.items.head(20)
    np.testing.assert_allclose(
        embed_items(model, features, items), rec.retrieval.item_vectors[:20], rtol=1e-6
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

    monkeypatch.setattr(rec.scorer, "feature_attributions", refuse)
    exp = rec.explain(rec.top_users(1)[0][0], rec.items[0])
    assert exp.features == [] and exp.model_log_score is None
    assert "another way" in exp.notes[0] and exp.sentence.startswith("Recommended")


def test_predictions_are_the_scorers(rec: Recommender) -> None:
    """The recommender's per-task outputs are the scorer's for the same positions, for a
    known shopper and for one the artifact has never seen."""
    positions = np.array([0, 7, 3, 7, rec.n_items - 1])
    for user in (rec.known_users[3], "never-seen-shopper"):
        expected = rec.scorer.score([user], positions)
        got = rec.predict(user, positions)
        for task in rec.tasks:
            np.testing.assert_allclose(got[task], expected[task][0], rtol=1e-6)


def test_candidates_fill_up_to_the_minimum(make: Make) -> None:
    small = make(
        n_two_tower=10, n_popular=5, n_cooccurrence=5, n_new=2, n_history=0, min_candidates=60
    )
    user = _user_with_buys(small)
    ranking = small.rank(user, k=5)
    assert ranking.candidates == 60 and len(ranking.items) == 5
    seen = small.artifact.seen
    bought = set(seen.filter((pl.col("user") == user) & (pl.col("behavior") == "buy"))["item"])
    assert bought and not bought & {r.item for r in ranking.items}
    # no fill-up: the union of the sources only
    plain = make(
        n_two_tower=10, n_popular=5, n_cooccurrence=5, n_new=2, n_history=3, min_candidates=0
    )
    assert plain.rank(user, k=5).candidates <= 25
    # a catalog smaller than the minimum, or than rank_all_below: every allowed item
    allowed = small.n_items - len(set(small.training.excluded_positions(user).tolist()))
    allowed -= int((small.catalog.out_of_stock & ~_banned_mask(small, user)).sum())
    assert make(min_candidates=10_000).rank(user, k=5).candidates == allowed
    whole = make(rank_all_below=10_000, n_two_tower=5, min_candidates=0).rank(user, k=50)
    assert whole.candidates == allowed
    assert any("catalog" in r.sources for r in whole.items)


def _banned_mask(rec: Recommender, user: str) -> np.ndarray:
    mask = np.zeros(rec.n_items, dtype=bool)
    mask[rec.training.excluded_positions(user)] = True
    return mask


def test_served_list_is_the_offline_ranking(make: Make) -> None:
    """Without the business re-ranking (diversity, new-item slots) and with the whole small
    catalog as candidates, the served top 10 is the scorer's rank_scores order over the
    items offline evaluation ranks (the target's training items left out)."""
    rec = make(rank_all_below=10_000, diversity=0.0, new_item_slots=0, filter_out_of_stock=False)
    for user in (_user_with_buys(rec), rec.known_users[5], "cold-shopper"):
        scores = rec.scorer.rank_scores([user])[0].astype(np.float64)
        scores[_banned_mask(rec, user)] = -np.inf
        offline = [rec.items[i] for i in np.argsort(-scores, kind="stable")[:10]]
        assert [r.item for r in rec.recommend(user, k=10)] == offline


def test_repeat_purchases_reach_the_list_through_the_history_source(make: Make) -> None:
    user = _user_with_buys(make())
    bought = set(
        make().artifact.history(user).filter(pl.col("behavior") == "buy")["item"].to_list()
    )
    few = {"n_two_tower": 5, "n_popular": 0, "n_cooccurrence": 0, "n_new": 0, "min_candidates": 0}
    repeats = make(exclude_behaviors=(), **few).rank(user, k=100)
    listed = {r.item: r.sources for r in repeats.items}
    assert bought <= set(listed) and all("history" in listed[i] for i in bought)
    once = make(**few).rank(user, k=100)
    assert not bought & {r.item for r in once.items}


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


# ------------------------------------------------------------- a scorer with no model at all
@pytest.fixture()
def fake(fake_path: Path) -> Recommender:
    """A fresh recommender over the fake artifact (its scorer may be changed by the test)."""
    return Artifact.load(fake_path).recommender(
        RecommenderConfig(diversity=0.0, new_item_slots=0, filter_out_of_stock=False)
    )


def test_fake_scorer_serves_its_own_ranking(fake: Recommender) -> None:
    assert isinstance(fake.scorer, FakeScorer) and fake.model_name == "fake"
    assert fake.fusion.formula() == "buy"
    user = _user_with_buys(fake)
    recs = fake.recommend(user, k=10)
    scores = fake.scorer.rank_scores([user])[0].copy()
    scores[_banned_mask(fake, user)] = -np.inf
    assert [r.item for r in recs] == [fake.items[i] for i in np.argsort(-scores)[:10]]
    assert all(set(r.predictions) == {"view", "buy"} for r in recs)
    assert all(r.sources and set(r.sources) <= set(SOURCES) for r in recs)


def test_fake_scorer_is_explained_without_hooks(fake: Recommender) -> None:
    user = _user_with_buys(fake)
    item = fake.recommend(user, k=1)[0].item
    exp = fake.explain(user, item)
    assert exp.features == [] and exp.gates is None and exp.model_log_score is None
    assert any("'fake' scorer offers no feature attributions" in n for n in exp.notes)
    total = sum(t.contribution for t in exp.tasks)
    assert math.isclose(total, exp.log_score - exp.reference_log_score, abs_tol=1e-9)
    assert exp.because is not None and exp.sentence.startswith("Recommended")


def test_live_events_reach_the_scorer(fake: Recommender) -> None:
    """The fake doubles the scores of categories a shopper just touched: after two views in
    one category, the scorer was handed them and the list moves to that category."""
    user = fake.known_users[7]
    before = fake.recommend(user, k=10)
    cats = fake.catalog.category_names
    listed = {r.attributes["category"] for r in before}
    other = next(p for p in fake.candidates.popular if cats[p] not in listed)
    for behavior in ("view", "view"):
        fake.record(user, fake.items[other], behavior)
    after = fake.recommend(user, k=10)
    handed = pl.concat(fake.scorer.seen_events)
    assert fake.items[other] in handed.filter(pl.col("user") == user)["item"].to_list()
    share = np.mean([r.attributes["category"] == cats[other] for r in after])
    assert share > np.mean([r.attributes["category"] == cats[other] for r in before])
    # an unknown shopper's query vector moves to their live items
    q0 = fake.user_vector("walk-in", fake.live("walk-in"))
    fake.record("walk-in", fake.items[other], "cart")
    q1 = fake.user_vector("walk-in", fake.live("walk-in"))
    v = fake.retrieval.item_vectors[other]
    assert q1 @ v > q0 @ v + 0.1


def test_repeat_purchase_scorer_gets_its_best_items_served(fake: Recommender) -> None:
    """A scorer that likes what the shopper bought before (repeat purchases) gets those items
    into the list through the history source when the serve config allows repeats."""
    user = _user_with_buys(fake)
    bought = [fake.position(i) for i in fake.artifact.history(user)["item"].unique()]
    fake.scorer.quality[bought] = 0.99
    few = {"n_two_tower": 5, "n_popular": 5, "n_cooccurrence": 0, "n_new": 0, "min_candidates": 0}
    cfg = RecommenderConfig(
        exclude_behaviors=(), rank_all_below=0, diversity=0.0, new_item_slots=0,
        filter_out_of_stock=False, n_history=len(bought), **few,
    )  # fmt: skip
    repeats = Recommender(fake.artifact, fake.retrieval, cfg).recommend(user, k=len(bought))
    assert {fake.position(r.item) for r in repeats} == set(bought)
    assert all("history" in r.sources for r in repeats)


def test_products_added_at_run_time(fake: Recommender, rec: Recommender) -> None:
    n = fake.n_items
    category = fake.catalog.category_names[0]
    rows = [
        {"item": "sku-new-1", "title": "A new thing", "category": category, "price": 3.0},
        {"item": "sku-new-2", "category": category, "price": 9.0, "stock": 4},
    ]
    assert fake.add_items(rows) == ["sku-new-1", "sku-new-2"]
    assert fake.n_items == n + 2 and fake.scorer.n_items == n + 2
    assert fake.position("sku-new-2") == n + 1 and {"sku-new-1", "sku-new-2"} <= set(
        fake.new_items()
    )
    assert len(fake.retrieval.item_vectors) == n + 2 and len(fake.retrieval.index) == n + 2
    assert fake.attributes([n + 1])[0]["stock"] == 4 and fake.attributes([n])[0]["title"]
    # the fake scores them best: they are served at once, found similar, given an audience
    top = [r.item for r in fake.recommend(fake.known_users[0], k=3)]
    assert {"sku-new-1", "sku-new-2"} <= set(top)
    similar = [x.item for x in fake.similar("sku-new-1", k=3)]
    assert len(similar) == 3 and "sku-new-1" not in similar
    assert len(fake.audience("sku-new-1", k=3)) == 3
    assert any(r.item.startswith("sku-new") for r in fake.new_item_reach(limit=100, audience=0))
    with pytest.raises(DuplicateItemError, match="already in the catalog"):
        fake.add_items([{"item": "sku-new-1"}])
    with pytest.raises(CatalogError, match="unknown product columns"):
        fake.add_items([{"item": "sku-x", "colour": "red"}])
    # a recipe whose scorer cannot score unseen products refuses, naming the recipe
    with pytest.raises(CatalogError, match="'pairs' recipe cannot score products added"):
        rec.add_items([{"item": "sku-z", "price": 1.0}])
    assert not rec.has_item("sku-z")


def test_retrieval_is_built_from_the_item_table_and_events_only(fake_path: Path) -> None:
    files = sorted(p.name for p in retrieval_dir(fake_path).iterdir())
    assert files == sorted(
        [
            "cooccurrence.parquet", "item_encoder.json", "items.faiss", "retrieval.json",
            "two_tower.json", "two_tower.safetensors", "user_encoder.json",
        ]
    )  # fmt: skip
    r = Retrieval.load(fake_path)  # nothing of the recipe needed
    items = pl.read_parquet(fake_path / "items.parquet")
    assert r.item_vectors.shape[0] == items.height and len(r.index) == items.height
    assert r.features.item_columns == ["item", "category", "brand", "log_price"]


def test_candidate_union_bits() -> None:
    cand, bits = union(np.array([4, 1, 4, 9]), np.array([bit("two_tower"), 2, bit("history"), 1]))
    assert cand.tolist() == [1, 4, 9]
    assert bits.tolist() == [2, bit("two_tower") | bit("history"), 1]
