"""The ``windows`` recipe behind the front door: config, fit, scorer, artifact, live events.

Data: a small CSV shop written here (planted repeat purchase: each customer rebuys four
favourite products, plus one popular product per order; a few refunds) and a small simulated
shop. Each fit takes a few seconds on one thread.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from shoprec import artifact, recipes
from shoprec.config import ConfigError, ExperimentConfig, load_config
from shoprec.data.datasets.custom import FileSpec, load_files
from shoprec.data.simulate import simulate_shop
from shoprec.data.split import time_split
from shoprec.evaluate import metrics
from shoprec.recipes import retail

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = {
    "user": "customer",
    "item": "sku",
    "timestamp": "ts",
    "behavior": "event",
    "quantity": "qty",
    "price": "unit_price",
    "domain": "country",
}
BEHAVIORS = {"purchase": "buy", "refund": "return"}


def write_shop_csv(path: Path, seed: int = 0) -> Path:
    """80 customers x 40 products over 150 days; orders about weekly."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_days = 80, 40, 150
    pop = rng.dirichlet(np.full(n_items, 0.5))
    t0 = datetime(2023, 1, 1)
    rows = []
    for u in range(n_users):
        favourites = rng.choice(n_items, size=4, replace=False, p=pop)
        base_qty = int(rng.integers(1, 6))
        country = "DE" if u % 4 == 0 else "UK"
        day = rng.exponential(7.0)
        while day < n_days:
            basket = {int(i) for i in favourites if rng.random() < 0.6}
            basket.add(int(rng.choice(n_items, p=pop)))
            ts = t0 + timedelta(days=float(day))
            for i in sorted(basket):
                qty = base_qty + int(rng.poisson(1.0))
                rows.append((f"c{u}", f"sku{i}", ts, "purchase", qty, 1.0 + i % 7, country))
                if rng.random() < 0.05:
                    back = ts + timedelta(days=float(rng.uniform(0.5, 5.0)))
                    rows.append((f"c{u}", f"sku{i}", back, "refund", 1, 1.0 + i % 7, country))
            day += rng.exponential(7.0)
    df = pl.DataFrame(
        rows,
        schema=["customer", "sku", "ts", "event", "qty", "unit_price", "country"],
        orient="row",
    )
    df.sort("ts").with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(path)
    return path


def csv_config(path: Path, **recipe: object) -> dict:
    return {
        "name": "windows_csv",
        "data": {
            "events": {"path": str(path), "columns": COLUMNS, "behaviors": BEHAVIORS},
        },
        "split": {"kind": "time", "test_days": 21, "valid_days": 21},
        "recipe": {
            "name": "windows",
            "window_days": 21,
            "n_train_windows": 4,
            "n_negatives": 10,
            "max_history": 10,
            **recipe,
        },
        "tasks": ["buy", "return", {"name": "quantity", "kind": "regression", "loss": "log1p_mse"}],
        "model": {
            "name": "mmoe",
            "embedding_dim": 8,
            "config": {"n_experts": 2, "expert_dims": [32], "tower_dims": [16]},
        },
        "train": {"epochs": 8, "batch_size": 128, "lr": 0.01, "patience": 2, "progress": False},
    }


@pytest.fixture(scope="module")
def csv_shop(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    path = write_shop_csv(tmp_path_factory.mktemp("shop") / "orders.csv")
    ds = load_files(FileSpec(path, columns=COLUMNS, behaviors=BEHAVIORS))
    split = time_split(ds.interactions, test_days=21, valid_days=21)
    cfg = ExperimentConfig.from_dict(csv_config(path))
    recipe = recipes.get("windows")(cfg)
    data = recipe.prepare(ds, split)
    run = recipe.train(data, split)
    return ds, split, cfg, recipe, data, run


def test_registry_and_defaults(csv_shop) -> None:
    _, _, _, recipe, _, run = csv_shop
    assert recipes.get("windows") is retail.WindowsRecipe
    assert retail.WindowsRecipe.needs_timestamps
    assert retail.WindowsRecipe.scorer_class is retail.WindowsScorer
    assert retail.WindowsRecipe.default_tasks == ("buy", "return", "quantity")
    # the default tasks put quantity last, but buy ranks
    plain = ExperimentConfig.from_dict({**csv_config(Path("x.csv")), "tasks": []})
    assert recipes.get("windows")(plain).target == "buy"
    assert run.scorer.target == "buy" and run.scorer.tasks == ["buy", "return", "quantity"]
    assert [t.loss for t in recipe.specs] == ["bce", "bce", "log1p_mse"]
    assert [t.weight_key for t in recipe.specs] == [None, "buy", "buy"]


def test_fit_on_csv_validates_and_reports_test_once(csv_shop) -> None:
    _, split, _, _, data, run = csv_shop
    assert run.monitor == "mean"
    assert {"buy/auc", "return/auc", "quantity/r2_log1p", "mean"} <= set(run.valid)
    assert run.valid["buy/auc"] > 0.75  # repeat purchase is planted
    assert run.valid_score == run.valid["mean"]
    assert 1 <= run.best_epoch <= len(run.history) <= 8
    assert all("train_loss" in h or "loss" in h for h in run.history)
    # windows are counted back from the validation start, features from before each window
    assert data.valid_start == split.valid_start and data.cut == split.test_start
    assert len(data.windows) == 4
    assert data.windows[0][1] == split.valid_start
    assert all(e - s == timedelta(days=21) for s, e in data.windows)
    for rows, snap in data.train:
        assert snap.cutoff in {s for s, _ in data.windows}
        assert rows["buy"].sum() > 0
    # the scorer's snapshot is at the test start, from train + valid only
    assert data.snapshot.cutoff == split.test_start
    # pointwise test metrics of the test window's bought pairs
    test_pairs = split.test.df.filter(pl.col("behavior") == "buy").select("user", "item")
    assert run.test["n_pairs"] == test_pairs.unique().height
    assert 0 < run.test["return/auc"] < 1
    assert run.test["quantity/r2_log1p"] > 0.2  # the customer's usual quantity is planted
    assert run.test["quantity/rmse"] > 0 and run.test["quantity/mae_log1p"] > 0


def test_scores_are_probabilities_ranked_by_buy(csv_shop) -> None:
    _, _, _, _, _, run = csv_shop
    scorer = run.scorer
    users = ["c1", "c2", "nobody"]
    s = scorer.score(users)
    assert set(s) == {"buy", "return", "quantity"}
    for task, v in s.items():
        assert v.shape == (3, scorer.n_items) and np.isfinite(v).all() and (v > 0).all(), task
    assert (s["buy"] <= 1).all() and (s["return"] <= 1).all()
    pos = np.array([5, 0, 7])
    sub = scorer.score(users, pos)
    for task in s:
        np.testing.assert_allclose(sub[task], s[task][:, pos], rtol=1e-6)
    np.testing.assert_array_equal(scorer.rank_scores(users), s["buy"])
    # duplicate users get the same rows
    twice = scorer.score(["c1", "c1"], pos)["buy"]
    np.testing.assert_array_equal(twice[0], twice[1])
    assert scorer.score([], pos)["buy"].shape == (0, 3)


def test_rank_scores_equal_the_benchmark_path(csv_shop) -> None:
    """Full ranking through the scorer = the old benchmark path (the test window's snapshot
    from every event, ``RetailEncoder.score_users``) for the same model."""
    _, split, _, _, data, run = csv_shop
    scorer = run.scorer
    everything = pl.concat([data.known, split.test.df])
    end = split.test.df["timestamp"].max() + timedelta(seconds=1)
    test_rows, test_snap = retail.window_samples(
        everything, split.test_start, end, data.catalog, data.encoder.cfg, negatives=False
    )
    items = data.catalog["item"].sort()
    assert items.to_list() == scorer.items
    buyers = test_rows["user"].unique().sort()
    users = buyers.filter(buyers.is_in(test_snap.users["user"].implode()))
    old = data.encoder.score_users(
        scorer.model, test_snap, users, items, country_events=everything
    )["buy"]
    new = scorer.rank_scores(users.to_list())
    np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-30)
    u = pl.DataFrame({"user": users, "_u": np.arange(len(users))})
    i = pl.DataFrame({"item": items, "_i": np.arange(len(items))})
    idx = test_rows.join(u, on="user").join(i, on="item")
    rel = metrics.csr_from_pairs(idx["_u"].to_numpy(), idx["_i"].to_numpy(), len(users))
    a = metrics.ranking_metrics(torch.from_numpy(old), rel, None, ks=(10,))
    b = metrics.ranking_metrics(torch.from_numpy(new), rel, None, ks=(10,))
    assert a == b
    assert a["hr@10"] > 0.5  # the planted favourites are found


def test_live_buy_raises_the_item_and_only_for_that_user(csv_shop) -> None:
    _, _, _, _, _, run = csv_shop
    scorer = run.scorer
    snap = scorer.snapshot
    past = set(snap.pairs.filter(pl.col("user") == "c1")["item"])
    never = [j for j, item in enumerate(scorer.items) if item not in past]
    before = scorer.score(["c1", "c2"])
    raised = 0
    for j in never[:8]:
        live = pl.DataFrame({"user": ["c1"], "item": [scorer.items[j]], "behavior": ["buy"]})
        after = scorer.score(["c1", "c2"], events=live)
        raised += after["buy"][0, j] > before["buy"][0, j]
        assert not np.array_equal(after["buy"][0], before["buy"][0])
        for task in before:  # the other user's scores do not move
            np.testing.assert_array_equal(after[task][1], before[task][1])
    assert raised == 8
    # the scorer itself is unchanged by the call; a view is not a purchase
    np.testing.assert_array_equal(scorer.score(["c1"])["buy"][0], before["buy"][0])
    view = pl.DataFrame({"user": ["c1"], "item": [scorer.items[never[0]]], "behavior": ["view"]})
    np.testing.assert_array_equal(scorer.score(["c1"], events=view)["buy"][0], before["buy"][0])


def test_live_buy_updates_the_repeat_purchase_features(csv_shop) -> None:
    _, _, _, _, data, run = csv_shop
    scorer = run.scorer
    item = next(
        i
        for i in scorer.items
        if i not in set(scorer.snapshot.pairs.filter(pl.col("user") == "c3")["item"])
    )
    live = pl.DataFrame({"user": ["c3", "c3"], "item": [item, item], "behavior": ["buy", "buy"]})
    snap = retail.with_live_events(scorer.snapshot, scorer.events, live, data.encoder.cfg)
    pair = snap.pairs.filter((pl.col("user") == "c3") & (pl.col("item") == item)).row(0, named=True)
    assert pair["ui_log_orders"] == pytest.approx(np.log1p(2))  # two live orders
    assert pair["ui_recency"] == pytest.approx(1.0, abs=1e-6)
    assert pair["ui_log_qty"] == pytest.approx(np.log1p(1))
    old_user = scorer.snapshot.users.filter(pl.col("user") == "c3").row(0, named=True)
    new_user = snap.users.filter(pl.col("user") == "c3").row(0, named=True)
    assert new_user["u_log_orders"] == pytest.approx(
        np.log1p(np.expm1(old_user["u_log_orders"]) + 2)
    )
    assert new_user["history"][-1] == item and new_user["country"] == old_user["country"]
    # nobody else's features change
    others = pl.col("user") != "c3"
    assert snap.pairs.filter(others).equals(scorer.snapshot.pairs.filter(others))
    assert snap.users.filter(others).equals(scorer.snapshot.users.filter(others))
    assert snap.items.equals(scorer.snapshot.items)


def test_cold_user_gets_popular_items_and_learns_from_a_live_buy(csv_shop) -> None:
    _, _, _, _, _, run = csv_shop
    scorer = run.scorer
    cold = scorer.score(["someone-new"])["buy"][0]
    recent = np.expm1(
        pl.DataFrame({"item": scorer.items})
        .join(scorer.snapshot.items, on="item", how="left", maintain_order="left")[
            "i_log_recent_buyers"
        ]
        .to_numpy()
    )
    top_cold = set(np.argsort(-cold)[:10])
    top_pop = set(np.argsort(-recent, kind="stable")[:10])
    assert len(top_cold & top_pop) >= 6
    assert np.corrcoef(np.argsort(np.argsort(cold)), np.argsort(np.argsort(recent)))[0, 1] > 0.7
    j = int(np.argsort(cold)[0])  # the cold user's least likely item
    live = pl.DataFrame(
        {"user": ["someone-new"], "item": [scorer.items[j]], "behavior": ["buy"], "domain": ["DE"]}
    )
    after = scorer.score(["someone-new"], events=live)["buy"][0]
    assert after[j] > cold[j]


def test_artifact_round_trip_gives_identical_scores(csv_shop, tmp_path: Path) -> None:
    ds, split, cfg, _, _, run = csv_shop
    scorer = run.scorer
    items = pl.DataFrame({"item": scorer.items}).join(
        ds.catalog.df if ds.catalog is not None else pl.DataFrame({"item": scorer.items}),
        on="item",
        how="left",
        maintain_order="left",
    )
    folder = artifact.save(
        tmp_path / "art",
        config=cfg,
        scorer=scorer,
        items=items,
        seen=split.train.df,
        metrics={"valid": run.valid, "test": run.test},
    )
    assert artifact.verify(folder) == []
    assert (folder / "scorer" / "model" / "weights.safetensors").exists()
    assert (folder / "scorer" / "snapshot_pairs.parquet").exists()
    loaded = artifact.Artifact.load(folder).scorer
    assert isinstance(loaded, retail.WindowsScorer)
    assert loaded.tasks == scorer.tasks and loaded.target == "buy" and loaded.items == scorer.items
    users = ["c1", "c5", "nobody"]
    live = pl.DataFrame({"user": ["c5"], "item": [scorer.items[3]], "behavior": ["buy"]})
    for events in (None, live):
        a, b = scorer.score(users, events=events), loaded.score(users, events=events)
        for task in a:
            np.testing.assert_array_equal(a[task], b[task])
    assert loaded.snapshot.cutoff == scorer.snapshot.cutoff
    assert loaded.gate_weights("c1", 0) == scorer.gate_weights("c1", 0)
    gates = scorer.gate_weights("c1", 0)
    assert gates is not None and set(gates) == {"buy", "return", "quantity"}
    assert sum(gates["buy"]) == pytest.approx(1.0, abs=1e-5)


def test_fit_on_a_simulated_shop() -> None:
    torch.set_num_threads(1)
    ds = simulate_shop(n_events=30_000, n_users=400, n_items=150, seed=0).dataset
    split = time_split(ds.interactions, test_days=14, valid_days=14)
    cfg = ExperimentConfig.from_dict(
        {
            "data": {"dataset": "simulated"},
            "recipe": {
                "name": "windows",
                "window_days": 14,
                "n_train_windows": 6,
                "n_negatives": 10,
                "max_history": 10,
            },
            "model": {"name": "ple", "embedding_dim": 8, "config": {"n_levels": 1}},
            "train": {"epochs": 2, "batch_size": 256, "progress": False},
        }
    )
    run = recipes.get("windows")(cfg).fit(ds, split)
    # 90 days of data: the windows before the first purchase are skipped
    assert 1 <= len(run.info["windows"]) <= 6
    assert np.isfinite(run.valid["mean"]) and run.monitor == "mean"
    assert run.test["n_pairs"] > 0 and "quantity/rmse" in run.test
    users = split.test.df["user"].unique().sort().head(20).to_list()
    s = run.scorer.score(users)
    assert s["buy"].shape == (20, len(run.scorer.items)) and (s["buy"] > 0).all()
    assert len(run.scorer.items) == ds.catalog.df.height


def test_single_tasks_train_alone(csv_shop) -> None:
    _, split, cfg, _, data, _ = csv_shop
    raw = cfg.to_dict()
    for tasks in (["buy"], ["return"], [{"name": "quantity", "kind": "regression"}]):
        one = ExperimentConfig.from_dict(
            {
                **raw,
                "tasks": tasks,
                "model": {"name": "single_task", "embedding_dim": 8},
                "train": {**raw["train"], "epochs": 1},
            }
        )
        recipe = recipes.get("windows")(one)
        run = recipe.train(data, split)
        name = one.task_names[0]
        assert run.scorer.tasks == [name]
        if name == "buy":
            assert run.info["train_rows"] == len(data.train_data)
        else:  # learns on bought rows only
            assert run.info["train_rows"] == run.info["train_bought"]
            assert run.scorer.target == name  # a single task ranks by its own output
        assert set(run.valid) == {f"{name}/{'r2_log1p' if name == 'quantity' else 'auc'}", "mean"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipe": {"name": "windows", "window_dayz": 3}}, "window_dayz"),
        ({"recipe": {"name": "windows", "history_pooling": "max"}}, "history_pooling"),
        ({"recipe": {"name": "windows", "n_train_windows": 0}}, "n_train_windows"),
    ],
)
def test_config_refuses_unknown_recipe_keys(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict({**csv_config(Path("x.csv")), **change})


@pytest.mark.parametrize(
    ("tasks", "extra", "message"),
    [
        (["buy", "view"], {}, "learns"),
        (["buy", {"name": "quantity", "kind": "binary"}], {}, "regression task"),
        (["buy", {"name": "quantity", "loss": "huber"}], {}, "quantity loss"),
        (["buy", {"name": "return", "loss": "mse"}], {}, "binary"),
        (["buy", {"name": "quantity", "loss": "mse"}], {"quantity_loss": "poisson"}, "once"),
        (["buy", {"name": "buy2", "behavior": "buy"}], {}, "learns"),
        (["buy", {"name": "return", "behavior": "buy"}], {}, "behavior"),
        (["buy", {"name": "return", "n_classes": 3}], {}, "multi-class"),
    ],
)
def test_recipe_refuses_tasks_it_cannot_learn(tasks: list, extra: dict, message: str) -> None:
    raw = csv_config(Path("x.csv"), **extra)
    cfg = ExperimentConfig.from_dict({**raw, "tasks": tasks})
    with pytest.raises(ValueError, match=message):
        recipes.get("windows")(cfg)


def test_a_task_loss_sets_the_quantity_loss() -> None:
    raw = csv_config(Path("x.csv"))
    cfg = ExperimentConfig.from_dict(
        {**raw, "tasks": ["buy", {"name": "quantity", "kind": "regression", "loss": "poisson"}]}
    )
    recipe = recipes.get("windows")(cfg)
    assert recipe.retail_config().quantity_loss == "poisson"
    assert recipe.specs[-1].loss == "poisson"
    assert recipe.target == "buy"
    target = ExperimentConfig.from_dict({**raw, "evaluate": {"target": "return"}})
    assert recipes.get("windows")(target).target == "return"
    # a task's weight is a fixed loss weight
    weighted = ExperimentConfig.from_dict(
        {**raw, "tasks": ["buy", {"name": "return", "weight": 2}]}
    )
    weighted_recipe = recipes.get("windows")(weighted)
    assert weighted_recipe.weighting(weighted_recipe.tasks).weights() == {"return": 2.0}


@pytest.mark.parametrize(
    "path", ["configs/online_retail_mmoe.yaml", "benchmarks/configs/online_retail.yaml"]
)
def test_retail_configs_use_every_key(path: str) -> None:
    cfg = load_config(ROOT / path)
    assert cfg.recipe.name == "windows" and cfg.data.dataset == "online_retail"
    recipe = recipes.get("windows")(cfg)
    assert recipe.tasks == ["buy", "return", "quantity"] and recipe.target == "buy"
    rcfg = recipe.retail_config()
    assert rcfg.max_history == 20 and rcfg.n_negatives == 50 and rcfg.embedding_dim == 16
    assert rcfg.quantity_loss == "log1p_mse"
    assert cfg.split.kind == "time" and cfg.split.test_start == "2011-11-09"
    # every recipe key written in the file is one of the options (none silently dropped)
    written = set(cfg.recipe.model_extra or {})
    assert written <= set(retail.WindowsOptions.model_fields)
    assert {"window_days", "n_train_windows", "n_negatives", "max_history"} <= written


def test_train_experiment_writes_a_servable_artifact(tmp_path: Path) -> None:
    """The front door end to end: config file -> shoprec.experiment.train_experiment ->
    artifact whose test metrics are the generic full ranking plus the recipe's pointwise."""
    import json

    import yaml

    from shoprec.experiment import train_experiment

    torch.set_num_threads(1)
    csv = write_shop_csv(tmp_path / "orders.csv", seed=1)
    raw = csv_config(Path("orders.csv"))
    raw["train"]["epochs"] = 2
    raw["evaluate"] = {"protocol": "full", "ks": [10], "bootstrap": 0, "slices": False}
    raw["serve"] = {"fusion": "buy", "exclude_behaviors": []}
    raw["output"] = "run"
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "shop.yaml")
    assert cfg.data.events is not None and cfg.data.events.path == csv
    folder = train_experiment(cfg)
    assert folder == tmp_path / "run"
    art = artifact.Artifact.load(folder)
    assert art.recipe == "windows" and art.target == "buy"
    assert art.items["item"].to_list() == art.scorer.items
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["test"]["target"] == "buy"
    assert 0 < stored["test"]["metrics"]["hr@10"] <= 1
    assert "quantity/rmse" in stored["test"]["pointwise"]
    assert stored["monitor"] == "mean" and len(stored["windows"]) == 4
    s = art.scorer.score(["c1", "unknown"])
    assert s["buy"].shape == (2, len(art.scorer.items)) and (s["buy"] > 0).all()
