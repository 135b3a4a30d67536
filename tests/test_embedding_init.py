"""``embedding_init_std`` in every model config: it sets the embedding tables' initial spread
and survives save/load (artifacts written before the field existed load with the default)."""

from __future__ import annotations

import json
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
