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
            DemoConfig(
                events=20_000, epochs=1, output=str(tmp_path / "demo"), transfer_events=15_000
            ),
            console=Console(file=text, width=120),
        )
    finally:
        torch.set_num_threads(before)
    printed = text.getvalue()
    assert set(results) == {"single_task", "mmoe", "transfer@0.9", "transfer@0"}
    for name in ("single_task", "mmoe"):
        assert all(0.0 <= results[name][b] <= 1.0 for b in BEHAVIORS)
    # step 7: the small market's test, each method beside target only, and the control
    for overlap in ("0.9", "0"):
        row = results[f"transfer@{overlap}"]
        for method in ("popularity", "target_only", "transfer", "neighbours"):
            assert 0.0 <= row[f"{method}/ndcg@10"] <= row[f"{method}/hr@10"] <= 1.0
        assert f"taste overlap {overlap} " in printed
    assert "7. Transfer" in printed and "only taste carries over" in printed
    assert "Test metrics" in printed and "shopper u" in printed
    art = Artifact.load(tmp_path / "demo")
    assert (tmp_path / "demo" / "retrieval").is_dir()  # the retrieval index for serving
    assert len(art.recommend("u1", k=5)) == 5
    # the demand forecast the merchant page and the stock-aware lists read
    assert (tmp_path / "demo" / "forecast" / "reorder.parquet").is_file()
    assert "Reorder list" in printed
    assert art.recommender().forecast is not None
