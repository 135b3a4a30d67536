"""The ``multibehavior`` recipe behind the front door: options from the experiment config,
fit on a simulated shop and on a tiny CSV without time (click / buy only), the scorer's
scores (candidates above a positive fallback), live events, save / load, and the same full
ranking as the recipe's :func:`model_scores`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from shoprec import artifact, recipes
from shoprec.config import ConfigError, ExperimentConfig
from shoprec.data.datasets.custom import FileSpec, load_files
from shoprec.data.schema import Dataset, Interactions
from shoprec.data.simulate import simulate_shop
from shoprec.data.split import Split, time_split
from shoprec.recipes.multibehavior import (
    MultiBehaviorRecipe,
    MultiBehaviorScorer,
    full_ranking_metrics,
    model_scores,
)

torch.set_num_threads(1)


def _config(**sections: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "data": {"dataset": "simulated"},
        "split": {"kind": "time", "test_days": 14, "valid_days": 14},
        "recipe": {"name": "multibehavior"},
        "tasks": ["view", "cart", "buy"],
        "model": {"name": "mmoe", "embedding_dim": 8, "config": {"n_experts": 2}},
        "train": {"epochs": 2, "batch_size": 512, "lr": 0.005, "progress": False, "threads": 1},
        "evaluate": {"protocol": "full", "ks": [10, 20]},
    }
    raw.update(sections)
    return ExperimentConfig.from_dict(raw)


@pytest.fixture(scope="module")
def shop() -> tuple[Dataset, Split]:
    ds = simulate_shop(n_events=20_000, n_users=500, n_items=200, seed=1).dataset
    return ds, time_split(ds.interactions, test_days=14, valid_days=14)


@pytest.fixture(scope="module")
def trained(shop: tuple[Dataset, Split]) -> Any:
    ds, split = shop
    return MultiBehaviorRecipe(_config()).fit(ds, split)


def test_registered_and_options_follow_the_config() -> None:
    assert recipes.get("multibehavior") is MultiBehaviorRecipe
    cfg = _config(
        recipe={"name": "multibehavior", "hide_fraction": 0.3, "n_negatives": 1},
        evaluate={"target": "cart"},
    )
    rc = MultiBehaviorRecipe(cfg).recipe_config()
    assert rc.behaviors == ("view", "cart", "buy") and rc.target == "cart"
    assert (rc.hide_fraction, rc.n_negatives, rc.embedding_dim) == (0.3, 1, 8)
    single = _config(
        recipe={"name": "multibehavior", "behaviors": ["view", "buy"], "hide_fraction": 0.0},
        tasks=["buy"],
    )
    rc = MultiBehaviorRecipe(single).recipe_config()
    assert rc.behaviors == ("view", "buy") and rc.auxiliary == ("view",)
    with pytest.raises(ConfigError, match=r"unknown key 'recipe\.n_negativs'"):
        _config(recipe={"name": "multibehavior", "n_negativs": 1})
    with pytest.raises(ConfigError, match="item_id"):  # caught when the config is read
        _config(recipe={"name": "multibehavior", "histories": ["view"]})


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"tasks": ["buy"]}, "other behaviors"),
        ({"recipe": {"name": "multibehavior", "hide_fraction": 0.0}}, "hide_fraction"),
        (
            {"tasks": ["buy"], "recipe": {"name": "multibehavior", "behaviors": ["view"]}},
            "leaves out",
        ),
        ({"tasks": [{"name": "qty", "kind": "regression", "label": "quantity"}]}, "binary"),
    ],
)
def test_settings_that_cannot_work_are_refused(sections: dict[str, Any], message: str) -> None:
    # a task kind the recipe cannot learn is refused when the recipe is made (recipes.
    # check_tasks, a ValueError); the other settings when its config is built
    with pytest.raises((ConfigError, ValueError), match=message):
        MultiBehaviorRecipe(_config(**sections)).recipe_config()


def test_a_behavior_the_data_lacks_is_named(shop: tuple[Dataset, Split]) -> None:
    ds, split = shop
    no_cart = Split(split.train.filter(pl.col("behavior") != "cart"), None, split.test)
    with pytest.raises(ConfigError, match=r"\['cart'\] have no events"):
        MultiBehaviorRecipe(_config()).fit(ds, no_cart)


def test_fit_on_a_simulated_shop(trained: Any, shop: tuple[Dataset, Split]) -> None:
    ds, split = shop
    run = trained
    assert run.monitor == "buy/ndcg@10"
    assert set(run.valid) == {"buy/hr@10", "buy/hr@20", "buy/ndcg@10", "buy/ndcg@20"}
    assert 0.0 <= run.valid_score <= 1.0
    assert run.best_epoch in (1, 2) and len(run.history) >= 1
    assert "buy/ndcg@10" in run.history[0] and "train_loss" in run.history[0]
    assert run.info["validation_pairs"] > 0 and run.info["retrain_epochs"] == run.best_epoch
    scorer = run.scorer
    assert isinstance(scorer, MultiBehaviorScorer)
    assert scorer.tasks == ["view", "cart", "buy"] and scorer.target == "buy"
    # items: every train / valid item and the catalog, by position
    assert scorer.items == sorted(scorer.items)
    assert set(ds.catalog.df["item"].to_list()) <= set(scorer.items)
    # the log the scorer reads holds the valid part too (the refit saw it)
    valid_buys = split.valid.of("buy").df
    u = scorer.blog.user_index(valid_buys["user"])
    i = scorer.blog.item_index(valid_buys["item"])
    assert scorer.blog.contains("buy", u, i).all()


def test_scores_are_probabilities_above_a_positive_fallback(trained: Any) -> None:
    scorer: MultiBehaviorScorer = trained.scorer
    blog = scorer.blog
    users = [*blog.users.values[:40], "someone-new"]
    scores = scorer.score(users)
    assert set(scores) == {"view", "cart", "buy"}
    dense = blog.user_index(users)
    for task, s in scores.items():
        assert s.shape == (41, scorer.n_items) and s.dtype == np.float32
        assert (s > 0).all() and (s <= 1).all()
        for r, u in enumerate(dense[:-1]):
            seen = np.zeros(scorer.n_items, dtype=bool)
            for b in ("view", "cart"):
                seen[blog.csr(b).indices[blog.csr(b).indptr[u] : blog.csr(b).indptr[u + 1]]] = True
            bought = np.zeros(scorer.n_items, dtype=bool)
            c = blog.csr("buy")
            bought[c.indices[c.indptr[u] : c.indptr[u + 1]]] = True
            cand = seen & ~bought
            if cand.any() and (~cand).any():
                assert s[r, cand].min() > s[r, ~cand].max(), task  # candidates first
    # an unknown user gets the target's popularity order, all below 1e-6
    pop = blog.item_counts("buy")
    new = scores["buy"][-1]
    assert new.max() <= 1e-6
    assert (np.argsort(-new, kind="stable") == np.argsort(-pop, kind="stable")).all()
    # a subset of positions gives the same numbers as the columns of the full matrix
    pos = np.array([5, 0, 17, 3])
    part = scorer.score(users[:10], pos)
    for task in scores:
        np.testing.assert_allclose(part[task], scores[task][:10][:, pos], rtol=1e-6)
    assert np.array_equal(scorer.rank_scores(users[:10]), scores["buy"][:10])


def test_ranks_as_model_scores_did(trained: Any) -> None:
    """The scorer's target scores order every user's items exactly as the recipe's own
    full-ranking scores (``model_scores``) of the same model do, so the metrics are equal."""
    scorer: MultiBehaviorScorer = trained.scorer
    blog, cfg = scorer.blog, scorer.config
    dense = np.arange(blog.n_users)
    old = model_scores(scorer.model, blog, dense, cfg).numpy()
    new = scorer.rank_scores(list(blog.users.values))
    cand = old >= 0
    assert np.array_equal(old[cand], new[cand])  # the same probabilities for candidates
    assert (
        np.argsort(-old, axis=1, kind="stable") == np.argsort(-new, axis=1, kind="stable")
    ).all()
    rng = np.random.default_rng(0)
    targets = rng.integers(0, blog.n_items, size=blog.n_users)
    before = full_ranking_metrics(
        lambda u: model_scores(scorer.model, blog, u, cfg), blog, dense, targets, target="buy"
    )
    after = full_ranking_metrics(
        lambda u: torch.from_numpy(scorer.rank_scores([blog.users.values[x] for x in u])),
        blog,
        dense,
        targets,
        target="buy",
    )
    assert before == after


def test_live_events_join_the_users_behaviors(trained: Any) -> None:
    scorer: MultiBehaviorScorer = trained.scorer
    blog = scorer.blog
    user = blog.users.values[int(np.argmax(blog.user_counts("view")))]
    u = blog.user_index([user])
    untouched = [
        i
        for i in range(scorer.n_items)
        if not any(blog.contains(b, u, np.array([i]))[0] for b in ("view", "cart", "buy"))
    ]
    item = blog.items.values[untouched[0]]
    pos = untouched[0]
    other = blog.users.values[0] if blog.users.values[0] != user else blog.users.values[1]
    before = scorer.score([user, other])
    assert before["buy"][0, pos] <= 1e-6  # not a candidate: fallback
    cart = pl.DataFrame({"user": [user], "item": [item], "behavior": ["cart"]})
    after = scorer.score([user, other], events=cart)
    assert after["buy"][0, pos] > 1e-6  # now a candidate with in_cart = 1
    for task in after:  # other users unchanged (up to the float noise of another batch)
        np.testing.assert_allclose(after[task][1], before[task][1], rtol=1e-5, atol=0)
    # a carted item scores higher than the same item only viewed
    view = cart.with_columns(pl.lit("view").alias("behavior"))
    viewed = scorer.score([user], events=view)
    assert after["buy"][0, pos] > viewed["buy"][0, pos] > 1e-6
    # a live purchase takes it out of the candidates again
    bought = pl.concat([cart, cart.with_columns(pl.lit("buy").alias("behavior"))])
    assert scorer.score([user], events=bought)["buy"][0, pos] <= 1e-6
    # a user the log does not know: their live view makes a candidate, the rest popularity
    fresh = scorer.score(["fresh"], events=view.with_columns(pl.lit("fresh").alias("user")))
    assert fresh["buy"][0, pos] > 1e-6
    assert (np.delete(fresh["buy"][0], pos) <= 1e-6).all()
    # events of unknown items and behaviors are ignored
    noise = pl.DataFrame(
        {"user": [user, user], "item": ["no-such-item", item], "behavior": ["cart", "return"]}
    )
    assert np.array_equal(scorer.score([user], events=noise)["buy"], scorer.score([user])["buy"])


def test_save_load_round_trip_gives_identical_scores(
    trained: Any, shop: tuple[Dataset, Split], tmp_path: Path
) -> None:
    scorer: MultiBehaviorScorer = trained.scorer
    users = [*scorer.blog.users.values[:30], "someone-new"]
    events = pl.DataFrame({"user": [users[0]], "item": [scorer.items[7]], "behavior": ["cart"]})
    expected = scorer.score(users, events=events)
    (tmp_path / "scorer").mkdir()
    scorer.save(tmp_path / "scorer")
    assert (tmp_path / "scorer" / "model" / "weights.safetensors").exists()
    loaded = MultiBehaviorScorer.load(tmp_path / "scorer")
    assert loaded.items == scorer.items and loaded.tasks == scorer.tasks
    for task, s in loaded.score(users, events=events).items():
        assert np.array_equal(s, expected[task])
    # and through the artifact layout
    ds, split = shop
    items = pl.DataFrame({"item": scorer.items}).join(ds.catalog.df, on="item", how="left")
    out = artifact.save(
        tmp_path / "art",
        config=_config(),
        scorer=scorer,
        items=items,
        seen=split.train.df,
        metrics={"valid": trained.valid},
    )
    art = artifact.Artifact.load(out)
    assert art.recipe == "multibehavior" and art.target == "buy"
    assert np.array_equal(art.scorer.rank_scores(users, events=events), expected["buy"])


def test_fit_on_a_tiny_csv_without_time_click_buy_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        clicked = rng.choice(30, 8, replace=False)
        rows += [(f"c{u}", f"p{i}", "pageview") for i in clicked]
        rows += [(f"c{u}", f"p{i}", "order") for i in clicked[:3]]
    path = tmp_path / "events.csv"
    pl.DataFrame(rows, schema=["customer", "sku", "event"], orient="row").write_csv(path)
    ds = load_files(
        FileSpec(
            path,
            columns={"user": "customer", "item": "sku", "behavior": "event"},
            behaviors={"pageview": "click", "order": "buy"},
        )
    )
    assert not ds.interactions.has_time
    df = ds.interactions.df
    test = df.filter(pl.col("behavior") == "buy").group_by("user").first()
    train = df.join(test, on=["user", "item", "behavior"], how="anti")
    split = Split(Interactions(train), None, Interactions(test), kind="given")
    cfg = _config(tasks=["click", "buy"], data={"events": {"path": str(path)}})
    run = MultiBehaviorRecipe(cfg).fit(ds, split)
    assert run.scorer.tasks == ["click", "buy"] and run.info["validation_pairs"] == 40
    scores = run.scorer.score(test["user"].to_list())
    assert scores["buy"].shape == (40, 30) and (scores["buy"] > 0).all()
    # the test buy is one of the 6 clicked items not bought in train: the candidates, which
    # rank above everything else
    pos = np.array([run.scorer.items.index(i) for i in test["item"]])
    top = np.argsort(-scores["buy"], axis=1)[:, :6]
    assert (top == pos[:, None]).any(axis=1).all()
    assert (scores["buy"][np.arange(40), pos] > 1e-6).all()


def test_front_door_trains_a_click_buy_csv_from_yaml(tmp_path: Path) -> None:
    """``shoprec train`` on a shop's own CSV without time: click / buy only, a seeded per-user
    split of the buys; the artifact's scorer ranks as the run's did."""
    from shoprec.config import load_config
    from shoprec.experiment import train_experiment

    rng = np.random.default_rng(1)
    rows = []
    for u in range(60):
        clicked = rng.choice(40, 10, replace=False)
        rows += [(f"c{u}", f"p{i}", "click") for i in clicked]
        rows += [(f"c{u}", f"p{i}", "buy") for i in clicked[:4]]
    pl.DataFrame(rows, schema=["user", "item", "behavior"], orient="row").write_csv(
        tmp_path / "events.csv"
    )
    (tmp_path / "shop.yaml").write_text(
        """
name: csv_shop
data: {events: {path: events.csv}}
split: {kind: random, per_user: true, behavior: buy, fractions: [0.5, 0.25, 0.25], seed: 0}
recipe: {name: multibehavior, n_negatives: 1}
tasks: [click, buy]
model: {name: mmoe, embedding_dim: 8, config: {n_experts: 2}}
train: {epochs: 2, batch_size: 256, progress: false, threads: 1}
evaluate: {protocol: full, ks: [5], bootstrap: 0}
output: run
"""
    )
    cfg = load_config(tmp_path / "shop.yaml")
    path = train_experiment(cfg)
    art = artifact.Artifact.load(path)
    assert art.recipe == "multibehavior" and art.tasks == ["click", "buy"]
    test = art.metrics["test"]["metrics"]
    assert test["hr@5"] > 0.3  # held-out buys are clicked items: candidates, ranked first
    assert art.metrics["monitor"] == "buy/ndcg@5" and "buy/ndcg@5" in art.metrics["valid"]
    assert list(art.items["item"]) == art.scorer.items


def test_explanations_of_a_candidate_pair(trained: Any) -> None:
    scorer: MultiBehaviorScorer = trained.scorer
    blog = scorer.blog
    u = int(np.argmax(blog.user_counts("view")))
    user = blog.users.values[u]
    scores = scorer.score([user])["buy"][0]
    cand, other = int(np.argmax(scores)), int(np.argmin(scores))
    gates = scorer.gate_weights(user, cand)
    assert gates is not None and set(gates) == {"view", "cart", "buy"}
    assert all(len(g) == 2 and abs(sum(g) - 1) < 1e-4 for g in gates.values())

    def log_buy(pred: Any) -> torch.Tensor:
        return torch.log(pred["buy"])

    attributions, raw, value, base = scorer.feature_attributions(user, cand, log_buy, steps=32)
    assert "in_view" in attributions and raw["in_view"] in (0.0, 1.0)
    # the model's own probability of the pair (the served score may blend in the rule)
    plain = MultiBehaviorScorer(
        scorer.model, blog, replace(scorer.config, rule_weight=0.0), scorer.behaviors, "buy"
    )
    p_model = plain.score([user])["buy"][0][cand]
    assert value == pytest.approx(float(np.log(p_model)), abs=1e-4)  # the scored pair
    assert sum(attributions.values()) == pytest.approx(value - base, abs=0.05)
    # a fallback item has no model output to explain
    assert scorer.feature_attributions(user, other, log_buy) is None
    assert scorer.gate_weights(user, other) is None
    assert scorer.describe()["model"] == "mmoe"
