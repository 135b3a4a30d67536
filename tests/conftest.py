"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from shoprec.data.paths import data_root


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data folder; tests that need it are skipped (with the path) when it is absent."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set SHOPREC_DATA)")
    return root


@pytest.fixture(scope="session", autouse=True)
def retrieval_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Retrieval files built for artifacts without them go to the session's temporary
    folder, not the user's ~/.cache (subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("shoprec_cache")
    before = os.environ.get("SHOPREC_CACHE")
    os.environ["SHOPREC_CACHE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("SHOPREC_CACHE", None)
    else:
        os.environ["SHOPREC_CACHE"] = before


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models gain nothing from intra-op threads, and on a busy machine they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
