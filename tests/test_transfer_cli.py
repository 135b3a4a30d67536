"""`shoprec transfer` (the same as `shoprec train` on a cross_domain config) and the artifact
it writes, on a small simulated shop and on the shop's own file with a domain column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from typer.testing import CliRunner

from shoprec.artifact import Artifact
from shoprec.cli import app
from shoprec.config import load_config
from shoprec.experiment import fit_experiment
from shoprec.recipes.cross_domain import CrossDomainScorer

SHOP = {"dataset": "simulated", "simulate": {"n_users": 600, "n_items": 150, "n_events": 15_000,
                                             "seed": 1}}  # fmt: skip


def write_config(tmp: Path, data: dict[str, Any] | None = None, **recipe: Any) -> Path:
    cfg = {
        "name": "t",
        "data": data or SHOP,
        "split": {"kind": "leave_last_out", "n_valid": 0},
        "recipe": {"name": "cross_domain", "source": "market_0", "target": "market_1", **recipe},
        "tasks": ["view"],
        "evaluate": {"bootstrap": 0},
        "output": "art",
    }
    path = tmp / "transfer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_neighbours_transfer_and_artifact(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = write_config(tmp_path, method="neighbours", neighbours={"shrink": 5, "top_k": 10})
    res = runner.invoke(app, ["transfer", str(cfg)])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "art" / "metrics.json").read_text())
    assert result["recipe"] == "cross_domain" and result["method"] == "neighbours"
    m = result["test"]["metrics"]
    assert m["users"] > 50 and 0 < m["ndcg@10"] <= m["hr@10"] <= 1
    assert 0 < result["valid"]["view/ndcg@10"] <= 1

    art = Artifact.load(tmp_path / "art")
    scorer = art.scorer
    assert isinstance(scorer, CrossDomainScorer) and scorer.domain == "market_1"
    assert art.items["item"].to_list() == scorer.items  # the target market's items
    user = next(u for u in scorer.index.users if not scorer.target_cold([u])[0])
    scores = scorer.rank_scores([user])[0]
    best = int(scores.argmax())
    assert scorer.because(user, best)  # explained by the shopper's own items
    again = Artifact.load(tmp_path / "art").scorer.rank_scores([user])[0]
    assert (again == scores).all()


def test_clear_errors_for_bad_transfer_configs(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["transfer", str(write_config(tmp_path, method="magic"))])
    assert res.exit_code != 0 and "method" in res.output and "neighbours" in res.output
    res = runner.invoke(app, ["transfer", str(write_config(tmp_path, target="market_9"))])
    assert res.exit_code != 0 and "market_9" in res.output and "market_0" in res.output


def test_pairs_from_a_csv_file_with_a_domain_column(tmp_path: Path) -> None:
    rows = [(f"u{u}", f"{d}{(u + j) % 5}", d) for u in range(30) for d in ("uk", "de")
            for j in range(3)]  # fmt: skip
    pl.DataFrame(rows, schema=["user", "item", "domain"], orient="row").write_csv(
        tmp_path / "pairs.csv"
    )
    path = write_config(
        tmp_path, {"events": {"path": "pairs.csv"}}, method="neighbours"
    )  # relative to the config file
    raw = yaml.safe_load(path.read_text())
    raw["recipe"].update(source="uk", target="de")
    raw["tasks"] = ["buy"]
    path.write_text(yaml.safe_dump(raw))
    run, _, _ = fit_experiment(load_config(path))
    assert run.scorer.items == [f"de{j}" for j in range(5)]
    assert run.valid["users"] > 0
