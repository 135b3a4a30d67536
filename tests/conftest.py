"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoprec.data.paths import data_root


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data folder; tests that need it are skipped (with the path) when it is absent."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set SHOPREC_DATA)")
    return root
