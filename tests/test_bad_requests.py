"""A corpus of hand-written bad requests (``tests/corpus/bad_requests.jsonl``): every one gets
the 4xx it should, never a 5xx, with the one documented error body
(:class:`~shoprec.serve.schemas.ErrorOut`), and none of them changes what is stored.

Each line: ``method``, ``path``, ``auth`` (none / write / read / wrong), optionally ``params``,
``json``, ``body`` (raw text), ``body_hex`` (raw bytes), ``big_body`` (a JSON string body of
that many bytes), ``content_type``; ``expect`` lists the statuses it may get and ``why`` says
what is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from serving_helpers import API_KEY, tiny_artifact
from shoprec.serve import ServeConfig, create_app
from shoprec.serve.schemas import ErrorOut

CORPUS = Path(__file__).parent / "corpus" / "bad_requests.jsonl"
KEYS = {"none": None, "write": API_KEY, "read": "read-key", "wrong": "not-the-key"}
CASES = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def test_the_corpus_is_large_and_varied() -> None:
    assert len(CASES) >= 250
    statuses = {s for c in CASES for s in c["expect"]}
    assert {400, 401, 403, 404, 405, 413, 422} <= statuses
    assert all(max(c["expect"]) < 500 for c in CASES)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    artifact = tiny_artifact(tmp_path_factory.getbasetemp())
    db = tmp_path_factory.mktemp("corpus") / "events.sqlite"
    config = ServeConfig(artifact, db=db, api_key=API_KEY, read_key=KEYS["read"])
    with TestClient(create_app(config), raise_server_exceptions=False) as c:
        yield c
    torch.set_num_threads(threads)


def send(client: TestClient, case: dict[str, Any]) -> Any:
    headers = {}
    if KEYS[case["auth"]] is not None:
        headers["X-API-Key"] = KEYS[case["auth"]]
    kwargs: dict[str, Any] = {"params": case.get("params")}
    if "json" in case:
        kwargs["content"] = json.dumps(case["json"]).encode()
    elif "body" in case:
        kwargs["content"] = case["body"].encode("utf-8", "surrogatepass")
    elif "body_hex" in case:
        kwargs["content"] = bytes.fromhex(case["body_hex"])
    elif "big_body" in case:
        kwargs["content"] = b'"' + b"u" * (case["big_body"] - 2) + b'"'
    if "content" in kwargs:
        headers["content-type"] = case.get("content_type", "application/json")
    return client.request(case["method"], case["path"], headers=headers, **kwargs)


def test_every_bad_request_gets_its_4xx_and_the_error_body(client: TestClient) -> None:
    """All cases in one test (one server, one pass): the failures are listed together."""
    stored = client.get("/health").json()["events_stored"]
    stock = dict(client.app.state.service.recommender.stock_overrides)  # type: ignore[attr-defined]
    wrong: list[str] = []
    for case in CASES:
        r = send(client, case)
        where = f"#{case['id']} {case['method']} {case['path'][:60]} ({case['why']})"
        if r.status_code >= 500 or r.status_code not in case["expect"]:
            wrong.append(f"{where}: {r.status_code} {r.text[:200]}")
            continue
        try:
            body = ErrorOut.model_validate(r.json())
        except ValueError as e:
            wrong.append(f"{where}: the body is not the error schema: {e}")
            continue
        if body.status != r.status_code or not body.detail:
            wrong.append(f"{where}: {body}")
        if r.status_code in (429, 503) and "retry-after" not in r.headers:
            wrong.append(f"{where}: no Retry-After")
    assert wrong == [], "\n".join(wrong)
    assert client.get("/health").json()["events_stored"] == stored  # nothing was stored
    assert client.app.state.service.recommender.stock_overrides == stock  # type: ignore[attr-defined]
