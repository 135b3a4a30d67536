"""``embedding_init_std`` in every model config: it sets the embedding tables' initial spread
and survives save/load (artifacts written before the field existed load with the default)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from shoprec.models import (
    MODELS,
    CategoricalFeature,
    NumericFeature,
    Task,
    build_model,
    load_model,
    save_model,
)
from shoprec.models.layers import InputLayer

FEATURES = [
    CategoricalFeature("user", 400, dim=8),
    CategoricalFeature("item", 300, dim=8),
    NumericFeature("price"),
]
TASKS = {"aitm": [Task("click"), Task("cart"), Task("buy")]}


def _tables(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every embedding table's rows but the zero padding row."""
    layers = [m for m in model.modules() if isinstance(m, InputLayer)]
    assert layers
    return [t.weight[1:].detach() for layer in layers for t in layer.tables.values()]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("std", [1e-4, 0.05, 0.3])
def test_init_std_reaches_the_tables(name: str, std: float) -> None:
    torch.manual_seed(0)
    overrides = {} if std == 0.05 else {"embedding_init_std": std}  # 0.05: the default
    model = build_model(name, FEATURES, TASKS.get(name, [Task("a"), Task("b")]), **overrides)
    assert model.config.embedding_init_std == std
    for weights in _tables(model):
        measured = float(weights.std())
        assert 0.9 * std < measured < 1.1 * std, (name, std, measured)


@pytest.mark.parametrize("name", ["mmoe", "ple", "single_task"])
def test_init_std_survives_save_and_load(name: str, tmp_path: Path) -> None:
    tasks = TASKS.get(name, [Task("a"), Task("b")])
    model = build_model(name, FEATURES, tasks, embedding_init_std=1e-4)
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["embedding_init_std"] == 1e-4
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    for a, b in zip(_tables(model), _tables(loaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # An artifact written before the field existed: the default fills it in.
    del meta["config"]["embedding_init_std"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    assert load_model(tmp_path / "m").config.embedding_init_std == 0.05


def test_census_section_names_each_models_options() -> None:
    root = Path(__file__).resolve().parent.parent  # benchmarks/ is a package at the repo root
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.census import options_line

    rows = {
        "shoprec/mmoe": {"model_config": {"batchnorm": True, "embedding_init_std": 1e-4}},
        "shoprec/single_task": {"model_config": {"hidden_dims": [64, 32]}},
        "torch_rechub/ple": {"model_config": None},
    }
    line = options_line(rows)
    assert line is not None
    assert "mmoe: BatchNorm in the towers, embeddings N(0, 0.0001)" in line
    assert "single_task: no BatchNorm, embeddings N(0, 0.05)" in line
    assert options_line({"shoprec/mmoe": {}}) is None  # a summary from before the field
