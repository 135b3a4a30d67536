"""benchmarks/multitask.py's verdicts: a target is met only beyond twice the seed spread, the
multi-task row of a target line is picked on validation, and the rule line names every row
of ours below the rule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the benchmarks package lives beside src/
    sys.path.insert(0, str(ROOT))

from benchmarks.multitask import (  # noqa: E402
    _as_shipped,
    _rule_line,
    mean_std,
    picked_on_validation,
    target_line,
)


def _row(kind: str, test: list[float], valid: list[float] | None = None) -> dict[str, Any]:
    notes = [{"valid": {"buy/ndcg@10": v}} for v in valid] if valid else []
    return {"kind": kind, "runs": [{"hr@10": t} for t in test], "notes": notes}


def test_mean_and_sample_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_a_target_is_met_only_beyond_twice_the_larger_seed_std() -> None:
    assert "**met**" in target_line("x", [0.40, 0.41, 0.42], [0.30, 0.31, 0.32])
    # +0.02 with seed std 0.01 on both sides: 0.02 is not above 2 * 0.01
    tie = target_line("x", [0.32, 0.33, 0.34], [0.30, 0.31, 0.32])
    assert "**not met**" in tie and "2*std = 0.0200" in tie
    assert "**not met**" in target_line("x", [0.5], [0.1])  # one seed: no spread to judge by
    assert "**not met**" in target_line("x", [0.30, 0.31, 0.32], [0.40, 0.41, 0.42])


def test_the_multi_task_row_is_picked_by_validation_not_test() -> None:
    rows = {
        "ours: a": _row("mt", [0.50, 0.50], valid=[0.10, 0.10]),  # best on test
        "ours: b": _row("ablation", [0.40, 0.40], valid=[0.20, 0.20]),  # best on validation
        "ours: st": _row("st", [0.45, 0.45], valid=[0.30, 0.30]),  # not a multi-task row
    }
    assert picked_on_validation(rows, "buy/ndcg@10", "hr@10", {"mt", "ablation"}) == "ours: b"
    assert picked_on_validation(rows, "missing", "hr@10", {"mt", "ablation"}) == ""


def test_the_rule_line_names_the_rows_below_the_rule() -> None:
    rows = {
        "rule": _row("rule", [0.35]),
        "ours: model": _row("mt", [0.30, 0.32]),
        "ours: blend": _row("mt_blend", [0.36, 0.36]),
    }
    line = _rule_line(rows, "hr@10")
    assert "**not met**" in line and "model 0.3100" in line and "blend" not in line
    assert "**met**" in _rule_line(rows, "hr@10", {"mt_blend"}, " as shipped")


def test_as_shipped_takes_each_rows_blend_where_there_is_one() -> None:
    suffix = " + rule blend (weight on validation)"
    rows = {
        "rule": _row("rule", [0.35]),
        "ours: st": _row("st", [0.30, 0.32]),
        "ours: st" + suffix: _row("st_blend", [0.36, 0.36]),
        "ours: option": _row("option", [0.34, 0.34]),  # weight 0 on every seed: no blend row
    }
    shipped = _as_shipped(rows)
    assert list(shipped) == ["rule", "ours: st", "ours: option"]
    assert shipped["ours: st"]["kind"] == "st_blend" and shipped["ours: option"]["kind"] == "option"
    line = _rule_line(shipped, "hr@10", None, " as shipped")
    assert "**not met**" in line and "option 0.3400" in line and "st " not in line
