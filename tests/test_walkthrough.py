"""The README's "Your own shop" walkthrough, exactly as written, on the example files.

From two CSV exports (events with and without timestamps, a catalog) to served
recommendations in four commands: config check, train, recommend, serve. The served list
(GET /recommend) and the command line's list are the same ten items.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoprec.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_shop"
README = ROOT / "README.md"


def walkthrough_commands() -> list[str]:
    """The shoprec commands of the README's walkthrough section, in order."""
    text = README.read_text()
    start = text.index("## Your own shop")
    end = text.index("\n## ", start + 5)
    return re.findall(r"^\.venv/bin/shoprec (.+)$", text[start:end], flags=re.M)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example folder (so runs/ is written in a temporary place)."""
    folder = tmp_path_factory.mktemp("walk") / "examples" / "my_shop"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("runs"))
    return folder.parents[1]


def run(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    return result.output


def test_readme_lists_the_four_commands() -> None:
    cmds = walkthrough_commands()
    verbs = [c.split()[0] for c in cmds]
    assert verbs[:4] == ["config", "train", "recommend", "serve"], cmds


@pytest.mark.slow
@pytest.mark.parametrize("config", ["shop.yaml", "shop_no_time.yaml"])
def test_walkthrough_as_written(shop: Path, config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cmds = walkthrough_commands()
    name = "my_shop" if config == "shop.yaml" else "my_shop_no_time"
    for cmd in cmds[:3]:
        cmd = cmd.replace("shop.yaml", config).replace("runs/my_shop ", f"runs/{name} ")
        args = [a for a in cmd.split() if a != "\\"]
        run(args, shop, monkeypatch)
    artifact = shop / "examples" / "my_shop" / "runs" / name
    assert (artifact / "manifest.json").exists()
    metrics = json.loads((artifact / "metrics.json").read_text())
    assert metrics["test"]["metrics"]["users"] > 0
    # unmapped 'search' events were dropped, not refused
    user = re.search(r"--user (\S+)", cmds[2]).group(1)  # type: ignore[union-attr]
    cli_list = json.loads(
        run(["recommend", str(artifact), "--user", user, "-k", "10", "--json"], shop, monkeypatch)
    )
    assert len(cli_list) == 10

    from fastapi.testclient import TestClient

    from shoprec.serve import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(artifact, api_key="k"))) as client:
        served = client.get(f"/recommend/{user}", params={"k": 10})
        assert served.status_code == 200
        items = [r["item"] for r in served.json()["items"]]
    assert items == [r["item"] for r in cli_list]
