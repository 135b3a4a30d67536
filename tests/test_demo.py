"""`make demo` runs end to end (at a small size here) and leaves a servable artifact."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import torch
from rich.console import Console

from shoprec.artifact import Artifact
from shoprec.demo import BEHAVIORS, DemoConfig, run_demo


def test_demo_end_to_end_small(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    text = StringIO()
    try:
        results = run_demo(
            DemoConfig(events=20_000, epochs=1, output=str(tmp_path / "demo")),
            console=Console(file=text, width=120),
        )
    finally:
        torch.set_num_threads(before)
    printed = text.getvalue()
    assert set(results) == {"single_task", "mmoe"}
    for row in results.values():
        assert all(0.0 <= row[b] <= 1.0 for b in BEHAVIORS)
    assert "Test metrics" in printed and "shopper u" in printed
    art = Artifact.load(tmp_path / "demo")
    assert (tmp_path / "demo" / "retrieval").is_dir()  # the retrieval index for serving
    assert len(art.recommend("u1", k=5)) == 5
    # the demand forecast the merchant page and the stock-aware lists read
    assert (tmp_path / "demo" / "forecast" / "reorder.parquet").is_file()
    assert "Reorder list" in printed
    assert art.recommender().forecast is not None
