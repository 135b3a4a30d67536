"""One artifact of each recipe: `shoprec recommend` and `GET /recommend` give the same list.

Each recipe is trained from a config on a small simulated shop through `shoprec train`, then
the command line's top ten and the service's top ten for the same shoppers (one known, one
never seen) must be the same items in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shoprec.cli import app
from shoprec.serve import ServeConfig, create_app

SHOP = {
    "dataset": "simulated",
    "simulate": {"n_events": 20_000, "n_users": 500, "n_items": 200, "seed": 2},
}
TRAIN = {"epochs": 1, "batch_size": 512, "progress": False, "threads": 1}
CONFIGS = {
    "pairs": {
        "split": {"kind": "time", "test_days": 14, "valid_days": 7},
        "recipe": {"name": "pairs", "n_negatives": 2},
        "tasks": ["view", "cart", "buy"],
        "model": {"name": "mmoe", "embedding_dim": 8, "config": {"n_experts": 2}},
    },
    "multibehavior": {
        "split": {"kind": "time", "test_days": 14, "valid_days": 7},
        "recipe": {"name": "multibehavior"},
        "tasks": ["view", "cart", "buy"],
        "model": {"name": "mmoe", "embedding_dim": 8, "config": {"n_experts": 2}},
    },
    "windows": {
        "split": {"kind": "time", "test_days": 14, "valid_days": 14},
        "recipe": {"name": "windows", "window_days": 14, "n_train_windows": 2, "n_negatives": 5},
        "model": {"name": "mmoe", "embedding_dim": 8, "config": {"n_experts": 2}},
        "serve": {"exclude_behaviors": []},
    },
    "content": {
        "split": {"kind": "time", "test_days": 14, "valid_days": 7},
        "recipe": {
            "name": "content",
            "dim": 8,
            "hidden": 16,
            "n_negatives": 32,
            "text": {"encoder": "hashed-words", "hashed_dim": 32},
        },
        "tasks": ["buy"],
    },
    "cross_domain": {
        "split": {"kind": "leave_last_out", "behavior": "buy", "n_test": 1, "n_valid": 1},
        "recipe": {
            "name": "cross_domain",
            "source": "market_0",
            "target": "market_1",
            "method": "neighbours",
        },
        "tasks": ["buy"],
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(CONFIGS))
def test_recommend_and_the_service_agree(recipe: str, tmp_path: Path) -> None:
    cfg = {
        "name": f"every_{recipe}",
        "data": SHOP,
        "train": TRAIN,
        "evaluate": {"bootstrap": 0, "slices": False},
        "output": "art",
        **CONFIGS[recipe],
    }
    path = tmp_path / f"{recipe}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    artifact = tmp_path / "art"
    seen = json.loads((artifact / "manifest.json").read_text())
    assert seen["recipe"] == recipe
    import polars as pl

    users = pl.read_parquet(artifact / "seen.parquet")["user"].unique().sort().to_list()
    shoppers = [users[len(users) // 2], "never-seen-shopper"]
    with TestClient(create_app(ServeConfig(artifact, api_key="k"))) as client:
        for user in shoppers:
            cli = runner.invoke(app, ["recommend", str(artifact), "--user", user, "--json"])
            assert cli.exit_code == 0, cli.output + repr(cli.exception)
            listed = [r["item"] for r in json.loads(cli.stdout)]
            served = client.get(f"/recommend/{user}", params={"k": 10})
            assert served.status_code == 200, served.text
            assert [r["item"] for r in served.json()["items"]] == listed
            assert len(listed) == 10
