"""The command line: describe, and readable errors instead of tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

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
