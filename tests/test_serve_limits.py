"""The service's limits and its failure answers: fusion formulas that once gave 500, NaN / inf
/ huge numbers in bodies, all-or-nothing stock updates, the body size limit, the concurrency
limit (503 + Retry-After), the costly-option caps, private reads and the one error schema."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving_helpers import API_KEY, tiny_artifact
from shoprec.recommend.fusion import LOG_LIMIT, MAX_EXPONENT, VARIABLES, Fusion
from shoprec.serve import ServeConfig, ServeLimits, create_app
from shoprec.serve.limits import BodyLimit, ConcurrencyLimit, RateLimit
from shoprec.serve.schemas import ErrorOut

AUTH = {"X-API-Key": API_KEY}
READ = {"X-API-Key": "reader"}
JSON_TYPE = {"content-type": "application/json"}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_artifact(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def client(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("limits") / "events.sqlite"
    limits = ServeLimits(max_body_bytes=4096, anonymous_explain_k=2)
    config = ServeConfig(artifact, db=db, api_key=API_KEY, read_key="reader", limits=limits)
    with TestClient(create_app(config), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def user(client: TestClient) -> str:
    return client.get("/users", params={"limit": 1}, headers=AUTH).json()["users"][0]["user"]


def error_of(r: object, status: int) -> ErrorOut:
    """The answer's body, checked against the one error schema."""
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    body = ErrorOut.model_validate(r.json())  # type: ignore[attr-defined]
    assert body.status == status and body.detail
    return body


# ------------------------------------------------------------------------- fusion formulas


@pytest.mark.parametrize(
    "formula",
    ["buy^1e400", "price^1e308", "buy^-1e400", "buy^1e308*view^1e308", "buy^11", "buy^6*buy^6"],
)
def test_overflowing_fusions_are_refused_with_a_400(
    client: TestClient, user: str, formula: str
) -> None:
    r = client.get(f"/recommend/{user}", params={"fusion": formula, "k": 3})
    assert "between -10 and 10" in error_of(r, 400).detail


@pytest.mark.parametrize("formula", ["price^-10", "buy^-10 * view^-10 * cart^-10", "price^10"])
def test_extreme_but_valid_fusions_give_finite_scores(
    client: TestClient, user: str, formula: str
) -> None:
    r = client.get(f"/recommend/{user}", params={"fusion": formula, "k": 5})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5
    assert all(math.isfinite(x["score"]) and x["score"] > 0 for x in items)


@pytest.mark.parametrize("formula", ["price", "price^0.5"])
def test_explain_a_fusion_without_model_terms(client: TestClient, user: str, formula: str) -> None:
    """Nothing of the model is in the score: no feature attributions, a note, no 500."""
    r = client.get(f"/explain/{user}/i1", params={"fusion": formula}, headers=AUTH)
    assert r.status_code == 200, r.text
    exp = r.json()
    assert exp["features"] == [] and exp["model_log_score"] is None
    assert any("reads no model output" in n for n in exp["notes"])
    assert [t["name"] for t in exp["tasks"]][:1] in (["price"], ["session"])


def test_fusion_terms_are_finite_for_any_values() -> None:
    f = Fusion.parse("buy^-10 * view^10 * price^10 * (1-cart)^10")
    bad = np.array([np.nan, np.inf, -np.inf, 0.0, 1e308, -5.0, 1e-320])
    preds = {"buy": bad, "view": bad[::-1], "cart": bad}
    log = f.log_score(preds, price=bad)
    assert np.all(np.isfinite(log)) and np.all(np.abs(log) <= LOG_LIMIT + 1e-9)
    assert np.all(np.isfinite(f.score(preds, price=bad)))
    assert "price" in VARIABLES and MAX_EXPONENT == 10


def test_fusion_names_only_known_tasks_and_variables() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        Fusion.parse("stockk * buy").check(["buy"])
    with pytest.raises(ValueError, match="at most"):
        Fusion.parse("*".join(["buy"] * 40))
    with pytest.raises(ValueError, match="unknown item variable"):
        Fusion({}, variables={"price": 1.0})  # the price is its own field, not a variable


# ---------------------------------------------------------------------------- request bodies


@pytest.mark.parametrize(
    "body",
    [
        '{"user": "u1", "item": "i1", "behavior": "view", "timestamp": NaN}',
        '{"user": "u1", "item": "i1", "behavior": "view", "timestamp": Infinity}',
        '{"user": "u1", "item": "i1", "behavior": "view", "timestamp": -Infinity}',
        '{"user": "u1", "item": "i1", "behavior": "view", "timestamp": 1e300}',
        '{"user": "u1", "item": "i1", "behavior": "view", "quantity": 1' + "0" * 29 + "}",
    ],
)
def test_events_refuse_nan_inf_and_huge_numbers(client: TestClient, body: str) -> None:
    before = client.get("/health").json()["events_stored"]
    r = client.post("/events", content=body.encode(), headers={**AUTH, **JSON_TYPE})
    err = error_of(r, 422)
    assert err.error == "validation_error" and err.errors and err.errors[0].loc[0] == "body"
    assert client.get("/health").json()["events_stored"] == before


def test_stock_update_is_all_or_nothing(client: TestClient) -> None:
    svc = client.app.state.service  # type: ignore[attr-defined]
    assert client.put("/admin/stock", json={"stock": {"i1": 7}}, headers=AUTH).status_code == 200
    for bad in (10**30, -1, 1.5, "many", None):
        r = client.put("/admin/stock", json={"stock": {"i1": 0, "i2": bad}}, headers=AUTH)
        assert error_of(r, 422).errors[0].loc[:2] == ["body", "stock"]
        assert svc.recommender.stock_overrides["i1"] == 7  # the good first entry: not written


# ------------------------------------------------------------------------------- body limit


def test_a_body_over_the_limit_is_refused_before_it_is_read(client: TestClient) -> None:
    big = b'{"stock": {"' + b"x" * 10_000 + b'": 1}}'
    r = client.put("/admin/stock", content=big, headers={**JSON_TYPE})  # no key: 413 first
    assert "4,096 bytes" in error_of(r, 413).detail

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield b'{"stock": {"'
        for _ in range(20):
            yield b"y" * 1000
        yield b'": 1}}'

    r = client.put("/admin/stock", content=chunks(), headers={**AUTH, **JSON_TYPE})
    error_of(r, 413)
    assert client.get("/health").status_code == 200


def test_body_limit_counts_streamed_bytes() -> None:
    """The middleware alone: a chunked body without Content-Length stops at the limit."""
    reads: list[int] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        while True:
            message = await receive()  # type: ignore[operator]
            reads.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break

    async def run(chunks: int) -> None:
        parts = [{"type": "http.request", "body": b"a" * 60, "more_body": True}] * chunks
        queue = iter([*parts, {"type": "http.request", "body": b"", "more_body": False}])

        async def receive() -> dict:
            return next(queue)

        async def send(message: dict) -> None:
            pass

        scope = {"type": "http", "headers": [], "path": "/x", "method": "POST"}
        await BodyLimit(app, max_bytes=100, linger_bytes=1000)(scope, receive, send)

    with pytest.raises(Exception, match="larger than the limit") as ended:
        asyncio.run(run(5))
    assert sum(reads) == 60  # the second chunk passed the limit: never handed to the app
    assert not ended.value.headers  # the rest was read and dropped: the connection stays
    with pytest.raises(Exception, match="larger than the limit") as endless:
        asyncio.run(run(100))  # more than linger_bytes: given up, the connection closed
    assert endless.value.headers == {"Connection": "close"}

    async def stalled() -> None:  # a client that stops sending mid-body
        parts = iter([{"type": "http.request", "body": b"a" * 60, "more_body": True}] * 2)

        async def receive() -> dict:
            part = next(parts, None)
            if part is None:
                await asyncio.Event().wait()  # never
            return part  # type: ignore[return-value]

        scope = {"type": "http", "headers": [], "path": "/x", "method": "POST"}
        await BodyLimit(app, max_bytes=100, linger_seconds=0.05)(scope, receive, None)  # type: ignore[arg-type]

    with pytest.raises(Exception, match="larger than the limit") as stall:
        asyncio.run(stalled())
    assert stall.value.headers == {"Connection": "close"}


# ------------------------------------------------------------------------ concurrency limit


def test_concurrency_limit_sheds_with_retry_after() -> None:
    """One request at a time, none waiting: the second concurrent one gets a 503 at once;
    with one place in the queue it waits, and is shed when its turn does not come in time."""

    async def scenario(max_queue: int, timeout: float) -> list[tuple[int, dict[str, str]]]:
        release = asyncio.Event()

        async def slow(scope: dict, receive: object, send: object) -> None:
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        shed: list[str] = []
        limit = ConcurrencyLimit(slow, 1, max_queue, timeout, retry_after=2, on_shed=shed.append)
        answers: list[tuple[int, dict[str, str]]] = []

        async def call() -> None:
            head: dict = {}

            async def send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    head.update(message)

            scope = {"type": "http", "path": "/recommend/u1", "method": "GET", "headers": []}
            await limit(scope, None, send)  # type: ignore[arg-type]
            headers = {k.decode(): v.decode() for k, v in head["headers"]}
            answers.append((head["status"], headers))

        first = asyncio.create_task(call())
        await asyncio.sleep(0.01)
        await call()  # while the first one runs
        release.set()
        await first
        assert len(shed) == 1
        return answers

    answers = asyncio.run(scenario(max_queue=0, timeout=1.0))
    assert [a[0] for a in answers] == [503, 200]
    assert answers[0][1]["retry-after"] == "2"
    answers = asyncio.run(scenario(max_queue=1, timeout=0.05))
    assert [a[0] for a in answers] == [503, 200]  # waited 50 ms in the queue, then shed


def test_rate_limit_window() -> None:
    r = RateLimit(2)
    assert r.retry_after("a", now=0.0) is None and r.retry_after("a", now=10.0) is None
    assert r.retry_after("a", now=20.0) == 40
    assert r.retry_after("b", now=20.0) is None  # per client
    assert r.retry_after("a", now=60.5) is None  # the first one left the window


# ----------------------------------------------------------------------- costly options


def test_explain_caps_for_anonymous_callers(artifact: Path, tmp_path: Path) -> None:
    limits = ServeLimits(anonymous_explain_k=2, anonymous_explains_per_minute=1)
    config = ServeConfig(artifact, db=tmp_path / "e.sqlite", api_key=API_KEY, limits=limits)
    with TestClient(create_app(config)) as c:
        r = c.get("/recommend/u1", params={"k": 3, "explain": True})
        assert "k above 2" in error_of(r, 401).detail
        assert c.get("/recommend/u1", params={"k": 2, "explain": True}).status_code == 200
        r = c.get("/recommend/u1", params={"k": 2, "explain": True})
        assert error_of(r, 429).error == "too_many_requests"
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/explain/u1/i1").status_code == 429  # the same budget
        r = c.get("/recommend/u1", params={"k": 3, "explain": True}, headers=AUTH)
        assert r.status_code == 200 and len(r.json()["items"]) == 3  # a key lifts both caps
        assert c.get("/recommend/u1", params={"k": 100}).status_code == 200  # plain lists


# ------------------------------------------------------------------------ private reads


def test_reads_that_reveal_a_shopper_need_a_read_key(client: TestClient, user: str) -> None:
    for path in (f"/history/{user}", "/users", "/audience/i1", "/items/new?audience=2"):
        assert error_of(client.get(path), 401).error == "unauthorized"
        assert error_of(client.get(path, headers={"X-API-Key": "nope"}), 403)
        assert client.get(path, headers=READ).status_code == 200, path
        assert client.get(path, headers=AUTH).status_code == 200, path
    assert client.get("/items/new", params={"audience": 0}).status_code == 200
    assert client.post("/events", json={"user": "u", "item": "i1", "behavior": "view"},
                       headers=READ).status_code == 403  # fmt: skip  # the read key cannot write


def test_explanations_hide_the_history_item_without_a_read_key(
    client: TestClient, user: str
) -> None:
    item = client.get(f"/recommend/{user}", params={"k": 1}).json()["items"][0]["item"]
    with_key = client.get(f"/explain/{user}/{item}", headers=READ).json()
    assert with_key["because"] is not None and "Because you" in with_key["sentence"]
    anonymous = client.get(f"/explain/{user}/{item}").json()
    assert anonymous["because"] is None and "Because you" not in anonymous["sentence"]
    assert anonymous["tasks"] == with_key["tasks"]


def test_open_reads(artifact: Path, tmp_path: Path) -> None:
    config = ServeConfig(artifact, db=tmp_path / "o.sqlite", api_key=API_KEY, private_reads=False)
    with TestClient(create_app(config)) as c:
        assert c.get("/users").status_code == 200
        assert c.get("/history/u1").status_code == 200


# ---------------------------------------------------------------------- the error schema


def test_every_error_status_is_documented_with_the_error_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    seen: set[str] = set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    seen.add(status)
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorOut"), (method, path, status)
            assert "413" in op["responses"], (method, path)
    assert {"400", "401", "403", "404", "409", "413", "422", "429", "503"} <= seen
    assert "ErrorOut" in spec["components"]["schemas"]


def test_unknown_routes_and_methods_answer_the_error_schema(client: TestClient) -> None:
    assert error_of(client.get("/no/such/route"), 404).error == "not_found"
    assert error_of(client.delete("/health"), 405).error == "method_not_allowed"
    r = client.post("/events", content=b"{nope", headers={**AUTH, **JSON_TYPE})
    assert "JSON" in error_of(r, 422).detail
    many = {"stock": {f"b {i}": -1 for i in range(20)}}  # a bad id and a bad level each
    r = client.put("/admin/stock", content=json.dumps(many).encode(), headers={**AUTH, **JSON_TYPE})
    err = error_of(r, 422)
    assert len(err.errors) == 20 and "(and 35 more)" in err.detail and len(r.content) < 10_000
    lots = {"stock": {f"{i}": -1 for i in range(300)}}  # one error for all, not 300
    r = client.put("/admin/stock", content=json.dumps(lots).encode(), headers={**AUTH, **JSON_TYPE})
    err = error_of(r, 422)
    assert len(err.errors) == 1 and "300 stock levels" in err.detail
