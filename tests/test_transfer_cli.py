"""`shoprec transfer` and transfer artifacts, on a small simulated two-market shop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from shoprec.cli import app
from shoprec.transfer.run import TransferArtifact, TransferConfig, run_transfer

SHOP = {
    "dataset": "simulated",
    "simulate": {
        "n_users": 600, "n_items": 150, "n_markets": 2, "n_events": 15_000,
        "source_market_share": 0.8, "shared_user_share": 0.6, "seed": 1,
    },
    "source": "market_0",
    "target": "market_1",
}  # fmt: skip


def write_config(tmp: Path, **fields: object) -> Path:
    cfg = {"name": "t", "data": SHOP, "output": str(tmp / "art"), **fields}
    path = tmp / "transfer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_neighbours_transfer_and_recommend(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = write_config(tmp_path, method="neighbours", neighbours={"shrink": 5, "top_k": 10})
    res = runner.invoke(app, ["transfer", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "NDCG@10" in res.output and "popularity" in res.output
    result = json.loads((tmp_path / "art" / "metrics.json").read_text())
    for name in ("neighbours", "popularity"):
        m = result["test"][name]
        assert m["users"] > 50 and 0 <= m["ndcg@10"] <= m["hr@10"] <= 1

    art = TransferArtifact.load(tmp_path / "art")
    user = art.index.users[0]
    recs = art.recommend(user, 5)
    assert len(recs) == 5 and len({r["item"] for r in recs}) == 5
    assert all(r["item"] in art.index.items[1] for r in recs)  # target items only
    uid = art.index.users.index(user) + 1
    lo = art.index.starts[1] + 1
    owned = {
        art.index.items[1][i - lo]
        for i in art.history.filter(art.history["user"] == uid)["item"].to_list()
        if i >= lo
    }
    assert not owned & {r["item"] for r in recs}  # nothing the shopper already has
    assert any(r["because"] for r in recs)  # explained by the shopper's own items

    res = runner.invoke(app, ["recommend", str(tmp_path / "art"), "--user", "nobody", "-k", "3"])
    assert res.exit_code == 0, res.output
    assert "new to this model" in res.output
    res = runner.invoke(app, ["recommend", str(tmp_path / "art"), "-u", user, "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) == 10


@pytest.mark.parametrize("method", ["joint", "finetune"])
def test_trained_transfer_artifact_round_trip(tmp_path: Path, method: str) -> None:
    train = {"epochs": 2, "batch_size": 128, "lr": 0.01, "progress": False}
    cfg = TransferConfig.from_yaml(
        write_config(
            tmp_path, method=method, model={"dim": 8}, train=train,
            freeze=["item_embeddings"] if method == "finetune" else [],
        )
    )  # fmt: skip
    path = run_transfer(cfg)
    result = json.loads((path / "metrics.json").read_text())
    assert result["facts"]["best_epoch"] in (1, 2)
    art = TransferArtifact.load(path)
    first = art.recommend(art.index.users[3], 10)
    again = TransferArtifact.load(path).recommend(art.index.users[3], 10)
    assert first == again and len(first) == 10
    assert len({r["score"] for r in first}) > 1  # informative, not constant


def test_clear_errors_for_bad_transfer_configs(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["transfer", str(write_config(tmp_path, method="magic"))])
    assert res.exit_code != 0 and "unknown method" in res.output
    bad = {**SHOP, "target": "market_9"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "b", "data": bad, "method": "neighbours"}))
    res = runner.invoke(app, ["transfer", str(path)])
    assert res.exit_code != 0 and "market_9" in res.output and "market_0" in res.output
    with pytest.raises(ValueError, match="differ"):
        TransferConfig(name="x", data={"source": "a", "target": "a"})


def test_pairs_from_a_csv_file(tmp_path: Path) -> None:
    import polars as pl

    from shoprec.data.errors import DataError
    from shoprec.transfer.run import load_pairs

    rows = [("a", "x", "uk"), ("a", "y", "de"), ("b", "x", "uk"), ("b", "x", "uk")]
    path = tmp_path / "pairs.csv"
    pl.DataFrame(rows, schema=["user", "item", "domain"], orient="row").write_csv(path)
    pairs = load_pairs({"dataset": str(path)})
    assert pairs.height == 3 and pairs.columns == ["user", "item", "domain"]  # deduplicated
    pl.DataFrame({"user": ["a"], "sku": ["x"]}).write_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="lacks the column"):
        load_pairs({"dataset": str(tmp_path / "bad.csv")})
    with pytest.raises(DataError, match="unknown dataset"):
        load_pairs({"dataset": str(tmp_path / "missing.csv")})
