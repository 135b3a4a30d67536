"""The command line: describe, and readable errors instead of tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoprec.cli import app

runner = CliRunner()


def test_describe_csv_with_flags_as_json(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("cust,sku,event\n1,a,pageview\n1,b,order\n2,a,order\n")
    result = runner.invoke(
        app,
        [
            "data",
            "describe",
            str(path),
            "--json",
            "--user-col",
            "cust",
            "--item-col",
            "sku",
            "--behavior-col",
            "event",
            "--behavior-map",
            "pageview=view,order=buy",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["events"] == 3
    assert summary["users"] == 2 and summary["items"] == 2
    assert summary["events_per_behavior"] == {"buy": 2, "view": 1}
    assert summary["density"] == 0.75


def test_missing_column_is_one_paragraph_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("customer,when\n1,2024-01-01\n")
    result = runner.invoke(app, ["data", "describe", str(path)])
    assert result.exit_code == 2
    text = result.stderr
    assert "Traceback" not in text and "Traceback" not in result.stdout
    assert "required events column 'user' is missing" in text
    assert str(path) in text.replace("\n", "")
    assert text.strip().count("\n\n") == 0  # one paragraph


def test_unknown_target() -> None:
    result = runner.invoke(app, ["data", "describe", "no_such_thing"])
    assert result.exit_code == 2
    assert "neither a built-in dataset" in result.stderr


def _installed_cli() -> list[str]:
    import shutil
    import sys

    exe = Path(sys.executable).parent / "shoprec"
    return [str(exe)] if exe.exists() else [shutil.which("shoprec") or "shoprec"]


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("online_retail", {"raw_rows": 541_909, "buy": 395_611, "return": 7_906}),
        ("tmall", {"view": 858_505, "cart": 180_027, "buy": 92_180}),
    ],
)
def test_installed_command_describes_real_data(real_data: Path, name: str, expected: dict) -> None:
    """The console script itself (not CliRunner) prints JSON whose counts match the files."""
    proc = subprocess.run(
        [*_installed_cli(), "-q", "data", "describe", name, "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SHOPREC_DATA": str(real_data)},
    )
    summary = json.loads(proc.stdout)
    per_behavior = summary["events_per_behavior"]
    for key, value in expected.items():
        assert (summary[key] if key == "raw_rows" else per_behavior[key]) == value
    if name == "online_retail":
        assert summary["raw_rows"] == summary["events"] + summary["dropped_total"]


def test_simulate_then_describe_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "shop"
    result = runner.invoke(app, ["data", "simulate", str(out), "--events", "5000", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (out / "interactions.parquet").exists() and (out / "truth").is_dir()
    result = runner.invoke(app, ["data", "describe", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert 4500 <= summary["events"] <= 5500
    assert {"view", "click", "buy"} <= set(summary["events_per_behavior"])
    assert len(summary["events_per_domain"]) >= 2
