"""An artifact trained on hashed shopper ids (``data.hash_user_ids``) is served by raw id.

The service and the CLI hash each incoming id with the same key, so a known shopper stays
known, and the event store, the session log and a forget only ever see the hashed id.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving_helpers import API_KEY, TINY_CONFIG
from shoprec.cli import app as cli
from shoprec.config import ExperimentConfig
from shoprec.data.schema import hash_id
from shoprec.experiment import load_dataset, train_experiment
from shoprec.serve import ServeConfig, create_app

SALT = "a-test-salt-for-hashed-ids"


@pytest.fixture(scope="module")
def hashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny pairs artifact trained with hashed ids, and one raw id of a trained shopper."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SHOPREC_USER_ID_SALT", SALT)
    cfg = dict(TINY_CONFIG)
    cfg["data"] = {**TINY_CONFIG["data"], "hash_user_ids": True}  # type: ignore[dict-item]
    cfg["train"] = {**TINY_CONFIG["train"], "epochs": 1}  # type: ignore[dict-item]
    config = ExperimentConfig.from_dict(cfg)
    path = train_experiment(config, tmp_path_factory.mktemp("hashed") / "artifact")
    raw = ExperimentConfig.from_dict(TINY_CONFIG)
    users = load_dataset(raw.data).interactions.df["user"]  # the raw ids, before hashing
    seen = set(pl.read_parquet(path / "seen.parquet")["user"])
    known = next(u for u in users.unique(maintain_order=True) if hash_id(u, SALT) in seen)
    yield path, known
    mp.undo()


def test_artifact_holds_no_raw_id(hashed: tuple[Path, str]) -> None:
    path, raw = hashed
    seen = set(pl.read_parquet(path / "seen.parquet")["user"])
    assert raw not in seen and hash_id(raw, SALT) in seen


def test_service_maps_raw_ids_to_the_hashed_ones(
    hashed: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained, raw = hashed
    path = tmp_path / "artifact"
    shutil.copytree(trained, path)  # the forget below rewrites it
    monkeypatch.setenv("SHOPREC_USER_ID_SALT", SALT)
    db = tmp_path / "events.sqlite"
    config = ServeConfig(path, db=db, api_key=API_KEY)
    head = {"X-API-Key": API_KEY}
    with TestClient(create_app(config)) as c:
        r = c.get(f"/recommend/{raw}", params={"k": 5})
        assert r.status_code == 200 and r.json()["known_user"] is True
        item = r.json()["items"][0]["item"]
        ev = {"user": raw, "item": item, "behavior": "view"}
        assert c.post("/events", json=ev, headers=head).status_code == 201
        assert c.get(f"/recommend/{raw}").json()["live_events"] == 1
        hist = c.get(f"/history/{raw}", headers=head).json()
        assert hist["known_user"] is True and hist["events"][0]["item"] == item
        with sqlite3.connect(db) as con:
            stored = {u for (u,) in con.execute("SELECT user FROM events")}
        assert stored == {hash_id(raw, SALT)}  # the store never holds the raw id
        gone = c.delete(f"/users/{raw}", headers=head)
        assert gone.status_code == 200 and gone.json()["events_deleted"] == 1
        assert gone.json()["known"] is True
        assert c.get(f"/recommend/{raw}").json()["known_user"] is False


def test_cli_recommend_uses_the_hashed_id(
    hashed: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, raw = hashed
    monkeypatch.setenv("SHOPREC_USER_ID_SALT", SALT)
    res = CliRunner().invoke(cli, ["recommend", str(path), "--user", raw, "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 3
    res = CliRunner().invoke(cli, ["recommend", str(path), "--user", raw, "-k", "3"])
    assert res.exit_code == 0 and "new to this model" not in res.output
    monkeypatch.delenv("SHOPREC_USER_ID_SALT")
    res = CliRunner().invoke(cli, ["recommend", str(path), "--user", raw])
    assert res.exit_code == 2 and "SHOPREC_USER_ID_SALT" in res.output
