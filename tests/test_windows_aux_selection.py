"""The windows recipe's ``auxiliary_selection: validation`` (issue 13): the task set is picked
on validation among all tasks and each set without one auxiliary task, the target kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shoprec import recipes
from shoprec.config import ConfigError, ExperimentConfig
from shoprec.data.datasets.custom import FileSpec, load_files
from shoprec.data.split import time_split
from test_recipe_windows import BEHAVIORS, COLUMNS, csv_config, write_shop_csv


def test_auxiliary_selection_picks_the_task_set_on_validation(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    path = write_shop_csv(tmp_path / "orders.csv")
    ds = load_files(FileSpec(path, columns=COLUMNS, behaviors=BEHAVIORS))
    split = time_split(ds.interactions, test_days=21, valid_days=21)
    raw = csv_config(path, auxiliary_selection="validation", n_train_windows=2)
    raw["train"] = {**raw["train"], "epochs": 1}
    recipe = recipes.get("windows")(ExperimentConfig.from_dict(raw))
    data = recipe.prepare(ds, split)
    run = recipe.train(data, split)
    sel = run.info["auxiliary_selection"]
    # the full set and one set per auxiliary task left out; buy (the target) always kept
    assert set(sel["valid"]) == {"buy+return+quantity", "buy+quantity", "buy+return"}
    full = sel["valid"]["buy+return+quantity"]
    for name, valid in sel["valid"].items():  # gain: mean over the set's tasks vs the full set
        keys = [k for k in valid if k != "mean"]
        assert sel["gain"][name] == pytest.approx(
            np.mean([valid[k] - full[k] for k in keys]), abs=2e-4
        )
    picked = "+".join(sel["picked"])
    assert sel["gain"][picked] == max(sel["gain"].values())
    assert picked == "buy+return+quantity" or sel["gain"][picked] > 0
    assert run.scorer.tasks == sel["picked"]  # the kept fit is the one served
    assert run.scorer.target == "buy"
    # the default fits the given tasks only
    plain = recipes.get("windows")(ExperimentConfig.from_dict(csv_config(path)))
    assert plain.options.auxiliary_selection == "none"
    with pytest.raises(ConfigError, match="auxiliary_selection"):
        ExperimentConfig.from_dict(csv_config(path, auxiliary_selection="sometimes"))
