"""The ``tabular`` recipe: rows with their own labels (census, AliExpress / Ali-CCP fixtures).

Planted-signal rows check that the recipe learns and selects on validation; the fixtures
check the real loaders' schemas end to end (train, test once, save / load, artifact); every
census config must validate as an experiment config that ``shoprec train`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from shoprec import recipes
from shoprec.config import ExperimentConfig, load_config
from shoprec.data.datasets.census_income import split_column
from shoprec.data.schema import TabularDataset
from shoprec.errors import DataError, ShoprecError
from shoprec.recipes.tabular import TabularRecipe, TabularScorer, split_rows

ROOT = Path(__file__).resolve().parent.parent
TINY = {"name": "mmoe", "embedding_dim": 4, "config": {"n_experts": 2, "expert_dims": [8]}}


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe is in the registry (until the lead's registry lists it, add it here)."""
    if "tabular" not in recipes.names():
        monkeypatch.setitem(recipes.REGISTRY, "tabular", "shoprec.recipes.tabular:TabularRecipe")
    torch.set_num_threads(1)


def config(dataset: str = "fixture", **sections: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "name": "tabular_test",
        "data": {"dataset": dataset},
        "recipe": {"name": "tabular"},
        "model": TINY,
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.01, "progress": False},
    }
    raw.update(sections)
    return ExperimentConfig.from_dict(raw)


def planted(n: int = 2000, seed: int = 0) -> TabularDataset:
    """Rows whose labels follow their features: ``a`` (categorical) drives ``y1``, the number
    ``x`` drives ``y2``; ``b`` is noise."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, n)
    x = rng.normal(size=n)
    y1 = (rng.random(n) < np.where(a < 3, 0.85, 0.1)).astype(np.int64)
    y2 = (rng.random(n) < 1 / (1 + np.exp(-3 * x))).astype(np.int64)
    frame = pl.DataFrame(
        {
            "a": [f"v{v}" for v in a],
            "b": rng.integers(0, 4, n).astype(str),
            "x": x,
            "y1": y1,
            "y2": y2,
            "amount": np.exp(x),  # in no list: a regression target if a task names it
        }
    )
    return TabularDataset("planted", frame, ["a", "b"], ["x"], ["y1", "y2"])


# ------------------------------------------------------------------------------ splitting


def test_random_split_is_the_census_split_and_overrides_a_given_one() -> None:
    spec = config(split={"kind": "random", "fractions": [0.8, 0.1, 0.1], "seed": 3}).split
    given = pl.Series("split", ["test"] * 50)
    codes, how = split_rows(50, given, spec)
    expected = split_column(50, 3).replace_strict({"train": 0, "valid": 1, "test": 2})
    np.testing.assert_array_equal(codes, expected.to_numpy())
    assert "seed 3" in how


def test_given_split_holds_out_valid_rows_from_train_when_there_are_none() -> None:
    given = pl.Series("split", ["train"] * 90 + ["test"] * 10)
    codes, how = split_rows(100, given, config(split={"kind": "given", "seed": 1}).split)
    assert (codes[90:] == 2).all()
    assert (codes[:90] == 1).sum() == 9 and (codes[:90] == 0).sum() == 81
    again, _ = split_rows(100, given, config(split={"kind": "given", "seed": 1}).split)
    np.testing.assert_array_equal(codes, again)  # seeded
    assert "held out" in how


def test_splits_that_need_events_are_refused() -> None:
    with pytest.raises(ShoprecError, match="tabular dataset is split by rows"):
        split_rows(10, None, config(split={"kind": "leave_last_out"}).split)
    with pytest.raises(ShoprecError, match="needs a 'split' column"):
        split_rows(10, None, config(split={"kind": "given"}).split)
    with pytest.raises(ShoprecError, match="three fractions"):
        split_rows(10, None, config(split={"kind": "random", "fractions": [0.9, 0.1]}).split)


def test_without_a_split_section_the_data_split_is_used() -> None:
    cfg = config()
    assert "split" not in cfg.model_fields_set  # the default time split means "not asked"
    given = pl.Series("split", ["train"] * 8 + ["valid", "test"])
    codes, how = split_rows(10, given, cfg.split)
    np.testing.assert_array_equal(codes, [0] * 8 + [1, 2])
    assert how == "the data's own split column"


# ------------------------------------------------------------------------ fit and scorer


def test_learns_planted_signal_and_scores_rows() -> None:
    ds = planted()
    cfg = config(
        split={"kind": "random", "seed": 0},
        tasks=[{"name": "first", "label": "y1"}, {"name": "second", "label": "y2"}],
        train={"epochs": 3, "batch_size": 128, "lr": 0.02, "progress": False},
    )
    run = TabularRecipe(cfg).fit(ds, None)
    assert run.test["first/auc"] > 0.8 and run.test["second/auc"] > 0.8
    assert run.monitor == "mean" and run.valid["mean"] == pytest.approx(
        np.mean([run.valid["first/auc"], run.valid["second/auc"]])
    )
    assert run.info["rows"] == {"train": 1600, "valid": 200, "test": 200}
    scorer = run.scorer
    assert isinstance(scorer, TabularScorer)
    assert scorer.items == [] and scorer.tasks == ["first", "second"]
    assert scorer.target == "second" and scorer.labels == {"first": "y1", "second": "y2"}
    rows = pl.DataFrame({"a": ["v0", "v5", "never-seen"], "b": ["0", "1", None], "x": [0.0] * 3})
    p = scorer.predict_rows(rows)
    assert p["first"].shape == (3,) and ((p["first"] > 0) & (p["first"] < 1)).all()
    assert p["first"][0] > p["first"][1]  # a = v0 (85% positive) above v5 (10%)
    with pytest.raises(ShoprecError, match="scores rows; it does not recommend items"):
        scorer.score(["u1"])
    with pytest.raises(DataError, match="'x'"):
        scorer.predict_rows(rows.drop("x"))


def test_default_tasks_are_the_label_columns_and_features_can_be_chosen() -> None:
    cfg = config(recipe={"name": "tabular", "features": ["a", "x"]}, train={"epochs": 1})
    data = TabularRecipe(cfg).prepare(planted(300), None)
    assert [t.name for t in data.tasks] == ["y1", "y2"]
    assert data.categorical == ["a"] and data.numeric == ["x"]
    bad = config(recipe={"name": "tabular", "features": ["nope"]})
    with pytest.raises(ShoprecError, match="not features of 'planted'"):
        TabularRecipe(bad).prepare(planted(300), None)
    with pytest.raises(ShoprecError, match="label column 'income'"):
        TabularRecipe(config(tasks=["income"])).prepare(planted(300), None)
    with pytest.raises(ShoprecError, match="label column 'x'"):  # a feature is no label
        TabularRecipe(config(tasks=[{"name": "x"}])).prepare(planted(300), None)
    with pytest.raises(ShoprecError, match="other than 0 and 1"):
        TabularRecipe(config(tasks=["amount"])).prepare(planted(300), None)
    spend = config(tasks=[{"name": "spend", "kind": "regression", "label": "amount"}])
    task = TabularRecipe(spend).prepare(planted(300), None).tasks[0]
    assert (task.name, task.kind, task.label, task.loss) == ("spend", "regression", "amount", "mse")


def test_events_are_refused() -> None:
    from shoprec.data.simulate import simulate_shop

    ds = simulate_shop(n_events=2000, seed=0).dataset
    with pytest.raises(ShoprecError, match="is events"):
        TabularRecipe(config()).fit(ds, None)


# --------------------------------------------------------------------- the real fixtures


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("name", "labels"),
    [("ali_ccp", ["click", "purchase"]), ("aliexpress", ["click", "conversion"])],
)
def test_tiny_mmoe_on_fixture_saves_and_loads(
    real_data: Path, tmp_path: Path, name: str, labels: list[str]
) -> None:
    from shoprec.artifact import Artifact, save
    from shoprec.data import datasets

    if not (real_data / "fixtures").is_dir():
        pytest.skip("fixtures not in the data folder")
    ds = datasets.load(name)
    cfg = config(name, train={"epochs": 2, "batch_size": 32, "progress": False})
    run = TabularRecipe(cfg).fit(ds, None)
    assert run.scorer.tasks == labels and run.best_epoch in (1, 2)
    assert sum(run.info["rows"].values()) == ds.frame.height and run.info["rows"]["valid"] > 0
    for label in labels:
        assert set(run.test) >= {f"{label}/logloss"}
        assert 0.0 <= run.test.get(f"{label}/auc", 0.5) <= 1.0
    before = run.scorer.predict_rows(ds.frame)

    run.scorer.save(tmp_path / "scorer")
    loaded = TabularScorer.load(tmp_path / "scorer")
    after = loaded.predict_rows(ds.frame)
    for label in labels:
        np.testing.assert_array_equal(before[label], after[label])
        assert before[label].shape == (ds.frame.height,)

    empty = pl.DataFrame(
        {"user": [], "item": [], "behavior": []},
        schema=dict.fromkeys(("user", "item", "behavior"), pl.String),
    )
    art_dir = save(
        tmp_path / "artifact",
        config=cfg,
        scorer=run.scorer,
        items=pl.DataFrame({"item": []}, schema={"item": pl.String}),
        seen=empty,
        metrics={"test": {"pointwise": run.test}},
    )
    art = Artifact.load(art_dir)
    assert isinstance(art.scorer, TabularScorer) and art.recipe == "tabular"
    np.testing.assert_array_equal(art.scorer.predict_rows(ds.frame)[labels[0]], before[labels[0]])


# ------------------------------------------------------------------------------- configs


CENSUS_CONFIGS = sorted((ROOT / "configs").glob("census_*.yaml"))


def test_there_are_census_configs() -> None:
    assert len(CENSUS_CONFIGS) == 7


@pytest.mark.parametrize("path", CENSUS_CONFIGS, ids=lambda p: p.stem)
def test_census_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.recipe.name == "tabular" and cfg.data.dataset == "census_income"
    assert cfg.task_names == ["income", "never_married"]
    assert [t.label or t.name for t in cfg.tasks] == ["income_50k", "never_married"]
    assert cfg.split.kind == "random" and cfg.name == path.stem
    assert cfg.train.train_config().monitor == "mean"


@pytest.mark.real_data
def test_census_config_prepares_the_benchmark_split(real_data: Path) -> None:
    from shoprec.data.datasets import census_income

    if not (real_data / "census_income" / "census-income.test.gz").exists():
        pytest.skip("census_income not in the data folder")
    cfg = load_config(ROOT / "configs" / "census_mmoe.yaml").with_values({"split.seed": 2})
    ds = census_income.load()
    data = TabularRecipe(cfg).prepare(ds, None)
    assert len(data.categorical) == 32 and len(data.numeric) == 7
    assert [t.label for t in data.tasks] == ["income_50k", "never_married"]
    seeded = ds.frame.with_columns(split_column(ds.frame.height, 2))  # load(split_seed=2)'s
    for part in ("train", "valid", "test"):
        rows = seeded.filter(pl.col("split") == part)
        for label in ("income_50k", "never_married"):
            np.testing.assert_array_equal(
                data.part(part).columns[label].numpy(), rows[label].to_numpy()
            )
    assert data.encoder is not None and data.encoder.n_rows_ == data.info["rows"]["train"]
