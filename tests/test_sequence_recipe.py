"""The sequence recipe (HistoryEncoder) behind the front door, on planted shops: users cold in
the target served from their source history, live events, the artifact round trip, SASRec
rows in time order, the blend chosen on validation, and config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from shoprec import artifact, recipes
from shoprec.config import ConfigError, ExperimentConfig
from shoprec.data.schema import Dataset, Interactions
from shoprec.data.split import Split
from shoprec.models.features import CategoricalFeature, SequenceFeature, Task
from shoprec.models.history_encoder import HistoryEncoder, HistoryEncoderConfig
from shoprec.recipes.cross_domain import Pairs
from shoprec.recipes.sequence import SequenceScorer, bag_rows, history_rows

torch.set_num_threads(1)

GROUPS, PER_GROUP = 6, 5  # taste groups; items of each group per domain
MODEL = {"encoder": "mean", "n_negatives": 8, "history_dropout": 0.1, "dropout": 0.0}
TRAIN = {"epochs": 12, "batch_size": 64, "lr": 0.02, "patience": 12, "progress": False}


def config(**recipe: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": "seq", "data": {"dataset": "simulated"}, "split": {"kind": "given"},
        "recipe": {"name": "sequence", "dim": 16, "model": MODEL, **recipe}, "train": TRAIN,
    })  # fmt: skip


def frame(rows: list[tuple[Any, ...]], timed: bool = False) -> Interactions:
    cols = ["user", "item", "domain"] + (["timestamp"] if timed else [])
    df = pl.DataFrame(rows, schema=cols, orient="row").with_columns(pl.lit("buy").alias("behavior"))
    if timed:
        df = df.with_columns(pl.from_epoch("timestamp", time_unit="s"))
    return Interactions.from_frame(df)


@pytest.fixture(scope="module")
def shop() -> tuple[Dataset, Split, list[str]]:
    """Books and films; a user of group g buys g's items in both. Users ``cold*`` have books
    only; each user's test item is a film of their group."""
    rng = np.random.default_rng(0)
    rows, test, cold = [], [], []
    for g in range(GROUPS):
        for j in range(24):
            user = f"u{g}_{j}" if j < 20 else f"cold{g}_{j}"
            books = rng.choice(PER_GROUP, 3, replace=False) + g * PER_GROUP
            films = rng.choice(PER_GROUP, 4, replace=False) + g * PER_GROUP
            rows += [(user, f"b{b}", "books") for b in books]
            if j < 20:
                rows += [(user, f"f{f}", "films") for f in films[:3]]
            else:
                cold.append(user)
            test.append((user, f"f{films[3]}", "films"))
    split = Split(frame(rows), None, frame(test), "given")
    return Dataset("planted", frame(rows), test=frame(test)), split, cold


def fit(cfg: ExperimentConfig, ds: Dataset, split: Split) -> recipes.TrainingRun:
    return recipes.get("sequence")(cfg).fit(ds, split)


def group_of(name: str) -> int:
    return int(name.split("_")[0].lstrip("ucold"))


def top_in_group(scorer: SequenceScorer, users: list[str], k: int = 5, **kw: Any) -> float:
    """Share of the users' top-k target items that belong to their group."""
    top = np.argsort(-scorer.rank_scores(users, **kw), axis=1)[:, :k]
    items = np.asarray(scorer.items)[top]
    groups = np.vectorize(lambda x: int(x[1:]) // PER_GROUP)(items)
    return float((groups == np.array([group_of(u) for u in users])[:, None]).mean())


def test_history_rows_keep_the_newest_oldest_first() -> None:
    p = Pairs(np.array([1, 1, 1, 2]), np.array([5, 6, 7, 9]), np.zeros(4, dtype=np.int64))
    rows = history_rows(p, np.array([2, 0, 1, 0]), n_users=3, width=2)
    # user 1: order 0 -> item 6, 1 -> 7, 2 -> 5; the newest two, oldest first, left-padded
    np.testing.assert_array_equal(rows, [[0, 0], [7, 5], [0, 9], [0, 0]])


def test_joint_serves_users_cold_in_the_target(
    shop: tuple[Dataset, Split, list[str]], tmp_path: Path
) -> None:
    ds, split, cold = shop
    cfg = config(target="films", sources=["books"], method="joint", blend=[0.0, 0.5])
    run = fit(cfg, ds, split)
    scorer = run.scorer
    assert isinstance(scorer, SequenceScorer) and scorer.domain == "films"
    assert run.monitor == "buy/ndcg@10" and 0 < run.valid_score <= 1
    assert scorer.settings["blend"] in (0.0, 0.5)
    assert set(run.info["blend_tried"]) == {"0.0", "0.5"}
    # users with no film at all are ranked from their books: their group's films first
    assert top_in_group(scorer, cold) >= 0.7
    s = scorer.rank_scores(cold)
    assert (s > 0).all() and np.allclose(s.sum(1), 1.0, rtol=1e-4)
    # an unknown shopper is encoded from live events; without them, popularity
    events = pl.DataFrame({"user": ["new"] * 2, "item": ["b0", "b1"], "domain": ["books"] * 2,
                           "behavior": ["view"] * 2})  # fmt: skip
    live = scorer.rank_scores(["new"], events=events)
    none = scorer.rank_scores(["new"])
    assert not np.allclose(live, none)
    np.testing.assert_allclose(none[0], scorer._popularity, rtol=1e-6)
    top_live = np.asarray(scorer.items)[np.argsort(-live[0])[:5]]
    assert all(int(x[1:]) // PER_GROUP == 0 for x in top_live[:3])  # b0, b1: group 0
    # the artifact gives the same scores, live events included
    seen = pl.DataFrame({"user": ["x"], "item": [scorer.items[0]], "behavior": ["buy"]})
    artifact.save(tmp_path / "art", config=cfg, scorer=scorer,
                  items=pl.DataFrame({"item": scorer.items}), seen=seen,
                  metrics={"valid": run.valid})  # fmt: skip
    loaded = artifact.Artifact.load(tmp_path / "art").scorer
    assert isinstance(loaded, SequenceScorer) and loaded.settings == scorer.settings
    users = [*cold[:5], "u1_0", "nobody"]
    np.testing.assert_array_equal(loaded.rank_scores(users), scorer.rank_scores(users))
    np.testing.assert_array_equal(loaded.rank_scores(["new"], events=events), live)


def test_target_only_and_finetune_run(shop: tuple[Dataset, Split, list[str]]) -> None:
    ds, split, cold = shop
    base = fit(config(target="films"), ds, split)
    assert base.scorer.index.domains == ("films",)
    # a target-only model knows nothing of a film-less user: popularity
    np.testing.assert_allclose(base.scorer.rank_scores(cold[:1])[0], base.scorer._popularity)
    ft = fit(config(target="films", sources=["books"], method="finetune",
                    freeze=["item_embeddings"]), ds, split)  # fmt: skip
    assert ft.info["frozen"] == ["item_embeddings"] and ft.info["pretrain_best_epoch"] >= 1
    assert top_in_group(ft.scorer, cold) > 1.0 / GROUPS  # better than chance from the books


def test_sasrec_rows_follow_time() -> None:
    """One domain with timestamps: each user walks through their group's items in order; the
    next item is predictable from the last one only."""
    rng = np.random.default_rng(1)
    rows = []
    n_items = GROUPS * PER_GROUP
    for u in range(150):
        g, start = u % GROUPS, int(rng.integers(PER_GROUP))
        for step in range(5):
            item = g * PER_GROUP + (start + step) % PER_GROUP
            rows.append((f"u{u}", f"i{item:02d}", "all", 1000 * u + step))
    ds = Dataset("walks", frame(rows, timed=True))
    split = Split(frame(rows, timed=True), None, frame(rows[:1], timed=True), "given")
    cfg = config(max_history=4, model={**MODEL, "encoder": "sasrec", "n_heads": 2})
    run = fit(cfg, ds, split)
    scorer = run.scorer
    assert scorer.settings["sequential"] and run.info["valid_drawn_from_train"]
    assert scorer.domain is None and len(scorer.items) == n_items
    # a shopper whose last item is i(g*5 + 1) is next shown i(g*5 + 2) near the top
    hits = []
    for g in range(GROUPS):
        a, b = g * PER_GROUP, g * PER_GROUP + 1
        events = pl.DataFrame({"user": ["n", "n"], "item": [f"i{a:02d}", f"i{b:02d}"],
                               "behavior": ["view", "view"]})  # fmt: skip
        top = np.asarray(scorer.items)[np.argsort(-scorer.rank_scores(["n"], events=events)[0])]
        hits.append(f"i{b + 1:02d}" in top[:3])
    assert np.mean(hits) >= 0.5, hits


def test_bag_rows_one_per_user_and_domain() -> None:
    p = Pairs(np.array([1, 1, 1, 2]), np.array([5, 6, 7, 9]), np.array([0, 0, 1, 0]))
    hist = history_rows(p, np.arange(4), n_users=3, width=3)
    rows = bag_rows(p, np.arange(4), hist, n_users=3, width=2).columns
    np.testing.assert_array_equal(rows["targets"].numpy(), [[5, 6], [0, 9], [0, 7]])
    np.testing.assert_array_equal(rows["domain"].numpy(), [0, 0, 1])
    np.testing.assert_array_equal(rows["item"].numpy(), [6, 9, 7])
    np.testing.assert_array_equal(rows["history"].numpy(), hist[[1, 2, 1]])  # every domain


def bag_encoder(**fields: Any) -> HistoryEncoder:
    torch.manual_seed(0)
    features = [CategoricalFeature("item", 6, 4),
                SequenceFeature("history", 6, 4, "mean", embedding_of="item")]  # fmt: skip
    config = HistoryEncoderConfig(domain_sizes=(3, 2), encoder="mean", **fields)
    return HistoryEncoder(features, [Task("s"), Task("t")], config)


def test_full_softmax_bag_loss_is_the_multinomial_likelihood() -> None:
    """loss: full over a bag = mean over rows of -sum log softmax of the bag's items (per
    domain); bag_loss: hidden counts only what the encoder did not read."""
    model = bag_encoder(loss="full", history_dropout=0.0, tied=False)
    model.eval()  # no dropout: every history item is read
    batch = {"history": torch.tensor([[1, 2], [0, 4]]), "targets": torch.tensor([[1, 3], [0, 5]]),
             "item": torch.tensor([3, 5]), "domain": torch.tensor([0, 1])}  # fmt: skip
    losses = model.task_losses(model(batch), batch)
    with torch.no_grad():
        logp0 = torch.log_softmax(model.score_domain(model.user_vectors(batch, 0)[:1], 0), 1)
        logp1 = torch.log_softmax(model.score_domain(model.user_vectors(batch, 1)[1:], 1), 1)
    torch.testing.assert_close(losses["s"], -(logp0[0, 0] + logp0[0, 2]))
    torch.testing.assert_close(losses["t"], -logp1[0, 1])
    assert model.output_embedding is not None  # untied: scoring reads the second table
    torch.testing.assert_close(
        model.item_vectors(torch.tensor([2]), 0), model.output_embedding(torch.tensor([2]))
    )  # zero-init heads
    hidden = bag_encoder(loss="full", history_dropout=0.0, bag_loss="hidden")
    hidden.eval()
    got = hidden.task_losses(hidden(batch), batch)
    with torch.no_grad():
        lp = torch.log_softmax(hidden.score_domain(hidden.user_vectors(batch, 0)[:1], 0), 1)
    torch.testing.assert_close(got["s"], -lp[0, 2])  # item 1 was read: not counted
    assert float(got["t"].detach()) > 0  # item 5 was not in the history
    # sampled softmax over bags trains too (one sampled softmax per row and bag item)
    sampled = bag_encoder(loss="sampled", n_negatives=2)
    total = sum(sampled.task_losses(sampled(batch), batch).values())
    total.backward()
    assert torch.isfinite(total) and sampled.item_embedding.weight.grad is not None


def test_bags_with_full_softmax_and_svd_init_rank_the_group(
    shop: tuple[Dataset, Split, list[str]],
) -> None:
    """The denoising-autoencoder setting (bags, full softmax, heavy input dropout, item
    tables from co-occurrence factors) serves film-less users from their books."""
    ds, split, cold = shop
    model = {**MODEL, "loss": "full", "history_dropout": 0.5, "temperature": 1.0,
             "bag_loss": "hidden", "tied": False, "domain_dropout": 0.3}  # fmt: skip
    cfg = config(target="films", sources=["books"], method="joint", rows="bags", init="svd",
                 model=model)  # fmt: skip
    run = fit(cfg, ds, split)
    assert top_in_group(run.scorer, cold) >= 0.7
    assert run.scorer.settings["network"]["loss"] == "full"


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"method": "joint"}, "needs 'sources'"),
        ({"target": "films", "sources": ["films"]}, "overlap"),
        ({"sources": ["books"]}, "needs a 'target'"),
        ({"freeze": ["encoder"]}, "freeze' goes with method: finetune"),
        ({"blend": [1.5]}, "blend"),
        ({"model": {"encoder": "rnn"}}, "encoder"),
        ({"model": {"domain_sizes": [3]}}, "domain_sizes"),
        ({"model": {"loss": "nce"}}, "loss"),
        ({"rows": "bags", "model": {"encoder": "sasrec"}}, "bags"),
        ({"init": "pca"}, "init"),
    ],
)
def test_config_errors_name_the_key(recipe: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(
            {"data": {"dataset": "simulated"}, "recipe": {"name": "sequence", **recipe}}
        )
