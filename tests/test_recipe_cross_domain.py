"""The cross_domain recipe behind the front door: every method through ``Recipe.fit``, the
artifact round trip, cold-in-the-target users, live events, and clear config errors."""

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
from shoprec.data.simulate import simulate_shop
from shoprec.data.split import Split, cold_user_split, given_split
from shoprec.errors import DataError
from shoprec.evaluate import metrics
from shoprec.recipes.cross_domain import CrossDomainScorer

torch.set_num_threads(1)

SOURCE, TARGET = "market_0", "market_1"
TRAIN = {"epochs": 3, "batch_size": 128, "lr": 0.01, "progress": False}
SETTINGS: dict[str, dict[str, Any]] = {
    "target_only": {"dim": 8, "model": {"history_dropout": 0.5, "use_user_id": False}},
    "finetune": {"dim": 8, "freeze": ["item_embeddings"]},
    "joint": {"dim": 8, "lambda": 2.0, "model": {"use_user_id": False}},
    "experts": {"dim": 8, "model": {"expert_dims": [16]}},
    "neighbours": {"neighbours": {"shrink": 5, "top_k": 10}},
}


def config(
    source: str | list[str] = SOURCE, target: str = TARGET, **recipe: Any
) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "name": "cd",
            "data": {"dataset": "simulated"},
            "split": {"kind": "given"},
            "recipe": {"name": "cross_domain", "source": source, "target": target, **recipe},
            "train": TRAIN,
        }
    )


def fit(cfg: ExperimentConfig, ds: Dataset, split: Split) -> recipes.TrainingRun:
    return recipes.get("cross_domain")(cfg).fit(ds, split)


@pytest.fixture(scope="module")
def shop() -> tuple[Dataset, Split]:
    """The simulated two-market shop; one random target-market item of each user with three
    or more is the test, and each user keeps at most two target items for training."""
    ds = simulate_shop(
        n_users=600, n_items=150, n_markets=2, n_events=15_000,
        source_market_share=0.8, shared_user_share=0.6, seed=1,
    ).dataset  # fmt: skip
    df = ds.interactions.df.unique(["user", "item", "domain"], maintain_order=True)
    rng = np.random.default_rng(0)
    df = df.with_columns(pl.Series("_r", rng.random(df.height)))
    target = df.filter(pl.col("domain") == TARGET)
    many = target.group_by("user").len().filter(pl.col("len") >= 3)["user"]
    test = (
        target.filter(pl.col("user").is_in(many.implode()))
        .sort("_r")
        .group_by("user", maintain_order=True)
        .first()
    )
    train = df.join(test, on=["user", "item", "domain"], how="anti")
    # A sparse target market: each user keeps at most two target training items.
    train = train.sort("_r").filter(
        (pl.col("domain") == SOURCE) | (pl.int_range(pl.len()).over("user", "domain") < 2)
    )
    return ds, Split(Interactions(train.drop("_r")), None, Interactions(test.drop("_r")), "given")


def tiny() -> Dataset:
    """Books (source) and films (target): taste group A buys b0-b2 and f0-f2, the bigger group
    B b3-b5 and f3-f5 (so B's films are the popular ones). ``coldA`` / ``coldB`` have books
    only; the release's test holds one more film of each warm user."""
    rows, test = [], []
    rng = np.random.default_rng(3)
    for g, n in (("A", 9), ("B", 30)):
        base = 0 if g == "A" else 3
        for x in range(n):
            user = f"{g}{x}"
            for j in rng.permutation(3)[:2]:
                rows.append((user, f"b{base + j}", "books"))
            films = rng.permutation(3)
            rows.append((user, f"f{base + films[0]}", "films"))
            rows.append((user, f"f{base + films[1]}", "films"))
            test.append((user, f"f{base + films[2]}", "films"))
        rows.append((f"cold{g}", f"b{base}", "books"))
        rows.append((f"cold{g}", f"b{base + 1}", "books"))

    def frame(r: list[tuple[str, str, str]]) -> Interactions:
        df = pl.DataFrame(r, schema=["user", "item", "domain"], orient="row")
        return Interactions.from_frame(df.with_columns(pl.lit("buy").alias("behavior")))

    return Dataset("tiny", frame(rows), test=frame(test))


def save_and_load(tmp: Path, cfg: ExperimentConfig, run: recipes.TrainingRun) -> CrossDomainScorer:
    scorer = run.scorer
    seen = pl.DataFrame({"user": ["x"], "item": [scorer.items[0]], "behavior": ["buy"]})
    artifact.save(
        tmp / "art", config=cfg, scorer=scorer, items=pl.DataFrame({"item": scorer.items}),
        seen=seen, metrics={"valid": run.valid},
    )  # fmt: skip
    loaded = artifact.Artifact.load(tmp / "art").scorer
    assert isinstance(loaded, CrossDomainScorer)
    return loaded


@pytest.mark.parametrize("method", ["target_only", "finetune", "joint", "experts", "neighbours"])
def test_every_method_runs_saves_and_loads(
    method: str, shop: tuple[Dataset, Split], tmp_path: Path
) -> None:
    ds, split = shop
    cfg = config(method=method, **SETTINGS[method])
    run = fit(cfg, ds, split)
    scorer = run.scorer
    assert run.monitor == "buy/ndcg@10" and 0 < run.valid_score <= run.valid["buy/hr@10"] <= 1
    assert run.valid["users"] > 50
    if method != "neighbours":
        assert run.best_epoch in (1, 2, 3) and len(run.history) >= 1
    assert scorer.items == sorted(
        split.train.df.filter(pl.col("domain") == TARGET)["item"].unique().to_list()
    )  # the target market's items, in the artifact's order
    users = [*scorer.index.users[:40], "nobody"]
    scores = scorer.score(users)["buy"]
    assert scores.shape == (41, scorer.n_items) and scores.dtype == np.float32
    assert (scores > 0).all() and (scores <= 1).all()
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-4)  # a distribution per user
    assert len(np.unique(scores[0])) > 1  # informative, not constant
    positions = np.array([3, 0, 7])
    np.testing.assert_array_equal(scorer.score(users, positions)["buy"], scores[:, positions])

    loaded = save_and_load(tmp_path, cfg, run)
    assert loaded.settings == scorer.settings and loaded.items == scorer.items
    np.testing.assert_array_equal(loaded.rank_scores(users), scores)
    events = pl.DataFrame({"user": [users[1], "new"], "item": [scorer.items[5]] * 2,
                           "behavior": ["view", "view"]})  # fmt: skip
    np.testing.assert_array_equal(
        loaded.rank_scores([*users, "new"], events=events),
        scorer.rank_scores([*users, "new"], events=events),
    )
    assert scorer.because(users[0], int(scores[0].argmax())) == loaded.because(
        users[0], int(scores[0].argmax())
    )


def _test_ndcg(scorer: CrossDomainScorer, test: pl.DataFrame, known: pl.DataFrame) -> float:
    """Full-ranking NDCG@10 of one held-out target item per user, their other target items
    excluded."""
    pos = {item: j for j, item in enumerate(scorer.items)}
    test = test.filter(pl.col("item").is_in(list(pos)))
    users = test["user"].to_list()
    cols = np.array([pos[x] for x in test["item"].to_list()])
    mine = known.filter(pl.col("item").is_in(list(pos)))
    have = {u: [pos[i] for i in g["item"]] for (u,), g in mine.group_by("user")}
    exclude = metrics.csr_from_lists(have.get(u, []) for u in users)
    ranks = metrics.rank_of_targets(scorer.rank_scores(users), cols, exclude)
    return metrics.ndcg_at_k(ranks, 10)


def test_source_history_helps_the_target(shop: tuple[Dataset, Split]) -> None:
    # As in test_transfer: neighbours over both markets beat neighbours of the target alone
    # on the test items (0.231 vs 0.196). (On the validation hold-out, drawn from users' two
    # target items, the target alone does better: 0.168 vs 0.216.)
    ds, split = shop
    nb = {"shrink": 10, "top_k": 20}
    both = fit(config(method="neighbours", neighbours=nb), ds, split)
    alone = fit(config(method="neighbours", neighbours=nb, source_history=False), ds, split)
    known = split.train.df.filter(pl.col("domain") == TARGET)
    test = split.test.df
    assert _test_ndcg(both.scorer, test, known) > 1.1 * _test_ndcg(alone.scorer, test, known)


def test_users_with_only_source_history_get_their_own_list(shop: tuple[Dataset, Split]) -> None:
    # Test users lose every target event; they keep their source history.
    ds, _ = shop
    split = cold_user_split(ds.interactions, frac=0.2, seed=0, domain=TARGET)
    run = fit(config(method="neighbours", **SETTINGS["neighbours"]), ds, split)
    scorer = run.scorer
    test = split.test.df.unique(["user", "item"])
    users = test["user"].unique().sort().to_list()
    warm = split.train.df.filter(pl.col("domain") == TARGET)["user"].unique().to_list()
    assert scorer.target_cold(users).all() and not scorer.target_cold(warm).any()
    scores = scorer.rank_scores(users)
    assert (scores.std(axis=1) > 0).mean() > 0.95
    popular = np.argsort(-scorer.rank_scores(["nobody"])[0], kind="stable")[:10]
    own = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    same = np.array([set(r) == set(popular) for r in own.tolist()])
    assert same.mean() < 0.2  # their own lists, not the popular one
    ndcg = _test_ndcg(scorer, test.group_by("user").first(), pl.DataFrame(schema=test.schema))
    random_ndcg = sum(1 / np.log2(r + 2) for r in range(10)) / scorer.n_items
    assert ndcg > 2 * random_ndcg


@pytest.mark.parametrize("method", ["neighbours", "joint"])
def test_cold_target_users_on_a_planted_shop(method: str, tmp_path: Path) -> None:
    ds = tiny()
    settings = {"neighbours": {"shrink": 0, "top_k": None}} if method == "neighbours" else {
        "dim": 8, "model": {"use_user_id": False, "history_dropout": 0.3}}  # fmt: skip
    cfg = config("books", "films", method=method, **settings).with_values(
        {"train.epochs": 40, "train.lr": 0.05, "train.patience": 40, "train.batch_size": 8}
    )
    run = fit(cfg, ds, given_split(ds))
    scorer = run.scorer
    assert scorer.items == [f"f{j}" for j in range(6)]
    assert scorer.target_cold(["coldA", "coldB", "A0"]).tolist() == [True, True, False]
    s = scorer.rank_scores(["coldA", "coldB", "nobody"])
    # The popular films are group B's; a group-A shopper with books only gets A's films.
    assert set(np.argsort(-s[2])[:3]) == {3, 4, 5}
    assert set(np.argsort(-s[0])[:3]) == {0, 1, 2}
    assert set(np.argsort(-s[1])[:3]) == {3, 4, 5}
    why = scorer.because("coldA", int(s[0].argmax()))
    assert why and set(why) <= {"b0", "b1"}

    # Live events: a new shopper who just bought b1 (group A) gets A's films; one more event,
    # of b4 (group B), moves probability towards B's films.
    one = pl.DataFrame({"user": ["new"], "item": ["b1"], "behavior": ["buy"]})
    two = pl.concat([one, pl.DataFrame({"user": ["new"], "item": ["b4"], "behavior": ["buy"]})])
    p1, p2 = scorer.rank_scores(["new"], events=one)[0], scorer.rank_scores(["new"], events=two)[0]
    assert set(np.argsort(-p1)[:3]) == {0, 1, 2}
    assert p2[3:].sum() > p1[3:].sum() and p2[:3].sum() < p1[:3].sum()
    # An event with an explicit domain column, and an unknown item, are handled.
    odd = pl.DataFrame({"user": ["coldB"] * 2, "item": ["f0", "zzz"], "behavior": ["buy"] * 2,
                        "domain": ["films", "films"]})  # fmt: skip
    assert not scorer.target_cold(["coldB"], events=odd)[0]
    after = scorer.rank_scores(["coldB"], events=odd)[0]
    assert not np.array_equal(after, s[1])
    loaded = save_and_load(tmp_path, cfg, run)
    np.testing.assert_array_equal(loaded.rank_scores(["new"], events=two)[0], p2)


def test_blend_several_sources_and_shared_items() -> None:
    ds = simulate_shop(n_users=400, n_items=100, n_markets=3, n_events=10_000, seed=2).dataset
    split = cold_user_split(ds.interactions, frac=0.2, seed=0, domain="market_2")
    cfg = config(["market_0", "market_1"], "market_2", method="joint", dim=8, blend=0.5,
                 shared_items=True)  # fmt: skip
    run = fit(cfg, ds, split)
    scorer = run.scorer
    assert scorer.index.domains == ("market_0", "market_1", "market_2")
    assert run.valid_score > 0 and run.info["valid_drawn_from_train"]
    model = scorer.model
    assert model is not None and scorer.neighbours is not None
    shared = scorer.index.shared_item_rows()
    assert torch.equal(model.item_rows, torch.as_tensor(shared))  # one row per product
    s = scorer.rank_scores(scorer.index.users[:20])
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-4)


def test_validation_events_of_the_split_are_used() -> None:
    ds = tiny()
    split = given_split(ds)
    valid = split.test  # stand-in: a split that ships its validation events
    run = fit(config("books", "films", method="neighbours"), ds,
              Split(split.train, valid, split.test, "given"))  # fmt: skip
    assert not run.info["valid_drawn_from_train"] and run.valid["users"] == 39
    assert run.scorer.target_cold(["coldA"])[0]
    # Repeat buys: validation events the user already had count only with repeats: true.
    again = split.train.df.filter(
        (pl.col("domain") == "films") & pl.col("user").str.starts_with("A")
    )
    rerun = Split(split.train, Interactions(again), split.test, "given")
    assert fit(config("books", "films", method="neighbours"), ds, rerun).info[
        "valid_drawn_from_train"
    ]  # nothing new to validate on: a hold-out is drawn instead
    counted = fit(config("books", "films", method="neighbours", repeats=True), ds, rerun)
    assert counted.valid["users"] == again["user"].n_unique() and counted.valid_score > 0


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"method": "magic"}, "method"),
        ({"lamda": 1.0}, "lamda"),
        ({"target": SOURCE}, "overlap"),
        ({"freeze": ["embeddings"]}, "freeze' goes with method: finetune"),
        ({"method": "finetune", "freeze": ["embedings"]}, "unknown part"),
        ({"model": {"n_experts": 2}}, "n_experts"),
        ({"method": "neighbours", "blend": 0.5}, "blend"),
        ({"method": "joint", "source_history": False}, "source_history"),
        ({"neighbours": {"alpha": 2.0}}, "alpha"),
    ],
)
def test_config_errors_name_the_key(recipe: dict[str, Any], message: str) -> None:
    raw = {"source": SOURCE, "target": TARGET, **recipe}
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(
            {"data": {"dataset": "simulated"}, "recipe": {"name": "cross_domain", **raw}}
        )


def test_data_errors(shop: tuple[Dataset, Split]) -> None:
    ds, split = shop
    with pytest.raises(DataError, match=r"market_9.*market_0"):
        fit(config(target="market_9", method="neighbours"), ds, split)
    cfg = ExperimentConfig.from_dict(
        {
            "data": {"dataset": "simulated"},
            "recipe": {"name": "cross_domain", "source": SOURCE, "target": TARGET},
            "tasks": ["view", "buy"],
        }
    )
    with pytest.raises(DataError, match="one task"):
        fit(cfg, ds, split)
