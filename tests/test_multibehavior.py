"""The multi-behavior recipe on tiny synthetic logs: no label leaks into its own features,
candidates and full-ranking scores are built as documented, and a model learns a planted
signal."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from shoprec.data.schema import Interactions
from shoprec.models import build_model
from shoprec.recipes.multibehavior import (
    AUX_WEIGHT,
    FLAGS_KNOWN,
    BehaviorLog,
    MultiBehaviorConfig,
    candidate_mask,
    feature_specs,
    full_ranking_metrics,
    history_baseline,
    history_baseline_scores,
    history_table,
    hold_out_one,
    make_evaluator,
    model_scores,
    numeric_features,
    pair_features,
    popularity_scores,
    task_specs,
    training_data,
)
from shoprec.train.loop import TrainConfig, fit

BEHAVIORS = ("view", "cart", "buy")


def _log(rows: list[tuple[str, str, str]]) -> BehaviorLog:
    frame = pl.DataFrame(rows, schema=["user", "item", "behavior"], orient="row")
    return BehaviorLog.from_interactions(Interactions.from_frame(frame), BEHAVIORS)


@pytest.fixture
def small() -> BehaviorLog:
    # users a, b, c; items p, q, r, s
    return _log(
        [
            ("a", "p", "view"),
            ("a", "q", "view"),
            ("a", "q", "cart"),
            ("a", "q", "buy"),
            ("a", "r", "buy"),
            ("b", "p", "view"),
            ("b", "p", "buy"),
            ("b", "s", "view"),
            ("c", "r", "view"),
            ("c", "r", "view"),  # a repeated event counts once
        ]
    )


def _synthetic(n_users: int = 60, n_items: int = 40, seed: int = 0) -> BehaviorLog:
    """Each user views 12 items and carts 4 of them; they buy exactly their carted items,
    plus one random viewed item for half the users."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        viewed = rng.choice(n_items, 12, replace=False)
        for i in viewed:
            rows.append((f"u{u}", f"i{i}", "view"))
        for i in viewed[:4]:
            rows.append((f"u{u}", f"i{i}", "cart"))
            rows.append((f"u{u}", f"i{i}", "buy"))
        if u % 2:
            rows.append((f"u{u}", f"i{viewed[8]}", "buy"))
    return _log(rows)


def test_log_counts_membership_and_csr(small: BehaviorLog) -> None:
    assert (small.n_users, small.n_items) == (3, 4)
    assert small.users.values == ("a", "b", "c") and small.items.values == ("p", "q", "r", "s")
    assert small.item_counts("view").tolist() == [2, 1, 1, 1]
    assert small.user_counts("buy").tolist() == [2, 1, 0]
    u, i = small.user_index(["a", "b", "zz"]), small.item_index(["q", "q", "q"])
    assert small.contains("cart", u[:2], i[:2]).tolist() == [True, False]
    assert u[2] == -1
    csr = small.csr("buy")
    assert csr.indptr.tolist() == [0, 2, 3, 3] and csr.indices.tolist() == [1, 2, 0]
    empty = small.without("cart", np.array([0]), np.array([1]))
    assert empty.contains("cart", np.array([0]), np.array([1])).tolist() == [False]
    assert len(small.keys["cart"]) == 1  # the original is unchanged


def test_hold_out_one_moves_one_target_item_per_eligible_user(small: BehaviorLog) -> None:
    fit_log, users, items = hold_out_one(small, "buy", seed=3)
    assert users.tolist() == [0]  # only user a has >= 2 buys
    assert items[0] in (1, 2)
    assert fit_log.user_counts("buy").tolist() == [1, 1, 0]
    assert not fit_log.contains("buy", users, items).any()
    assert (fit_log.keys["view"] == small.keys["view"]).all()  # other behaviors kept


def test_history_table_caps_and_pads(small: BehaviorLog) -> None:
    table = history_table(small, "view", max_len=1, seed=0)
    assert table.shape == (3 + 2, 1)
    assert table[:2].eq(0).all()  # padding and OOV user ids
    assert table[2 + 0, 0].item() in (2 + 0, 2 + 1)  # user a: p or q
    full = history_table(small, "view", max_len=10)
    assert full.shape == (5, 2)
    assert sorted(full[2].tolist()) == [2, 3] and full[4].tolist() == [4, 0]


def test_pair_features_are_leave_user_out(small: BehaviorLog) -> None:
    cfg = MultiBehaviorConfig()
    users, items = np.array([1, 0, 2]), np.array([0, 0, 0])  # (b, p), (a, p), (c, p)
    known = np.array([True, True, False])
    f = pair_features(small, users, items, cfg, known=known)
    assert set(numeric_features(cfg)) | {"user", "item"} == set(f)
    # item p is bought only by user b: b's own row sees no other buyer, a's row sees one
    assert f["item_buy"][0] == 0.0 and f["item_buy"][1] > 0.0
    assert f["in_view"].tolist() == [1.0, 1.0, 0.0]
    assert f[FLAGS_KNOWN].tolist() == [1.0, 1.0, 0.0]
    assert f["user"].tolist() == [3, 2, 4] and f["item"].tolist() == [2, 2, 2]


def test_training_data_labels_and_no_self_in_histories() -> None:
    blog = _synthetic()
    cfg = MultiBehaviorConfig(
        n_negatives=2, hide_fraction=0.5, touched_keep=0.5, item_id=True, histories=BEHAVIORS
    )
    data = training_data(blog, cfg)
    cols = data.columns
    u, i = cols["user"].numpy() - 2, cols["item"].numpy() - 2
    for b in BEHAVIORS:
        assert (cols[b].numpy() == blog.contains(b, u, i)).all()
    assert (cols[AUX_WEIGHT] + cols[FLAGS_KNOWN]).eq(1).all()
    assert cols["buy"].sum() == len(blog.keys["buy"])  # every target pair is kept
    hidden = cols[FLAGS_KNOWN] == 0
    assert cols["in_view"][hidden].eq(0).all()
    batch = next(data.batches(10_000, shuffle=True, generator=torch.Generator().manual_seed(0)))
    for b in BEHAVIORS:
        assert not (batch[f"hist_{b}"] == batch["item"].unsqueeze(1)).any()
    assert batch["hist_view"].gt(0).any()
    negatives = cols["view"] + cols["cart"] + cols["buy"] == 0
    assert negatives.any()


def test_candidates_scores_and_metrics(small: BehaviorLog) -> None:
    cfg = MultiBehaviorConfig(
        n_retrieved=1, user_id=True, item_id=True, histories=BEHAVIORS, attention=("buy",)
    )
    users = np.array([0, 1, 2])
    retrieval = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(3, 1)
    cand, excluded = candidate_mask(small, users, cfg, retrieval)
    # a: viewed p, q (q bought -> excluded), r bought -> excluded, + top retrieved s
    assert cand[0].tolist() == [True, False, False, True]
    assert excluded[0].tolist() == [False, True, True, False]
    assert cand[2].tolist() == [False, False, True, True]  # c: viewed r, + retrieved s

    torch.manual_seed(0)
    model = build_model("mmoe", feature_specs(small, cfg), task_specs(cfg), n_experts=2)
    scores = model_scores(model, small, users, cfg, lambda u: retrieval[: len(u)])
    assert scores.shape == (3, 4)
    assert ((scores >= 0) & (scores <= 1)).eq(cand).all()  # candidates above, others below
    assert cand[1].tolist() == [False, False, True, True]  # b: viewed s, + retrieved r
    assert -1 > scores[2, 1] > scores[2, 0]  # c's non-candidates q, p in retrieval order

    perfect = full_ranking_metrics(
        lambda u: torch.eye(4)[[3, 3, 3]][: len(u)],
        small,
        np.array([0, 1, 2, -1]),
        np.array([3, 3, 3, 3]),
        target="buy",
        ks=(1,),
    )
    assert perfect["hr@1"] == pytest.approx(0.75)  # the unknown user counts as a miss
    assert perfect["users"] == 4


def test_history_baseline_orders_carted_viewed_then_rest(small: BehaviorLog) -> None:
    cfg = MultiBehaviorConfig()
    s = history_baseline_scores(small, np.array([0]), cfg, tiebreak="popularity")
    # a: q carted+viewed (3.x) > p viewed (1.x) > r, s untouched (< 1)
    assert s[0, 1] > s[0, 0] > 1.0 > s[0, 2].item() >= s[0, 3].item()
    with pytest.raises(ValueError):
        history_baseline_scores(small, np.array([0]), cfg, tiebreak="nope")
    pop = popularity_scores(small, "buy")(np.array([0, 1]))
    assert pop.shape == (2, 4) and pop[0].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_history_baseline_is_built_once_and_scores_any_chunk(small: BehaviorLog) -> None:
    cfg = MultiBehaviorConfig()
    users = np.array([2, 0, 1])
    for tiebreak in ("rate", "popularity"):
        score = history_baseline(small, cfg, tiebreak)
        whole = score(users)
        assert torch.equal(whole, history_baseline_scores(small, users, cfg, tiebreak))
        assert torch.equal(score(users[1:]), whole[1:])  # a chunk is its rows of the whole
    with pytest.raises(ValueError):
        history_baseline(small, cfg, "nope")


def test_config_checks() -> None:
    with pytest.raises(ValueError):
        MultiBehaviorConfig(target="click")
    with pytest.raises(ValueError):
        MultiBehaviorConfig(attention=("click",))
    with pytest.raises(ValueError):
        MultiBehaviorConfig(hide_fraction=1.0)
    with pytest.raises(ValueError):
        MultiBehaviorConfig(histories=("view",), item_id=False)
    with pytest.raises(ValueError):
        MultiBehaviorConfig(histories=("view",), item_id=True, attention=("buy",))
    assert [t.name for t in task_specs(MultiBehaviorConfig(), multi_task=False)] == ["buy"]
    tasks = task_specs(MultiBehaviorConfig())
    assert [t.weight_key for t in tasks] == [AUX_WEIGHT, AUX_WEIGHT, None]


def test_model_learns_the_planted_signal() -> None:
    blog = _synthetic(n_users=80, n_items=40, seed=1)
    fit_log, users, items = hold_out_one(blog, "buy", seed=0)
    cfg = MultiBehaviorConfig()
    torch.manual_seed(0)
    model = build_model("mmoe", feature_specs(fit_log, cfg), task_specs(cfg), n_experts=2)
    evaluator = make_evaluator(fit_log, users, items, cfg, ks=(4,))
    assert set(evaluator(model)) == {"buy/hr@4", "buy/ndcg@4"}  # lower case, as everywhere
    assert set(make_evaluator(fit_log, users, items, cfg, ks=(4,), name="p")(model)) == {
        "p/hr@4",
        "p/ndcg@4",
    }
    before = evaluator(model)["buy/ndcg@4"]
    fit(
        model,
        training_data(fit_log, cfg),
        config=TrainConfig(epochs=10, batch_size=256, lr=1e-2, progress=False, threads=1),
    )
    after = evaluator(model)
    # the held-out buy is mostly the one carted item left unbought: it must come first
    assert after["buy/ndcg@4"] > max(before + 0.1, 0.9)
    base = full_ranking_metrics(
        lambda u: history_baseline_scores(fit_log, u, cfg),
        fit_log,
        users,
        items,
        target="buy",
        ks=(4,),
    )
    assert base["hr@4"] > 0.4
