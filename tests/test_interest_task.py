"""The multi-class interest task (the category of the user's next purchase) asked for from a
config in the multibehavior recipe: trained on the README's example shop, its head's class
probabilities, its labels read from the training window only, the scorer's per-item
``interest`` score through an artifact and the ``buy*interest`` fusion, and the one-paragraph
error on a catalog without categories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from shoprec.config import ConfigError, ExperimentConfig
from shoprec.experiment import load_dataset, make_split
from shoprec.recipes.multibehavior import (
    INTEREST_LABEL,
    INTEREST_WEIGHT,
    UNKNOWN_CLASS,
    MultiBehaviorRecipe,
    MultiBehaviorScorer,
    interest_labels,
    item_classes,
    training_data,
    with_classes,
)
from shoprec.train.loop import predict

torch.set_num_threads(1)

SHOP = Path(__file__).resolve().parents[1] / "examples" / "my_shop"
TASKS = ["view", "cart", "buy", {"name": "interest", "kind": "multiclass"}]


def _raw(**changes: Any) -> dict[str, Any]:
    """The README walkthrough's config, on the multibehavior recipe, with the interest task."""
    raw = yaml.safe_load((SHOP / "shop.yaml").read_text())
    raw.pop("output")
    raw["recipe"] = {"name": "multibehavior"}
    raw["tasks"] = TASKS
    raw["train"].update(epochs=2, threads=1)
    raw["serve"] = {"fusion": "buy"}
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def shop() -> tuple[ExperimentConfig, Any, Any]:
    cfg = ExperimentConfig.from_dict(_raw(), base=SHOP)
    ds = load_dataset(cfg.data)
    return cfg, ds, make_split(ds, cfg.split, "buy")


@pytest.fixture(scope="module")
def trained(shop: tuple[ExperimentConfig, Any, Any]) -> Any:
    cfg, ds, split = shop
    return MultiBehaviorRecipe(cfg).fit(ds, split)


def test_head_is_multiclass_over_the_catalog_categories(
    shop: tuple[ExperimentConfig, Any, Any], trained: Any
) -> None:
    _, ds, _ = shop
    scorer: MultiBehaviorScorer = trained.scorer
    categories = sorted(ds.catalog.df["category"].drop_nulls().unique().to_list())
    head = {t.name: t for t in scorer.model.tasks}["interest"]
    assert head.kind == "multiclass" and head.n_classes == len(categories) + 1
    assert scorer.tasks == ["view", "cart", "buy", "interest"] and scorer.target == "buy"
    assert trained.monitor == "buy/ndcg@10"  # ranking is still selected on the buy task
    data = training_data(scorer.blog, scorer.config)
    probs = predict(scorer.model, data, 4096)["interest"].numpy()
    assert probs.shape == (len(data), head.n_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs > 0).all()


def test_interest_score_is_the_user_distribution_at_each_item_category(trained: Any) -> None:
    scorer: MultiBehaviorScorer = trained.scorer
    classes = scorer.blog.classes
    assert classes is not None and classes.names[-1] == UNKNOWN_CLASS
    users = [*scorer.blog.users.values[:20], "never-seen-user"]
    s = scorer.score(users)
    assert set(s) == {"view", "cart", "buy", "interest"}
    interest = s["interest"]
    assert interest.shape == (len(users), scorer.n_items) and (interest > 0).all()
    # one value per (user, class); the classes of a user sum to 1
    per_class = np.zeros((len(users), classes.n_classes))
    per_class[:, classes.of_item] = interest
    present = np.unique(classes.of_item)
    for c in present:
        cols = classes.of_item == c
        assert np.allclose(interest[:, cols], interest[:, cols][:, :1])
    # the classes no item has (e.g. unknown) take the rest of each user's probability
    assert (per_class[:, present].sum(axis=1) <= 1 + 1e-5).all()
    missing = classes.prior[np.setdiff1d(np.arange(classes.n_classes), present)]
    assert per_class[-1, present].sum() + missing.sum() == pytest.approx(1.0, abs=1e-5)
    # a user the scorer never saw gets the training labels' class prior
    np.testing.assert_allclose(per_class[-1, present], classes.prior[present], rtol=1e-5)
    # the ranking task is untouched by the interest task's presence
    assert np.array_equal(scorer.rank_scores(users), s["buy"])


def test_label_reads_the_training_window_only(shop: tuple[ExperimentConfig, Any, Any]) -> None:
    cfg, ds, split = shop
    recipe = MultiBehaviorRecipe(cfg)
    config = recipe.recipe_config()
    fit_log, full_log, _, _ = recipe.logs(ds, split, config)
    names, of_item = item_classes(ds.catalog.df, fit_log.items)
    labelled = with_classes(fit_log, names, of_item, "buy")
    got = interest_labels(labelled, "buy")
    # the same labels by hand, from the train part's purchases only: most bought category,
    # ties to the alphabetically first
    cat = ds.catalog.df.select("item", "category")
    buys = split.train.df.filter(pl.col("behavior") == "buy").unique(["user", "item"])
    modal = (
        buys.join(cat, on="item", how="left")
        .group_by("user", "category")
        .len()
        .sort(["user", "len", "category"], descending=[False, True, False])
        .group_by("user", maintain_order=True)
        .first()
    )
    expected = np.full(fit_log.n_users, -1)
    expected[fit_log.user_index(modal["user"])] = [names.index(c) for c in modal["category"]]
    assert np.array_equal(got, expected) and (got >= 0).sum() == modal.height
    # users whose purchases are all held out (valid or test) have no label in training
    held = pl.concat([split.valid.df, split.test.df]).filter(pl.col("behavior") == "buy")
    only_held = set(held["user"]) - set(buys["user"])
    assert only_held, "the fixture should have users who first buy after the training window"
    idx = fit_log.user_index(pl.Series(sorted(only_held)))
    assert (got[idx[idx >= 0]] == -1).all()
    # and the training rows carry exactly those labels, masked where there is none
    data = training_data(labelled, config)
    rows_user = data.columns["user"].numpy() - 2
    label = data.columns[INTEREST_LABEL].numpy()
    weight = data.columns[INTEREST_WEIGHT].numpy()
    assert np.array_equal(weight > 0, got[rows_user] >= 0)
    assert np.array_equal(label[weight > 0], got[rows_user][weight > 0])
    # the refit's labels add the valid part's purchases, never the test part's
    full = interest_labels(with_classes(full_log, names, of_item, "buy"), "buy")
    test_only = set(split.test.df.filter(pl.col("behavior") == "buy")["user"]) - set(
        pl.concat([split.train.df, split.valid.df]).filter(pl.col("behavior") == "buy")["user"]
    )
    idx = full_log.user_index(pl.Series(sorted(test_only)))
    assert (full[idx[idx >= 0]] == -1).all()


def test_artifact_round_trip_and_buy_times_interest_fusion(
    shop: tuple[ExperimentConfig, Any, Any], trained: Any, tmp_path: Path
) -> None:
    from shoprec import artifact
    from shoprec.recommend.recommender import Recommender

    cfg, ds, split = shop
    scorer: MultiBehaviorScorer = trained.scorer
    items = pl.DataFrame({"item": scorer.items}).join(ds.catalog.df, on="item", how="left")
    path = artifact.save(
        tmp_path / "art",
        config=cfg,
        scorer=scorer,
        items=items,
        seen=split.train.df,
        metrics={"valid": trained.valid},
    )
    art = artifact.Artifact.load(path)
    users = list(scorer.blog.users.values[:10])
    expected = scorer.score(users)
    got = art.scorer.score(users)
    assert art.tasks == scorer.tasks
    for t in scorer.tasks:
        assert np.array_equal(got[t], expected[t])
    # served with fusion buy*interest: each listed item's fused score is the product
    rec = Recommender.from_artifact(art)
    user = max(users, key=lambda u: int((expected["buy"][users.index(u)] > 1e-6).sum()))
    ranked = rec.rank(user, 10, fusion="buy*interest").items
    assert ranked
    for r in ranked:
        p = r.predictions
        assert r.fused == pytest.approx(p["buy"] * p["interest"], rel=1e-4)
        klass = items.filter(pl.col("item") == r.item)["category"][0]
        assert p["interest"] > 0 and klass is not None


def test_catalog_without_categories_is_a_clear_error(tmp_path: Path) -> None:
    pl.read_csv(SHOP / "catalog.csv").drop("category").write_csv(tmp_path / "catalog.csv")
    raw = _raw()
    raw["data"]["events"]["path"] = str(SHOP / "events.csv")
    raw["data"]["catalog"]["path"] = str(tmp_path / "catalog.csv")
    cfg = ExperimentConfig.from_dict(raw, base=tmp_path)
    ds = load_dataset(cfg.data)
    with pytest.raises(ConfigError, match=r"catalog column 'category'") as err:
        MultiBehaviorRecipe(cfg).fit(ds, make_split(ds, cfg.split, "buy"))
    assert "\n" not in str(err.value) and "remove the task" in str(err.value)
    # a stated n_classes must match the catalog's categories + 1
    bad = ExperimentConfig.from_dict(
        _raw(tasks=[*TASKS[:3], {"name": "interest", "kind": "multiclass", "n_classes": 2}]),
        base=SHOP,
    )
    ds = load_dataset(bad.data)
    with pytest.raises(ConfigError, match="n_classes 2 does not match"):
        MultiBehaviorRecipe(bad).fit(ds, make_split(ds, bad.split, "buy"))
