"""Schemathesis against the service's OpenAPI document (``make fuzz``; skipped in ``make
test``, which runs the hand-written corpus instead): generated requests, valid and invalid,
to every operation; no 5xx, and every answer's status, content type, headers and body as the
document says.

Run: ``make fuzz`` (installs requirements-fuzz.txt, sets ``SHOPREC_FUZZ=1``);
``SHOPREC_FUZZ_EXAMPLES`` sets the examples per operation (default 100).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("SHOPREC_FUZZ") != "1":
    pytest.skip("schemathesis runs in `make fuzz` (SHOPREC_FUZZ=1)", allow_module_level=True)

import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from serving_helpers import API_KEY, tiny_artifact
from shoprec.serve import ServeConfig, ServeLimits, create_app

ROOT = Path(os.environ.get("SHOPREC_FUZZ_DIR") or tempfile.mkdtemp(prefix="shoprec-fuzz-"))
EXAMPLES = int(os.environ.get("SHOPREC_FUZZ_EXAMPLES", "100"))

torch.set_num_threads(1)
_artifact = tiny_artifact(ROOT)
# generous limits: the fuzzer sends one request at a time and may ask for many explanations
_limits = ServeLimits(anonymous_explains_per_minute=100_000, queue_timeout=60.0)
app = create_app(
    ServeConfig(_artifact, db=ROOT / "fuzz-events.sqlite", api_key=API_KEY, limits=_limits)
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture(scope="module", autouse=True)
def running() -> Iterator[None]:
    """The app's lifespan (artifact loaded, event store open) around every case."""
    with TestClient(app):
        yield


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)


@schema.parametrize()
@settings(
    max_examples=max(EXAMPLES // 4, 10),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_without_a_key(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)
