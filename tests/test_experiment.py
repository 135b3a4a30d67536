"""shoprec train / evaluate / recommend on a small simulated shop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shoprec.artifact import Artifact
from shoprec.cli import app

runner = CliRunner()

CONFIG = """
name: tiny
data:
  dataset: simulated
  simulate: {n_events: 8000, seed: 1, n_users: 300, n_items: 150}
split: {kind: time, test_days: 14, valid_days: 7}
recipe: {name: pairs, n_negatives: 2}
tasks: [view, cart, buy]
evaluate: {bootstrap: 50}
model: {name: mmoe, embedding_dim: 8, config: {n_experts: 2, expert_dims: [16], tower_dims: [8]}}
train: {epochs: 2, batch_size: 512, seed: 0, progress: false}
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("exp")
    cfg = root / "tiny.yaml"
    cfg.write_text(CONFIG)
    result = runner.invoke(app, ["train", str(cfg), "--output", str(root / "art")])
    assert result.exit_code == 0, result.output
    return root / "art"


def test_train_writes_a_complete_artifact(artifact: Path) -> None:
    for name in [
        "manifest.json",
        "scorer/config.json",
        "scorer/weights.safetensors",
        "scorer/encoder.json",
        "items.parquet",
        "seen.parquet",
        "experiment.yaml",
        "metrics.json",
    ]:
        assert (artifact / name).exists(), name
    metrics = json.loads((artifact / "metrics.json").read_text())
    pointwise = metrics["test"]["pointwise"]
    assert {"view/auc", "cart/auc", "buy/auc"} <= set(pointwise)
    assert all(0 <= v <= 1 for k, v in pointwise.items() if k.endswith("auc"))
    assert metrics["best_epoch"] in (1, 2)
    assert metrics["test"]["metrics"]["users"] > 0


def test_evaluate_reproduces_the_test_metrics(artifact: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(artifact), "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    saved = json.loads((artifact / "metrics.json").read_text())["test"]
    assert again["metrics"] == pytest.approx(saved["metrics"], abs=1e-9)
    # The pointwise slices partition the test samples: warm + cold users and items, domains.
    slices = saved["pointwise"]["slices"]
    rows = {name: row["rows"] for name, row in slices.items()}
    n = rows["warm users"] + rows.get("cold users", 0)
    assert rows["warm items"] + rows.get("cold items", 0) == n
    domains = [name for name in rows if name.startswith("domain ")]
    assert len(domains) >= 2 and sum(rows[d] for d in domains) == n
    assert all(0 <= v <= 1 for row in slices.values() for k, v in row.items() if k.endswith("auc"))


def test_evaluate_prints_the_ranking_table(artifact: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(artifact)])
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.stdout and "95%" in result.stdout and "warm users" in result.stdout


def test_evaluate_reports_exposure_beside_accuracy_for_every_model(artifact: Path) -> None:
    test = json.loads((artifact / "metrics.json").read_text())["test"]
    n_items = len(Artifact.load(artifact).scorer.items)
    for name, ev in [("ours", test), ("popularity", test["baselines"]["popularity"])]:
        m, e = ev["metrics"], ev["exposure"]
        assert {"hr@10", "ndcg@10", "coverage@10", "gini@10", "coverage@20"} <= set(m), name
        assert 10 / n_items <= m["coverage@10"] <= m["coverage@20"] <= 1.0
        assert 0.0 <= m["gini@10"] <= 1.0
        shares = e["by_popularity_decile"]["exposure"]
        assert len(shares) == 10 and sum(shares) == pytest.approx(1.0)
        groups = e["by_group"]  # the simulated catalog has categories
        assert groups["column"] == "category" and groups["groups"]
        assert sum(g["exposure"] for g in groups["groups"].values()) == pytest.approx(1.0)
    # popularity shows (nearly) one list to everyone: a small part of the catalog
    assert test["baselines"]["popularity"]["metrics"]["coverage@10"] <= 0.5
    result = runner.invoke(app, ["evaluate", str(artifact), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert "coverage@10" in result.stdout and "popularity decile" in result.stdout
    assert "popularity" in result.stdout and "training events" in result.stdout


def test_group_floor_gives_every_exposure_group_its_places_in_served_lists(
    artifact: Path,
) -> None:
    art = Artifact.load(artifact)
    serve = art.config.serve
    users = [*art.seen["user"].unique().sort().head(15).to_list(), "someone-new"]
    for by, floor in (("popularity", 0.3), ("category", 0.1)):
        rec = art.recommender(serve.recommender_config(group_floor=floor, floor_groups=by))
        plain = art.recommender(serve.recommender_config(floor_groups=by))
        groups = rec.floor_groups()
        assert len(groups) == len(art.scorer.items) and set(groups.tolist()) >= {0, 1}
        moved = 0
        for user in users:
            listed = [rec.catalog.pos[r.item] for r in rec.recommend(user, 10)]
            before = [plain.catalog.pos[r.item] for r in plain.recommend(user, 10)]
            assert len(listed) == 10 == len(set(listed))
            counts = np.bincount(groups[listed], minlength=groups.max() + 1)
            need = int(np.ceil(floor * 10))
            if by == "popularity":  # two groups, both with plenty of candidates
                assert counts.min() >= need, (user, counts)
            moved += listed != before
        assert moved > 0  # the knob changes lists (all-head or all-tail lists were common)
    with pytest.raises(ValueError, match="floor_groups"):
        art.recommender(serve.recommender_config(group_floor=0.2, floor_groups="seller"))


def test_recommend_excludes_bought_items_and_serves_unknown_users(artifact: Path) -> None:
    art = Artifact.load(artifact)
    buyers = art.seen.filter(art.seen["behavior"] == "buy")["user"]
    user = buyers[0]
    hist = art.history(user)
    bought = set(hist.filter(hist["behavior"] == "buy")["item"].to_list())
    assert bought
    recs = art.recommend(user, k=10)
    assert len(recs) == 10
    assert not bought & {r.item for r in recs}
    assert [r.rank for r in recs] == list(range(1, 11))
    assert all(set(r.predictions) == {"view", "cart", "buy"} for r in recs)

    result = runner.invoke(
        app, ["recommend", str(artifact), "--user", "never-seen", "-k", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 5


def test_bad_config_is_a_readable_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\ndata: {dataset: simulated}\nmodle: {name: mmoe}\n")
    result = runner.invoke(app, ["train", str(cfg)])
    assert result.exit_code == 2
    assert "modle" in result.output and "Traceback" not in result.output


def test_artifact_reload_gives_identical_outputs(artifact: Path) -> None:
    a, b = Artifact.load(artifact), Artifact.load(artifact)
    out_a = a.scorer.score(["u1", "u2"])
    out_b = b.scorer.score(["u1", "u2"])
    for k in out_a:
        assert (out_a[k] == out_b[k]).all()
