"""Every shipped config keeps running from the command line.

Cheap checks on every YAML in configs/ and benchmarks/configs/ (no data read): it validates
with and without ``--set`` overrides, its recipe accepts its tasks, its dataset resolves to a
built-in loader of the right kind, and every trial of its search space validates. Then the
simulator-backed configs are trained for real through ``shoprec train FILE --set ...`` (a
small shop, one epoch). ``benchmarks/every_config.py`` trains all of them on their real data.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from shoprec import recipes
from shoprec.cli import app
from shoprec.config import ExperimentConfig, load_config
from shoprec.data import datasets

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    p for folder in ("configs", "benchmarks/configs") for p in (ROOT / folder).glob("*.yaml")
)
runner = CliRunner()


def _returns_tabular(name: str) -> bool:
    """Whether a built-in dataset's loader returns rows with labels (census), from its
    signature alone (nothing is read)."""
    module = importlib.import_module(f"shoprec.data.datasets.{datasets.REGISTRY[name]}")
    return str(inspect.signature(module.load).return_annotation) == "TabularDataset"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_resolves_without_reading_data(path: Path) -> None:
    cfg = load_config(path, **{"train.epochs": 1, "train.threads": 1})
    assert cfg.overrides == {"train.epochs": 1, "train.threads": 1}
    assert cfg.train.train_config().epochs == 1
    assert cfg.source == path and cfg.name

    recipe = recipes.get(cfg.recipe.name)(cfg)  # refuses tasks the recipe cannot learn
    assert recipe.target in recipe.tasks
    cfg.serve.recommender_config()

    data = cfg.data
    if data.dataset is not None:
        name = data.dataset
        if name == "simulated":
            assert cfg.recipe.name != "tabular"
        else:
            assert name in datasets.names() or Path(name).exists(), name
            if name in datasets.names():
                assert _returns_tabular(name) == (cfg.recipe.name == "tabular"), name
    for f in (data.events, data.catalog, data.users):
        assert f is None or f.path.is_absolute()

    if cfg.search is not None:  # each value a trial would set is a valid config
        for key, values in cfg.search.space.items():
            for value in values:
                trial = cfg.with_values({key: value})
                assert isinstance(trial, ExperimentConfig) and trial.search is None


def _train(path: Path, out: Path, *settings: str) -> dict:
    args = ["train", str(path), "--output", str(out), "--no-search", "--restart"]
    args += [a for s in ("train.epochs=1", "train.threads=1", *settings) for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "experiment.yaml").read_text())
    assert saved["overrides"]["train.epochs"] == 1  # the artifact says how it was trained
    assert saved["train"]["epochs"] == 1
    return json.loads((out / "metrics.json").read_text())


def test_sim_mmoe_trains_evaluates_and_recommends(tmp_path: Path) -> None:
    out = tmp_path / "sim_mmoe"
    metrics = _train(
        ROOT / "configs/sim_mmoe.yaml",
        out,
        "data.simulate.n_events=4000",
        "evaluate.bootstrap=0",
        "evaluate.ks=[10]",
    )
    saved = yaml.safe_load((out / "experiment.yaml").read_text())
    assert saved["data"]["simulate"]["n_events"] == 4000
    assert saved["evaluate"]["ks"] == [10]
    hr = metrics["test"]["metrics"]["hr@10"]

    result = runner.invoke(app, ["evaluate", str(out), "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["metrics"]["hr@10"] == pytest.approx(hr)  # the same split rebuilt from the file


def test_sim_transfer_trains_without_its_search(tmp_path: Path) -> None:
    metrics = _train(
        ROOT / "configs/sim_transfer.yaml",
        tmp_path / "sim_transfer",
        "data.simulate.n_events=6000",
        "data.simulate.n_users=400",
        "data.simulate.n_items=80",
        "evaluate.bootstrap=0",
    )
    assert "search" not in metrics  # --no-search
    assert metrics["recipe"] == "cross_domain"
    assert 0.0 <= metrics["test"]["metrics"]["hr@10"] <= 1.0


def test_sim_demand_trains(tmp_path: Path) -> None:
    metrics = _train(
        ROOT / "configs/sim_demand.yaml",
        tmp_path / "sim_demand",
        "data.simulate.n_events=8000",
        "data.simulate.n_items=60",
        "recipe.text_dim=0",  # no sentence encoder to load (tests/test_forecaster.py has one)
        "recipe.neighbours=0",
    )
    assert metrics["recipe"] == "demand"
    assert metrics["test"]["pointwise"]
