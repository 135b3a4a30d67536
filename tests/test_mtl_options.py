"""The multibehavior recipe's options that make the auxiliary tasks carry what buy lacks and
keep the ranking at or above the own-carted rule (issue 13): ``hide_mode`` changes what each
task sees and where it learns; ``rule_blend`` mixes the rule into the candidates' score with a
weight picked on validation, weight 1 ranking exactly as the rule."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from shoprec.config import ConfigError, ExperimentConfig
from shoprec.data.schema import Interactions
from shoprec.data.simulate import simulate_shop
from shoprec.data.split import time_split
from shoprec.models import build_model
from shoprec.recipes.multibehavior import (
    AUX_WEIGHT,
    FLAGS_KNOWN,
    TARGET_WEIGHT,
    BehaviorLog,
    MultiBehaviorConfig,
    MultiBehaviorRecipe,
    MultiBehaviorScorer,
    aux_weight_key,
    feature_specs,
    full_ranking_metrics,
    history_baseline,
    model_scores,
    numeric_features,
    paired_gain,
    pick_blend_weight,
    rule_blend_metrics,
    task_specs,
    training_data,
)

torch.set_num_threads(1)
BEHAVIORS = ("view", "cart", "buy")


def _log(rows: list[tuple[str, str, str]]) -> BehaviorLog:
    frame = pl.DataFrame(rows, schema=["user", "item", "behavior"], orient="row")
    return BehaviorLog.from_interactions(Interactions.from_frame(frame), BEHAVIORS)


def _shop_log(n_users: int = 60, n_items: int = 12, seed: int = 0) -> BehaviorLog:
    """Users view about half the items, cart some of the viewed ones, buy some carted ones."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in range(n_items):
            if rng.random() < 0.5:
                rows.append((f"u{u}", f"i{i}", "view"))
                if rng.random() < 0.4:
                    rows.append((f"u{u}", f"i{i}", "cart"))
                    if rng.random() < 0.5:
                        rows.append((f"u{u}", f"i{i}", "buy"))
        rows.append((f"u{u}", f"i{rng.integers(n_items)}", "buy"))
    return _log(rows)


def test_hide_mode_own_hides_each_flag_on_its_own_and_masks_its_task() -> None:
    blog = _shop_log()
    cfg = MultiBehaviorConfig(hide_mode="own", hide_fraction=0.5, n_negatives=1)
    assert numeric_features(cfg)[:4] == ["in_view", "in_cart", "known_view", "known_cart"]
    assert FLAGS_KNOWN not in numeric_features(cfg)
    data = training_data(blog, cfg).columns
    for b in ("view", "cart"):
        key = aux_weight_key(cfg, b)
        assert key == f"{AUX_WEIGHT}_{b}" and key in data
        hidden = data[key] == 1
        assert 0.35 < float(hidden.float().mean()) < 0.65
        assert torch.equal(data[f"known_{b}"], 1 - data[key])  # the task learns where hidden
        assert float(data[f"in_{b}"][hidden].abs().sum()) == 0  # its own flag is hidden there
        assert float(data[f"in_{b}"][~hidden].sum()) > 0  # and shown elsewhere
    # where only the cart flag is hidden the view flag still says what the user viewed:
    # the cart task learns "carted given viewed"
    only_cart = (data[aux_weight_key(cfg, "cart")] == 1) & (data[aux_weight_key(cfg, "view")] == 0)
    assert float(data["in_view"][only_cart].sum()) > 0
    # the two flags are hidden on independent draws, not on the same rows
    assert not torch.equal(data[aux_weight_key(cfg, "view")], data[aux_weight_key(cfg, "cart")])
    tasks = {t.name: t.weight_key for t in task_specs(cfg)}
    assert tasks == {"view": f"{AUX_WEIGHT}_view", "cart": f"{AUX_WEIGHT}_cart", "buy": None}
    rows = training_data(blog, MultiBehaviorConfig(hide_mode="rows", n_negatives=1)).columns
    assert AUX_WEIGHT in rows and FLAGS_KNOWN in rows and "known_view" not in rows
    with pytest.raises(ValueError, match="hide_mode"):
        MultiBehaviorConfig(hide_mode="sometimes")


def test_hide_mode_copies_keeps_every_row_shown_for_the_target() -> None:
    blog = _shop_log()
    rows = training_data(blog, MultiBehaviorConfig(hide_mode="rows", n_negatives=1)).columns
    cfg = MultiBehaviorConfig(hide_mode="copies", hide_fraction=0.5, n_negatives=1)
    assert numeric_features(cfg) == numeric_features(MultiBehaviorConfig())
    data = training_data(blog, cfg).columns
    n = len(rows["buy"])  # the same touched pairs and negatives, then the hidden copies
    target = data[TARGET_WEIGHT] == 1
    assert bool(target[:n].all()) and not bool(target[n:].any())
    assert 0.35 < (len(target) - n) / n < 0.65
    assert torch.equal(data[AUX_WEIGHT], 1 - data[TARGET_WEIGHT])  # auxiliary: copies only
    assert torch.equal(data[FLAGS_KNOWN], data[TARGET_WEIGHT])
    assert float(data["in_view"][n:].abs().sum()) == 0 and float(data["in_cart"][n:].sum()) == 0
    # the target's rows carry every flag (the view flag is the view label), as single-task's
    assert torch.equal(data["in_view"][:n], data["view"][:n])
    tasks = {t.name: t.weight_key for t in task_specs(cfg)}
    assert tasks == {"view": AUX_WEIGHT, "cart": AUX_WEIGHT, "buy": TARGET_WEIGHT}
    assert [t.weight_key for t in task_specs(cfg, multi_task=False)] == [TARGET_WEIGHT]
    assert TARGET_WEIGHT not in rows


def test_scorer_hides_only_the_tasks_own_flag_in_hide_mode_own() -> None:
    blog = _shop_log()
    cfg = MultiBehaviorConfig(hide_mode="own", n_negatives=1)
    torch.manual_seed(0)
    model = build_model("mmoe", feature_specs(blog, cfg), task_specs(cfg), n_experts=2)
    seen: list[dict[str, torch.Tensor]] = []
    forward = model.forward

    def spy(batch: dict[str, torch.Tensor]) -> Any:
        seen.append({k: v.clone() for k, v in batch.items() if k.startswith(("in_", "known_"))})
        return forward(batch)

    model.forward = spy  # type: ignore[method-assign]
    scorer = MultiBehaviorScorer(model, blog, cfg, {b: b for b in BEHAVIORS}, "buy")
    scorer.score([blog.users.values[0]])
    # passes: buy (all shown), view (view hidden), cart (cart hidden)
    assert len(seen) == 3
    target, view, cart = seen
    assert float(target["known_view"].min()) == 1 and float(target["known_cart"].min()) == 1
    assert float(view["known_view"].max()) == 0 and float(view["known_cart"].min()) == 1
    assert float(cart["known_cart"].max()) == 0 and float(cart["known_view"].min()) == 1
    assert float(cart["in_view"].sum()) > 0  # the cart task sees what the user viewed


def test_rule_blend_weight_one_ranks_as_the_rule_and_zero_as_the_model() -> None:
    blog = _shop_log(seed=1)
    cfg = MultiBehaviorConfig(n_negatives=1)
    torch.manual_seed(0)
    model = build_model("mmoe", feature_specs(blog, cfg), task_specs(cfg), n_experts=2)
    users = np.arange(blog.n_users)
    # held-out targets: for each user its viewed, not bought item with the lowest index
    csr_view, csr_buy = blog.csr("view"), blog.csr("buy")
    targets = np.array(
        [
            next((i for i in csr_view[[u]].indices if i not in csr_buy[[u]].indices), -1)
            for u in users
        ]
    )
    keep = targets >= 0
    users, targets = users[keep], targets[keep]
    by_w = rule_blend_metrics(model, blog, users, targets, cfg, (0.0, 0.5, 1.0), ks=(3, 5))
    rule = full_ranking_metrics(
        history_baseline(blog, cfg, "rate"), blog, users, targets, target="buy", ks=(3, 5)
    )
    alone = full_ranking_metrics(
        lambda uu: model_scores(model, blog, uu, cfg), blog, users, targets, target="buy", ks=(3, 5)
    )
    for k in ("hr@3", "hr@5", "ndcg@5"):  # every target is a candidate: the tails never matter
        assert by_w[1.0][k] == pytest.approx(rule[k], abs=1e-9)
        assert by_w[0.0][k] == pytest.approx(alone[k], abs=1e-9)
    blended = full_ranking_metrics(
        lambda uu: model_scores(model, blog, uu, replace(cfg, rule_weight=0.5)),
        blog,
        users,
        targets,
        target="buy",
        ks=(3, 5),
    )
    assert blended["ndcg@5"] == pytest.approx(by_w[0.5]["ndcg@5"], abs=1e-9)
    per_user: dict[float, dict[str, np.ndarray]] = {}
    again = rule_blend_metrics(
        model, blog, users, targets, cfg, (0.0, 1.0), ks=(3, 5), per_user=per_user
    )
    for w in (0.0, 1.0):  # per-user values, same users in the same order, average to the means
        assert per_user[w]["hr@3"].shape == (len(users),)
        assert per_user[w]["ndcg@5"].mean() == pytest.approx(again[w]["ndcg@5"], abs=1e-9)
    with pytest.raises(ValueError, match="rule_weight"):
        MultiBehaviorConfig(rule_weight=1.5)


def test_paired_gain_is_the_mean_and_standard_error_of_the_difference() -> None:
    a, b = np.array([1.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 0.0])
    gain, se = paired_gain(a, b)  # differences 1, 0, 0, 1
    assert gain == pytest.approx(0.5)
    assert se == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)


def test_the_one_se_pick_keeps_the_rule_unless_a_weight_beats_it_beyond_chance() -> None:
    rng = np.random.default_rng(0)
    rule = (rng.random(400) < 0.3).astype(float)
    flip = rng.random(400)
    # model alone: 3 users more than the rule of 400, with 40 discordant users: within 1 SE
    near = rule.copy()
    near[np.flatnonzero((rule == 1) & (flip < 0.2))[:18]] = 0
    near[np.flatnonzero((rule == 0) & (flip < 0.2))[:21]] = 1
    assert near.sum() - rule.sum() == 3
    gain, se = paired_gain(near, rule)
    assert 0 < gain <= se
    assert pick_blend_weight({0.0: near, 1.0: rule}) == 1.0  # the rule stays
    # ... although a pick by the best mean would leave it:
    assert max((0.0, 1.0), key=lambda w: {0.0: near, 1.0: rule}[w].mean()) == 0.0
    # model alone far ahead of the rule: picked; a blend within 1 SE of it does not win
    far = rule.copy()
    far[np.flatnonzero(rule == 0)[:60]] = 1
    blend = far.copy()  # 4 users gained, 2 lost: +2 of 400, within one standard error
    blend[np.flatnonzero(far == 0)[:4]] = 1
    blend[np.flatnonzero(far == 1)[:2]] = 0
    assert pick_blend_weight({0.0: far, 0.5: blend, 1.0: rule}) == 0.0
    # a blend beyond 1 SE of the model alone (and of the rule) is picked
    better = far.copy()
    better[np.flatnonzero(far == 0)[:40]] = 1
    assert pick_blend_weight({0.0: far, 0.5: better, 1.0: rule}) == 0.5
    # a blend beyond the rule where the model alone is not: the blend, not the model
    assert pick_blend_weight({0.0: near, 0.5: better, 1.0: rule}) == 0.5
    # without the rule among the weights, only the model-alone step applies
    assert pick_blend_weight({0.0: far, 0.5: blend}) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        pick_blend_weight({})


def _config(**recipe: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "data": {"dataset": "simulated"},
            "split": {"kind": "time", "test_days": 14, "valid_days": 14},
            "recipe": {
                "name": "multibehavior",
                "n_negatives": 1,
                "retrain_on_full": False,
                **recipe,
            },
            "tasks": ["view", "cart", "buy"],
            "model": {"name": "mmoe", "embedding_dim": 8, "config": {"n_experts": 2}},
            "train": {"epochs": 1, "batch_size": 512, "progress": False, "threads": 1},
            "evaluate": {"protocol": "full", "ks": [10]},
        }
    )


def test_the_recipe_picks_a_blend_never_below_the_rule_on_validation() -> None:
    ds = simulate_shop(n_events=8_000, n_users=250, n_items=80, seed=3).dataset
    split = time_split(ds.interactions, test_days=14, valid_days=14)
    run = MultiBehaviorRecipe(_config(rule_weights=[0.0, 0.5, 1.0])).fit(ds, split)
    picked = run.info["rule_weight"]
    valid = run.info["rule_blend_valid"]
    assert picked in (0.0, 0.5, 1.0) and set(valid) == {0.0, 0.5, 1.0}
    assert run.info["rule_pick"] == "one_se"  # the default
    gain, se = run.info["rule_blend_gain_over_rule"][picked]
    assert picked == 1.0 or gain > se  # the rule unless beaten beyond one standard error
    assert run.scorer.config.rule_weight == picked  # what the artifact serves
    best = MultiBehaviorRecipe(_config(rule_weights=[0.0, 0.5, 1.0], rule_pick="best")).fit(
        ds, split
    )
    valid = best.info["rule_blend_valid"]
    assert valid[best.info["rule_weight"]]["ndcg@10"] >= valid[1.0]["ndcg@10"]  # 1.0: the rule
    assert valid[best.info["rule_weight"]]["ndcg@10"] == max(v["ndcg@10"] for v in valid.values())
    off = MultiBehaviorRecipe(_config(rule_blend=False)).fit(ds, split)
    assert off.scorer.config.rule_weight == 0.0 and "rule_weight" not in off.info


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"rule_weights": [0.0, 1.5]}, "rule_weights"),
        ({"rule_weights": []}, "rule_weights"),
        ({"hide_mode": "sometimes"}, "hide_mode"),
        ({"rule_pick": "luck"}, "rule_pick"),
    ],
)
def test_bad_option_values_are_refused(recipe: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**recipe)


def test_esmm_funnel_coverage_warns_when_most_conversions_skip_the_click(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = [(f"u{u}", f"i{i}", "view") for u in range(4) for i in range(3)]
    rows += [(f"u{u}", "i0", "buy") for u in range(4)]  # every buy viewed ...
    rows += [("u0", "i0", "cart"), ("u1", "i1", "cart")]  # ... one of four carted
    blog = _log(rows)
    cfg = _config().with_values(
        {"tasks": ["cart", "buy"], "model.name": "esmm", "model.config": {"tower_dims": [8]}}
    )
    recipe = MultiBehaviorRecipe(cfg)
    config = recipe.recipe_config()
    model = build_model("esmm", feature_specs(blog, config), recipe.task_specs(config))
    with caplog.at_level("WARNING", logger="shoprec.recipes.multibehavior"):
        funnel = recipe._funnel_coverage(model, blog)
    assert funnel == {"click": "cart", "conversion": "buy", "share": 0.25}
    assert "only 25% of the 'buy' pairs have 'cart'" in caplog.text
    view = MultiBehaviorRecipe(cfg.with_values({"tasks": ["view", "buy"]}))
    vmodel = build_model("esmm", feature_specs(blog, config), view.task_specs(config))
    caplog.clear()
    with caplog.at_level("WARNING", logger="shoprec.recipes.multibehavior"):
        assert view._funnel_coverage(vmodel, blog)["share"] == 1.0  # type: ignore[index]
    assert caplog.text == ""
    mmoe = build_model("mmoe", feature_specs(blog, config), task_specs(config), n_experts=2)
    assert recipe._funnel_coverage(mmoe, blog) is None
