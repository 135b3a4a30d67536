"""GET /forecast/{item} and GET /inventory/reorder, end to end: the tiny simulated shop's
recommender artifact served with the forecast ``shoprec forecast`` writes for the same shop
(the demand recipe through :func:`shoprec.inventory.forecast.run_forecast`, 2 epochs)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from serving_helpers import API_KEY, TINY_CONFIG, tiny_artifact
from shoprec.config import ExperimentConfig
from shoprec.inventory.forecast import run_forecast
from shoprec.recommend import RecommenderConfig
from shoprec.serve import ServeConfig, create_app

TINY_DEMAND = {
    "name": "tiny_demand",
    "data": TINY_CONFIG["data"],  # the same shop as the recommender artifact
    "recipe": {
        "name": "demand",
        "freq": "week",
        "horizon": 4,
        "history_len": 4,
        "model": {"hidden": [16]},
    },
    "train": {"epochs": 2, "batch_size": 256, "seed": 0, "progress": False},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.getbasetemp())


@functools.cache
def tiny_forecast(root: Path) -> Path:
    """``shoprec forecast`` for the tiny shop (once per ``root``; the web test shares it)."""
    return run_forecast(ExperimentConfig.from_dict(TINY_DEMAND), root / "tiny_forecast")


@pytest.fixture(scope="module")
def forecast_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_forecast(tmp_path_factory.getbasetemp())


def _client(artifact: Path, db: Path, **config: object) -> TestClient:
    rec = RecommenderConfig(**config)  # type: ignore[arg-type]
    return TestClient(create_app(ServeConfig(artifact, db=db, api_key=API_KEY, recommender=rec)))


@pytest.fixture()
def client(artifact: Path, forecast_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    with _client(artifact, tmp_path / "events.sqlite", forecast=str(forecast_dir)) as c:
        yield c


def test_forecast_of_an_item(client: TestClient, forecast_dir: Path) -> None:
    reorder = pl.read_parquet(forecast_dir / "reorder.parquet")
    item = reorder["item"][0]
    r = client.get(f"/forecast/{item}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"] == item and body["title"] and body["horizon"] == 4
    assert body["trend"] in {"down", "flat", "up"} and body["model"] == "demand_forecaster"
    assert 0 < len(body["history"]) <= 52
    weeks = [h["week"] for h in body["history"]]
    assert weeks == sorted(weeks) and weeks[-1] <= body["origin"]
    fc = body["forecast"]
    assert [p["horizon"] for p in fc] == [1, 2, 3, 4]
    assert all(0 <= p["p50"] <= p["p90"] for p in fc)
    assert fc[0]["week"] > body["origin"]
    # the reorder advice at the same stock is the row shoprec forecast wrote
    want = reorder.row(0, named=True)
    got = body["reorder"]
    assert got["stock"] == want["stock"] == body["stock"]
    for key in ("demand_p50_lead", "demand_p90_lead", "p_stockout", "reorder_qty"):
        assert got[key] == pytest.approx(want[key]), key
    assert got["at_risk"] == want["at_risk"]
    short = client.get(f"/forecast/{item}", params={"horizon": 2}).json()
    assert [p["horizon"] for p in short["forecast"]] == [1, 2]


def test_reorder_list_matches_shoprec_forecast(client: TestClient, forecast_dir: Path) -> None:
    want = pl.read_parquet(forecast_dir / "reorder.parquet")
    r = client.get("/inventory/reorder", params={"limit": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["items"] == want.height and body["service_level"] == 0.9
    to_order = want.filter(pl.col("reorder_qty") > 0)
    assert body["to_order"] == to_order.height > 0
    assert [x["item"] for x in body["reorder"]] == to_order["item"].to_list()
    assert [x["reorder_qty"] for x in body["reorder"]] == to_order["reorder_qty"].to_list()
    risky = [x for x in body["at_risk"]]
    assert body["at_risk_count"] == int(want["at_risk"].sum()) == len(risky)
    assert all(x["at_risk"] and x["p_stockout"] >= 0.5 for x in risky)
    p = [x["p_stockout"] for x in risky]
    assert p == sorted(p, reverse=True)
    assert all(x["title"] for x in body["reorder"][:5])
    assert all(
        x["weeks_of_cover"] is None or math.isfinite(x["weeks_of_cover"]) for x in body["reorder"]
    )
    top = client.get("/inventory/reorder", params={"limit": 3}).json()
    assert len(top["reorder"]) == 3 and top["to_order"] == body["to_order"]


def test_live_stock_changes_the_advice(client: TestClient) -> None:
    first = client.get("/inventory/reorder", params={"limit": 1}).json()["reorder"][0]
    item = first["item"]
    assert first["reorder_qty"] > 0
    put = client.put("/admin/stock", json={"stock": {item: 10_000}}, headers={"X-API-Key": API_KEY})
    assert put.status_code == 200, put.text
    after = client.get(f"/forecast/{item}").json()["reorder"]
    assert after["stock"] == 10_000 and after["reorder_qty"] == 0 and not after["at_risk"]
    assert after["p_stockout"] < first["p_stockout"]
    listed = client.get("/inventory/reorder", params={"limit": 1000}).json()
    assert item not in {x["item"] for x in listed["reorder"]}


def test_stock_moves_recommendations_with_a_real_forecast(
    client: TestClient, forecast_dir: Path
) -> None:
    reorder = pl.read_parquet(forecast_dir / "reorder.parquet")
    key = {"X-API-Key": API_KEY}
    user = client.get("/users", params={"limit": 1}, headers=key).json()["users"][0]["user"]

    def ranks() -> dict[str, int]:
        got = client.get(f"/recommend/{user}", params={"k": 100}, headers=key).json()["items"]
        return {x["item"]: x["rank"] for x in got}

    plenty = dict.fromkeys(reorder["item"].to_list(), 10_000)
    assert client.put("/admin/stock", json={"stock": plenty}, headers=key).status_code == 200
    before = ranks()
    # of this shopper's top 100, the item with the most forecast demand over its lead time
    shown = reorder.filter(pl.col("item").is_in(list(before))).sort(
        "demand_p50_lead", descending=True
    )
    item = shown["item"][0]
    assert shown["demand_p50_lead"][0] > 1.0
    client.put("/admin/stock", json={"stock": {item: 1}}, headers=key)
    after = ranks()
    assert item not in after or after[item] > before[item]
    exp = client.get(f"/explain/{user}/{item}", headers=key).json()
    assert "Moved down for stock" in exp["sentence"], exp["sentence"]
    inventory = next(t for t in exp["tasks"] if t["name"] == "inventory")
    assert inventory["value"] > 0.5  # p_stockout: median demand over the lead time > 1 unit
    total = sum(t["contribution"] for t in exp["tasks"])
    assert total == pytest.approx(exp["log_score"] - exp["reference_log_score"], abs=1e-6)
    health = client.get("/health").json()
    assert health["forecast"] == str(forecast_dir)


def test_bad_requests(client: TestClient, forecast_dir: Path) -> None:
    item = pl.read_parquet(forecast_dir / "reorder.parquet")["item"][0]
    unknown = client.get("/forecast/no-such-item")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_found" and "no-such-item" in unknown.json()["detail"]
    negative = client.get(f"/forecast/{item}", params={"lead_time_weeks": -1})
    assert negative.status_code == 422 and "lead_time_weeks" in negative.json()["detail"]
    beyond = client.get(f"/forecast/{item}", params={"lead_time_weeks": 6})
    assert beyond.status_code == 422
    assert "beyond the forecast's horizon of 4" in beyond.json()["detail"]
    far = client.get(f"/forecast/{item}", params={"horizon": 9})
    assert far.status_code == 422 and "beyond the forecast's 4 weeks" in far.json()["detail"]
    level = client.get("/inventory/reorder", params={"service_level": 1.5})
    assert level.status_code == 422
    lead = client.get("/inventory/reorder", params={"lead_time_weeks": 5})
    assert lead.status_code == 422 and "horizon" in lead.json()["detail"]


def test_without_a_forecast_the_answer_says_how_to_make_one(artifact: Path, tmp_path: Path) -> None:
    with _client(artifact, tmp_path / "events.sqlite") as c:
        for path in ("/inventory/reorder", "/forecast/i1"):
            r = c.get(path)
            assert r.status_code == 409, r.text
            assert r.json()["error"] == "conflict"
            assert "shoprec forecast" in r.json()["detail"]
        assert c.get("/health").json()["forecast"] is None


def test_openapi_documents_the_merchant_endpoints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    fc = spec["paths"]["/forecast/{item}"]["get"]
    assert fc["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ForecastOut"
    )
    assert {"404", "409", "422"} <= set(fc["responses"])
    ro = spec["paths"]["/inventory/reorder"]["get"]
    assert ro["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ReorderResponse"
    )
    assert "ReorderRow" in spec["components"]["schemas"]


def test_items_of_unknown_stock_are_counted_not_listed(client: TestClient) -> None:
    before = client.get("/inventory/reorder", params={"limit": 1000}).json()
    assert before["stock_unknown"] == 0  # the tiny catalog knows every item's stock
    rec = client.app.state.service.recommender  # type: ignore[attr-defined]
    gone = [x["item"] for x in before["reorder"][:3]]
    for item in gone:  # as for a product whose stock the shop never sent
        rec.catalog.stock[rec.catalog.pos[item]] = -1
    after = client.get("/inventory/reorder", params={"limit": 1000}).json()
    assert after["stock_unknown"] == 3 and after["items"] == before["items"] - 3
    assert not set(gone) & {x["item"] for x in after["reorder"] + after["at_risk"]}
