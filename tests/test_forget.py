"""Forgetting a shopper (`DELETE /users/{id}`, `shoprec forget`) removes them from every
place: the event store (its files too), the live session log, seen.parquet, the scorer's
user table, id map and embedding rows, the retrieval files' user vocabulary and user-tower
rows (in the artifact or in the serving cache), retraining data built from the store; the
manifest still matches the files and the service treats them as a new shopper."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving_helpers import API_KEY, tiny_artifact
from shoprec import artifact as artifacts
from shoprec.artifact import Artifact
from shoprec.cli import app as cli
from shoprec.data.encode import Encoder
from shoprec.forget import TOMBSTONE
from shoprec.models.two_tower import TwoTower, TwoTowerConfig
from shoprec.recommend.retrieve import build_retrieval, cache_folder
from shoprec.serve import EventStore, ServeConfig, create_app

AUTH = {"X-API-Key": API_KEY}
SECRET_ITEM = "item-only-the-forgotten-shopper-touched"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.getbasetemp())


def _copy(original: Path, to: Path) -> Path:
    shutil.copytree(original, to, ignore=shutil.ignore_patterns("*.sqlite*"))
    return to


def _two_users(path: Path) -> tuple[str, str]:
    top = (
        pl.read_parquet(path / "seen.parquet").group_by("user").len().sort(["len", "user"])
    )  # two shoppers with training events
    return top["user"][-1], top["user"][-2]


def _embedding_rows(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """The user embedding rows of ``ids`` in every input layer of ``model`` (its own
    table-and-offset layout)."""
    rows = []
    for layer in model.modules():
        for key, names in getattr(layer, "groups", ()):
            if "user" in names:
                offset = int(getattr(layer, f"offsets_{key}")[names.index("user")])
                rows.append(layer.tables[key].weight[torch.tensor(ids) + offset])
    assert rows, "the model has no user embedding"
    return torch.cat(rows)


def _scorer_state(path: Path, user: str) -> dict:
    """Where the pairs scorer and the retrieval files hold ``user``."""
    art = Artifact.load(path)
    scorer = art.scorer
    encoder = scorer.builder.encoder
    retrieval = path / "retrieval"
    users = Encoder.from_json(retrieval / "user_encoder.json")
    return {
        "seen": art.seen.filter(pl.col("user") == user).height,
        "user_table": scorer.builder.user_table.filter(pl.col("user") == user).height,
        "scorer_id": encoder.idmaps_["user"].index.get(user),
        "retrieval_id": users.idmaps_["user"].index.get(user),
        "scorer": scorer,
        "two_tower": TwoTower.load(retrieval),
    }


def _store_files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def test_delete_user_forgets_every_place(original: Path, tmp_path: Path) -> None:
    path = _copy(original, tmp_path / "served")
    gone, kept = _two_users(path)
    before = _scorer_state(path, gone)
    assert before["seen"] and before["user_table"] == 1
    assert before["scorer_id"] and before["retrieval_id"]
    scorer_rows = _embedding_rows(before["scorer"].model, [before["scorer_id"]])
    tower_rows = _embedding_rows(before["two_tower"], [before["retrieval_id"]])
    assert scorer_rows.abs().sum() > 0 and tower_rows.abs().sum() > 0

    db = path / "events.sqlite"
    with TestClient(create_app(ServeConfig(path, db=db, api_key=API_KEY))) as client:
        for user, item in ((gone, SECRET_ITEM), (gone, "i1"), (kept, "i2")):
            event = {"user": user, "item": item, "behavior": "view"}
            assert client.post("/events", json=event, headers=AUTH).status_code == 201
        service = client.app.state.service
        assert len(service.sessions.recent(gone)) == 2
        assert SECRET_ITEM.encode() in _store_files(db)

        assert client.delete(f"/users/{gone}").status_code == 401
        r = client.delete(f"/users/{gone}", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["events_deleted"] == 2 and body["live_events_deleted"] == 2
        assert body["known"] and body["seen_rows"] == before["seen"]
        assert body["scorer"] == {"user_table_rows": 1, "ids": 1, "embedding_rows": 1}
        assert body["retrieval"] == {"ids": 1, "embedding_rows": 1}

        # the service: no live events, no history, an unknown shopper with a cold-start list
        service = client.app.state.service
        assert service.sessions.recent(gone) == [] and service.sessions.recent(kept)
        hist = client.get(f"/history/{gone}", headers=AUTH).json()
        assert hist["known_user"] is False and hist["events"] == []
        rec = client.get(f"/recommend/{gone}", params={"k": 5}).json()
        assert rec["known_user"] is False and len(rec["items"]) == 5
        assert gone not in {u["user"] for u in client.get("/users", headers=AUTH).json()["users"]}
        assert client.get(f"/recommend/{kept}").json()["known_user"] is True
        # idempotent: a second delete finds nothing
        again = client.delete(f"/users/{gone}", headers=AUTH).json()
        assert again["events_deleted"] == 0 and again["known"] is False

    # the event store: rows gone, and the bytes too (secure delete + WAL checkpoint)
    with sqlite3.connect(db) as con:
        users = [u for (u,) in con.execute("SELECT user FROM events")]
    assert gone not in users and kept in users
    assert SECRET_ITEM.encode() not in _store_files(db)
    store = EventStore(db)
    retrain = store.frame()  # what retraining from the store reads
    store.close()
    assert gone not in retrain["user"].to_list() and kept in retrain["user"].to_list()

    # the artifact on disk: every table, id map and embedding row
    after = _scorer_state(path, gone)
    assert after["seen"] == 0 and after["user_table"] == 0
    assert after["scorer_id"] is None and after["retrieval_id"] is None
    assert torch.all(_embedding_rows(after["scorer"].model, [before["scorer_id"]]) == 0)
    assert torch.all(_embedding_rows(after["two_tower"], [before["retrieval_id"]]) == 0)
    # the others are untouched
    assert _scorer_state(path, kept)["seen"] == _scorer_state(original, kept)["seen"]
    vocab = json.loads((path / "scorer" / "encoder.json").read_text())["vocab"]["user"]
    assert gone not in vocab and sum(v.startswith(TOMBSTONE) for v in vocab) == 1
    # the manifest matches the rewritten files
    assert artifacts.problems(path) == []


def test_cli_forget_with_retrieval_in_the_cache(
    original: Path, tmp_path: Path, retrieval_cache: Path
) -> None:
    """An artifact whose retrieval files were built into the serving cache: the edited files
    move to the cache's new name, the old ones (which knew the shopper) are removed."""
    path = _copy(original, tmp_path / "art")
    shutil.rmtree(path / "retrieval")
    manifest = artifacts.read_manifest(path)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if "retrieval/" not in k}
    artifacts.write_manifest(path, manifest)
    old_cache = cache_folder(Artifact.load(path))
    build_retrieval(path, TwoTowerConfig(epochs=1, batch_size=256), out=old_cache)
    gone, kept = _two_users(path)
    store = EventStore(path / "events.sqlite")
    store.append(gone, SECRET_ITEM, "buy")
    store.append(kept, "i3", "view")
    store.close()

    result = CliRunner().invoke(cli, ["forget", str(path), gone, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["events_deleted"] == {gone: 1} and report["known"] == [gone]
    assert report["seen_rows"] > 0 and report["retrieval"] == {"ids": 1, "embedding_rows": 1}

    assert not old_cache.exists()
    new_cache = cache_folder(Artifact.load(path))
    users = Encoder.from_json(new_cache / "user_encoder.json").idmaps_["user"]
    assert gone not in users.index and kept in users.index
    art = Artifact.load(path)
    assert art.seen.filter(pl.col("user") == gone).height == 0
    assert not art.recommender().is_known_user(gone)
    assert SECRET_ITEM.encode() not in _store_files(path / "events.sqlite")

    unknown = CliRunner().invoke(cli, ["forget", str(path), "nobody-at-all"])
    assert unknown.exit_code == 0 and "unknown here" in unknown.stdout
    assert artifacts.problems(path) == []


SMALL_SHOP = {
    "dataset": "simulated",
    "simulate": {"n_events": 6000, "n_users": 200, "n_items": 120, "seed": 3},
}
RECIPES = {
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
    },
    "content": {
        "split": {"kind": "time", "test_days": 14, "valid_days": 7},
        "recipe": {
            "name": "content",
            "dim": 8,
            "hidden": 16,
            "n_negatives": 16,
            "text": {"encoder": "hashed-words", "hashed_dim": 16},
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


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_forgets_down_to_a_new_shopper(recipe: str, tmp_path: Path) -> None:
    """After forgetting, the scorer scores the shopper exactly as one it never saw, and the
    rewritten artifact matches its manifest."""
    import numpy as np

    from shoprec.config import ExperimentConfig
    from shoprec.experiment import train_experiment
    from shoprec.forget import forget_users

    cfg = {
        "name": f"forget_{recipe}",
        "data": SMALL_SHOP,
        "train": {"epochs": 1, "batch_size": 512, "progress": False, "threads": 1},
        "evaluate": {"bootstrap": 0, "slices": False, "ks": [10]},
        **RECIPES[recipe],
    }
    path = train_experiment(ExperimentConfig.from_dict(cfg), tmp_path / recipe, evaluate_test=False)
    gone = _two_users(path)[0]
    before = Artifact.load(path).scorer
    stranger = before.score(["never-seen-shopper"])
    assert not all(np.allclose(before.score([gone])[t], stranger[t]) for t in stranger)

    report = forget_users(path, [gone])
    assert report.known == [gone] and report.seen_rows > 0 and report.scorer.get("ids") == 1
    assert artifacts.problems(path) == []
    art = Artifact.load(path)
    assert art.seen.filter(pl.col("user") == gone).height == 0
    after, stranger = art.scorer.score([gone]), art.scorer.score(["never-seen-shopper"])
    for task in stranger:
        np.testing.assert_array_equal(after[task], stranger[task], err_msg=task)
