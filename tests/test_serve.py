"""The HTTP service: API contract, events, auth, bad input, metrics, reload under load, any
recipe's artifact, products added at run time, the same list as the Python facade."""

from __future__ import annotations

import math
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving_helpers import API_KEY, fake_artifact, serving, tiny_artifact
from shoprec.artifact import Artifact
from shoprec.serve import ServeConfig, ServeLimits, create_app

AUTH = {"X-API-Key": API_KEY}
EVENT = {"user": "u1", "item": "i1", "behavior": "view"}
JSON_TYPE = {"content-type": "application/json"}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "events.sqlite"


@pytest.fixture(scope="module")
def client(artifact: Path, db: Path) -> Iterator[TestClient]:
    app = create_app(ServeConfig(artifact, db=db, api_key=API_KEY))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def known_user(client: TestClient) -> str:
    return client.get("/users", params={"limit": 5}, headers=AUTH).json()["users"][0]["user"]


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/recommend/{user}",
        "/similar/{item}",
        "/explain/{user}/{item}",
        "/events",
        "/health",
        "/metrics",
        "/admin/reload",
    ):
        assert path in paths


def test_recommend_contract(client: TestClient, known_user: str) -> None:
    r = client.get(f"/recommend/{known_user}", params={"k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == known_user and body["known_user"] is True
    assert body["fusion"] == "buy" and body["model"] == "mmoe" and body["recipe"] == "pairs"
    assert [x["rank"] for x in body["items"]] == [1, 2, 3, 4]
    first = body["items"][0]
    assert set(first["predictions"]) == {"view", "cart", "buy"}
    assert first["explanation"] is None
    assert {"category", "price", "title", "stock"} <= set(first["attributes"])
    explained = client.get(f"/recommend/{known_user}", params={"k": 2, "explain": True}).json()
    assert explained["items"][0]["explanation"]["sentence"].startswith("Recommended")


def test_unknown_user_gets_cold_start_never_5xx(client: TestClient) -> None:
    for user in ("brand-new-shopper", "ünïcødé-user", "x" * 128):
        r = client.get(f"/recommend/{user}", params={"k": 5})
        assert r.status_code == 200, r.text
        assert r.json()["known_user"] is False and len(r.json()["items"]) == 5
    r = client.get("/explain/brand-new-shopper/i1")
    assert r.status_code == 200 and r.json()["because"] is None
    assert client.get("/history/brand-new-shopper", headers=AUTH).json()["events"] == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    [
        ("get", "/recommend/u1?k=0", {}, 422, "greater than or equal to 1"),
        ("get", "/recommend/u1?k=1000", {}, 422, "less than or equal to 100"),
        ("get", "/recommend/u1?k=ten", {}, 422, "valid integer"),
        ("get", "/recommend/u1?fusion=buy%2Bprice", {}, 400, "cannot read"),
        ("get", "/recommend/u1?fusion=click", {}, 400, "unknown task"),
        ("get", f"/recommend/{'x' * 129}", {}, 422, "at most 128"),
        ("get", "/similar/no-such-item", {}, 404, "unknown item 'no-such-item'"),
        ("get", "/explain/u1/no-such-item", {}, 404, "unknown item"),
        ("get", "/audience/no-such-item", {}, 404, "unknown item"),
        ("post", "/events", {"json": {"user": "u1", "item": "i1"}}, 422, "behavior"),
        ("post", "/events", {"json": {"user": "u1", "item": "i1", "behavior": "hug"}}, 422, "view"),
        ("post", "/events", {"json": {"user": " ", "item": "i1", "behavior": "view"}}, 422, "user"),
        ("post", "/events", {"json": {**EVENT, "x": 1}}, 422, "extra"),
        ("post", "/events", {"content": b"{not json", "headers": JSON_TYPE}, 422, "JSON"),
        ("put", "/admin/stock", {"json": {"stock": {"i1": -1}}}, 422, "greater than or equal to 0"),
        ("post", "/admin/reload", {"json": {"artifact": "/no/such/folder"}}, 403, "outside"),
        ("post", "/admin/reload", {"json": {"artifact": "no_such_folder"}}, 400, "cannot load"),
        ("post", "/admin/catalog", {"json": {"items": []}}, 422, "at least 1"),
        ("post", "/admin/catalog", {"json": {"items": [{"item": "s", "price": -1}]}}, 422, "price"),
        (
            "post",
            "/admin/catalog",
            {"json": {"items": [{"item": "sku-9", "category": "bags"}]}},
            422,
            "'pairs' recipe cannot score products added at run time",
        ),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(
    client: TestClient, method: str, path: str, kwargs: dict, status: int, message: str
) -> None:
    kwargs = dict(kwargs)
    headers = {**AUTH, **kwargs.pop("headers", {})}
    r = client.request(method.upper(), path, headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.text


def test_write_and_admin_endpoints_need_the_key(client: TestClient) -> None:
    event = {"user": "u1", "item": "i1", "behavior": "view"}
    assert client.post("/events", json=event).status_code == 401
    r = client.post("/events", json=event, headers={"X-API-Key": "wrong"})
    assert r.status_code == 403 and "wrong API key" in r.text
    assert client.post("/admin/reload").status_code == 401
    assert client.put("/admin/stock", json={"stock": {}}).status_code == 401
    assert client.post("/admin/catalog", json={"items": [{"item": "x"}]}).status_code == 401


def test_an_event_changes_the_next_recommendation(client: TestClient, db: Path) -> None:
    user = client.get("/users", params={"limit": 3}, headers=AUTH).json()["users"][1]["user"]
    first = client.get(f"/recommend/{user}", params={"k": 6}).json()
    top = first["items"][0]["item"]
    r = client.post("/events", json={"user": user, "item": top, "behavior": "buy"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["known_item"] is True
    # persisted before it was acknowledged: another connection sees it, in WAL mode
    with sqlite3.connect(db) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = other.execute("SELECT item, behavior FROM events WHERE user = ?", (user,))
        assert (top, "buy") in rows.fetchall()
    second = client.get(f"/recommend/{user}", params={"k": 6}).json()
    assert top not in {x["item"] for x in second["items"]}
    assert second["live_events"] == 1
    history = client.get(f"/history/{user}", headers=AUTH).json()["events"]
    assert history[0] == {**history[0], "item": top, "behavior": "buy", "source": "session"}


def test_events_survive_a_restart(artifact: Path, tmp_path: Path) -> None:
    config = ServeConfig(artifact, db=tmp_path / "events.sqlite", api_key=API_KEY)
    event = {"user": "returning-guest", "item": "i3", "behavior": "cart"}
    with TestClient(create_app(config)) as c:
        assert c.post("/events", json=event, headers=AUTH).status_code == 201
    with TestClient(create_app(config)) as c:
        history = c.get("/history/returning-guest", headers=AUTH).json()["events"]
        assert [(h["item"], h["behavior"]) for h in history] == [("i3", "cart")]
        assert c.get("/health").json()["events_stored"] == 1


def test_unknown_item_event_is_stored_but_flagged(client: TestClient) -> None:
    event = {"user": "u5", "item": "brand-new-sku", "behavior": "view"}
    r = client.post("/events", json=event, headers=AUTH)
    assert r.status_code == 201 and r.json()["known_item"] is False
    assert client.get("/recommend/u5").status_code == 200


def test_similar_and_explain(client: TestClient, known_user: str) -> None:
    item = client.get(f"/recommend/{known_user}", params={"k": 1}).json()["items"][0]["item"]
    similar = client.get(f"/similar/{item}", params={"k": 5}).json()["items"]
    assert len(similar) == 5 and item not in {s["item"] for s in similar}
    exp = client.get(f"/explain/{known_user}/{item}").json()
    total = sum(t["contribution"] for t in exp["tasks"])
    assert math.isclose(total, exp["log_score"] - exp["reference_log_score"], abs_tol=1e-6)
    gap = exp["model_log_score"] - exp["baseline_model_log_score"]
    assert abs(sum(f["attribution"] for f in exp["features"]) - gap) <= 0.03 * abs(gap) + 1e-3
    assert set(exp["gates"]) == {"view", "cart", "buy"}


def test_stock_endpoint_filters_out_of_stock(client: TestClient, known_user: str) -> None:
    top = client.get(f"/recommend/{known_user}", params={"k": 3}).json()["items"][0]["item"]
    r = client.put("/admin/stock", json={"stock": {top: 0, "nope": 2}}, headers=AUTH)
    assert r.json() == {"updated": 1, "unknown": ["nope"]}
    items = client.get(f"/recommend/{known_user}", params={"k": 3}).json()["items"]
    assert top not in {x["item"] for x in items}
    client.put("/admin/stock", json={"stock": {top: 5}}, headers=AUTH)


def test_merchant_endpoints(client: TestClient) -> None:
    params = {"limit": 3, "audience": 2}
    new = client.get("/items/new", params=params, headers=AUTH).json()["items"]
    assert new and all(len(x["audience"]) == 2 for x in new)
    item = new[0]["item"]
    users = client.get(f"/audience/{item}", params={"k": 3}, headers=AUTH).json()["users"]
    assert len(users) == 3


def test_health_and_prometheus_metrics(client: TestClient, known_user: str) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["journal_mode"] == "wal"
    assert health["index"] == "faiss" and health["items"] > 0
    assert (health["recipe"], health["model"], health["target"]) == ("pairs", "mmoe", "buy")
    client.get(f"/recommend/{known_user}")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'shoprec_requests_total{method="GET",route="/recommend/{user}",status="200"}' in text
    assert (
        'shoprec_request_seconds_bucket{method="GET",route="/recommend/{user}",le="+Inf"}' in text
    )
    assert "# TYPE shoprec_request_seconds histogram" in text
    assert 'shoprec_events_total{behavior="buy"}' in text
    assert 'shoprec_model_info{artifact="' in text


def test_reload_swaps_the_model(client: TestClient, artifact: Path) -> None:
    before = client.get("/health").json()["loaded_at"]
    r = client.post("/admin/reload", json={"artifact": str(artifact)}, headers=AUTH)
    assert r.status_code == 200 and r.json()["model"] == "mmoe" and r.json()["recipe"] == "pairs"
    assert client.get("/health").json()["loaded_at"] > before


def test_reload_under_load_loses_no_request(artifact: Path, tmp_path: Path) -> None:
    """8 clients keep requesting while the model is reloaded twice: every request gets a
    200, and some of them were answered while a reload was in progress. (They wait for a
    turn instead of being shed: what is measured is the reload, not the load shedding.)"""
    limits = ServeLimits(queue_timeout=60.0)
    config = ServeConfig(artifact, db=tmp_path / "events.sqlite", api_key=API_KEY, limits=limits)
    app = create_app(config)
    results: list[tuple[float, float, int]] = []  # start, end, status
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with serving(app) as base:

        def client_loop(worker: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                for i in range(2000):  # bounded; normally stopped much earlier
                    if stop.is_set():
                        return
                    n = worker * 1000 + i
                    path = f"/recommend/u{n % 50}" if n % 3 else f"/similar/i{n % 50}"
                    start = time.monotonic()
                    try:
                        status = http.get(path, params={"k": 5}).status_code
                    except httpx.HTTPError as e:  # a dropped connection is a lost request
                        with lock:
                            errors.append(repr(e))
                        continue
                    with lock:
                        results.append((start, time.monotonic(), status))

        windows: list[tuple[float, float]] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(client_loop, w) for w in range(8)]
            with httpx.Client(base_url=base, timeout=60) as admin:
                time.sleep(0.3)
                for _ in range(2):
                    t0 = time.monotonic()
                    r = admin.post("/admin/reload", headers=AUTH)
                    windows.append((t0, time.monotonic()))
                    assert r.status_code == 200, r.text
                time.sleep(0.3)
            stop.set()
            for f in futures:
                f.result()
        with httpx.Client(base_url=base) as http:
            metrics = http.get("/metrics").text
    assert errors == []
    assert results and {status for *_, status in results} == {200}
    during = [r for r in results if any(a < r[1] and r[0] < b for a, b in windows)]
    assert during, "no request overlapped a reload"
    assert 'shoprec_reloads_total{outcome="ok"} 2' in metrics


def test_python_facade_and_http_serve_the_same_list(artifact: Path, tmp_path: Path) -> None:
    """``shoprec recommend`` (``Artifact.load(dir).recommender().recommend(user, k)``) and
    ``GET /recommend/U?k=10`` give the same ten items, for known and unknown shoppers."""
    rec = Artifact.load(artifact).recommender()
    users = [u for u, _ in rec.top_users(3)] + ["walk-in-shopper"]
    config = ServeConfig(artifact, db=tmp_path / "events.sqlite", api_key=API_KEY)
    with TestClient(create_app(config)) as c:
        for user in users:
            served = [
                x["item"] for x in c.get(f"/recommend/{user}", params={"k": 10}).json()["items"]
            ]
            assert served == [r.item for r in rec.recommend(user, 10)]
            assert len(served) == 10


def test_any_recipe_serves_and_takes_new_products(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A scorer with no model (the fake recipe) serves through the same app; its scorer can
    score new products, so POST /admin/catalog adds them, they are served at once, and a
    reload keeps them."""
    path = fake_artifact(tmp_path_factory.getbasetemp())
    config = ServeConfig(path, db=tmp_path / "events.sqlite", api_key=API_KEY)
    with TestClient(create_app(config)) as c:
        health = c.get("/health").json()
        assert (health["recipe"], health["model"], health["tasks"]) == (
            "fake",
            "fake",
            ["view", "buy"],
        )
        user = c.get("/users", params={"limit": 1}, headers=AUTH).json()["users"][0]["user"]
        body = c.get(f"/recommend/{user}", params={"k": 5, "explain": True}).json()
        assert body["recipe"] == "fake" and len(body["items"]) == 5
        exp = body["items"][0]["explanation"]
        assert exp["features"] == [] and exp["gates"] is None and exp["notes"]
        product = {"item": "sku-launch", "title": "Launch", "category": "bags", "price": 2.0}
        r = c.post("/admin/catalog", json={"items": [product]}, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["added"] == ["sku-launch"] and r.json()["items"] == health["items"] + 1
        assert c.post("/admin/catalog", json={"items": [product]}, headers=AUTH).status_code == 409
        listed = [x["item"] for x in c.get(f"/recommend/{user}", params={"k": 5}).json()["items"]]
        assert "sku-launch" in listed
        assert c.get("/similar/sku-launch", params={"k": 3}).status_code == 200
        ack = c.post("/events", json={"user": "guest-1", "item": "sku-launch", "behavior": "view"},
                     headers=AUTH).json()  # fmt: skip
        assert ack["known_item"] is True
        assert c.post("/admin/reload", headers=AUTH).status_code == 200
        assert c.get("/health").json()["items"] == health["items"] + 1
        listed = [x["item"] for x in c.get(f"/recommend/{user}", params={"k": 5}).json()["items"]]
        assert "sku-launch" in listed


def test_benchmark_percentile_and_recall() -> None:
    """The serving benchmark's statistics (benchmarks/serve_latency.py)."""
    root = str(Path(__file__).resolve().parent.parent)  # benchmarks/ is at the repo root
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.serve_latency import exact_top, percentile, recall_at_k

    values = np.arange(1, 201, dtype=float)[::-1]  # order must not matter
    assert percentile(values, 50) == 100.0
    assert percentile(values, 99) == 198.0
    assert percentile(values, 100) == 200.0
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    top = exact_top(queries, vectors, 10)
    sims = queries @ vectors.T
    np.testing.assert_array_equal(top, np.argsort(-sims, axis=1)[:, :10])
    assert recall_at_k(top, top, 10) == 1.0
    worse = top.copy()
    worse[:, -2:] = 299 - np.arange(2)  # two of ten replaced (not in any top 10 here)
    assert not np.isin(worse[:, -2:], top).any()
    assert recall_at_k(worse, top, 10) == pytest.approx(0.8)
