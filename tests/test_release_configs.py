"""Public release layouts from configs only: train, evaluate on the release's own test files.

* a multi-behaviour release, one line per user per behaviour file, with its own buy test
  file, trains the multibehavior recipe and is evaluated by full ranking;
* a two-domain folder of ``user<TAB>item`` pairs with arbitrary folder names trains the
  cross_domain recipe (``shoprec transfer``) and is evaluated on its own test files with
  both protocols (full ranking and 1 positive among N sampled negatives).

The release files are written from the seeded simulator, with integer ids as releases have.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shoprec.cli import app
from shoprec.data.simulate import simulate_shop

runner = CliRunner()


def integer_ids(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.col("user").str.strip_prefix("u").cast(pl.Int64),
        pl.col("item").str.strip_prefix("i").cast(pl.Int64),
    )


def write_lines(pairs: pl.DataFrame, path: Path) -> None:
    lines = pairs.group_by("user").agg(pl.col("item").unique().sort()).sort("user")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            f"{u} {' '.join(map(str, items))}\n"
            for u, items in zip(lines["user"], lines["item"], strict=True)
        )
    )


@pytest.fixture(scope="module")
def shop() -> pl.DataFrame:
    ds = simulate_shop(n_events=25_000, n_users=500, n_items=200, seed=5).dataset
    return integer_ids(ds.interactions.df)


def test_behaviour_lines_release_with_its_own_test_file(shop: pl.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "release"
    ev = (
        shop.filter(pl.col("behavior").is_in(["view", "cart", "buy"]))
        .select("user", "item", "behavior")
        .unique()
    )
    buys = ev.filter(pl.col("behavior") == "buy").sort("user", "item")
    rng = np.random.default_rng(0)
    test = (
        buys.with_columns(pl.Series("r", rng.random(buys.height)))
        .filter(pl.len().over("user") >= 2)
        .sort("r")
        .unique("user", keep="first")
        .select("user", "item")
    )
    train = ev.join(test.with_columns(pl.lit("buy").alias("behavior")), on=ev.columns, how="anti")
    for b in ("view", "cart", "buy"):
        write_lines(train.filter(pl.col("behavior") == b), root / b / "train.txt")
    write_lines(test, root / "buy" / "test.txt")
    config = tmp_path / "mb.yaml"
    config.write_text(
        """
name: mb_release
data:
  release:
    format: behavior_lines
    root: release
    behaviors: {view: view/train.txt, cart: cart/train.txt, buy: buy/train.txt}
    test: {buy: buy/test.txt}
split: {kind: given}
recipe: {name: multibehavior}
tasks: [view, cart, buy]
model: {name: mmoe, embedding_dim: 8, config: {n_experts: 2}}
train: {epochs: 2, batch_size: 512, progress: false, threads: 1}
evaluate: {protocol: full, ks: [10], bootstrap: 50}
output: runs/mb
"""
    )
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "mb" / "metrics.json").read_text())["test"]
    assert metrics["protocol"] == "full"
    assert metrics["counts"]["users"] == test.height  # every test user of the release
    assert 0 < metrics["metrics"]["hr@10"] <= 1


def test_two_domain_pair_folders_with_any_names(shop: pl.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "cdr"
    pairs = (
        shop.filter(pl.col("behavior").is_in(["click", "cart", "buy"]))
        .select("user", "item", "domain")
        .unique()
    )
    names = {"market_0": "big_market", "market_1": "small shop"}  # any folder names
    rng = np.random.default_rng(1)
    for domain, folder in names.items():
        part = pairs.filter(pl.col("domain") == domain).sort("user", "item")
        part = part.with_columns(pl.Series("r", rng.random(part.height)))
        test = part.filter(pl.len().over("user") >= 3).sort("r").unique("user", keep="first")
        train = part.join(test, on=["user", "item"], how="anti")
        (root / folder).mkdir(parents=True)
        for name, frame in (("train.txt", train), ("test.txt", test)):
            frame.select("user", "item").with_columns(pl.lit(1).alias("r")).write_csv(
                root / folder / name, separator="\t", include_header=False
            )
    config = tmp_path / "cdr.yaml"
    config.write_text(
        """
name: cdr_release
data:
  release: {format: domain_pairs, folder: cdr, domains: {big_market: big, small shop: small}}
split: {kind: given}
recipe: {name: cross_domain, source: big, target: small, method: neighbours}
tasks: [buy]
evaluate: {protocol: full, ks: [10], bootstrap: 0}
output: runs/cdr
"""
    )
    result = runner.invoke(app, ["transfer", str(config)])
    assert result.exit_code == 0, result.output
    artifact = tmp_path / "runs" / "cdr"
    full = json.loads((artifact / "metrics.json").read_text())["test"]
    assert full["protocol"] == "full" and full["metrics"]["users"] > 0
    result = runner.invoke(
        app,
        ["evaluate", str(artifact), "--protocol", "sampled", "--n-negatives", "50", "--json"],
    )
    assert result.exit_code == 0, result.output
    sampled = json.loads(result.stdout)
    assert sampled["protocol"].startswith("sampled")
    assert sampled["metrics"]["users"] == full["metrics"]["users"]
    assert sampled["metrics"]["hr@10"] >= full["metrics"]["hr@10"]
