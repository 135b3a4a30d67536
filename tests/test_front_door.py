"""The front door's steps: splits, training a recipe into one artifact, evaluation protocols,
search on validation, the report, and the command line around them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shoprec import artifact as artifacts
from shoprec.cli import app
from shoprec.config import ExperimentConfig, GivenSplit, RandomSplit
from shoprec.data.schema import Dataset, Interactions
from shoprec.data.split import check_no_leakage
from shoprec.experiment import (
    evaluate_artifact,
    load_dataset,
    make_split,
    ranking_spec,
    train_experiment,
)

SMALL = {
    "name": "small",
    "data": {"dataset": "simulated", "simulate": {"n_events": 20_000, "seed": 3}},
    "split": {"kind": "time", "test_days": 14, "valid_days": 7},
    "recipe": {"name": "pairs", "n_negatives": 2},
    "tasks": ["view", "cart", "buy"],
    "model": {"name": "mmoe", "embedding_dim": 8, "config": {"n_experts": 2}},
    "train": {"epochs": 2, "batch_size": 2048, "progress": False, "threads": 1},
    "evaluate": {"ks": [10, 20], "bootstrap": 100},
}


def events(rows: list[tuple[str, str, str]]) -> Interactions:
    return Interactions.from_frame(
        pl.DataFrame(rows, schema=["user", "item", "behavior"], orient="row")
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("front") / "run"
    return train_experiment(ExperimentConfig.from_dict(SMALL), out)


def test_given_split_holds_out_one_target_item_per_user() -> None:
    train = events(
        [
            ("a", "1", "buy"),
            ("a", "2", "buy"),
            ("a", "2", "view"),
            ("a", "3", "buy"),
            ("b", "1", "buy"),
            ("b", "4", "view"),
        ]
    )
    ds = Dataset("t", train, test=events([("a", "9", "buy"), ("b", "8", "buy")]))
    split = make_split(ds, GivenSplit(kind="given"), "buy")
    valid = split.valid.df  # type: ignore[union-attr]
    assert valid["user"].to_list() == ["a"]  # b has a single buy: kept in train
    assert valid["behavior"].to_list() == ["buy"]
    held = valid["item"][0]
    rest = split.train.df.filter((pl.col("user") == "a") & (pl.col("behavior") == "buy"))
    assert held not in rest["item"].to_list() and rest.height == 2
    assert split.test.df.height == 2
    check_no_leakage(split)


def test_random_per_user_split_is_seeded_and_per_user() -> None:
    rows = [(u, str(i), "buy") for u in "abcdefgh" for i in range(10)] + [("z", "1", "buy")]
    ds = Dataset("t", events(rows))
    spec = RandomSplit(kind="random", per_user=True, fractions=(0.8, 0.1, 0.1), seed=1)
    split = make_split(ds, spec)
    again = make_split(ds, spec)
    assert split.test.df.equals(again.test.df)
    per_user = split.test.df.group_by("user").len()
    assert sorted(per_user["user"].to_list()) == list("abcdefgh")  # z (1 event) stays in train
    assert set(per_user["len"].to_list()) == {1}
    assert split.train.df.height + split.valid.df.height + split.test.df.height == len(rows)  # type: ignore[union-attr]


def test_time_split_without_timestamps_says_what_to_use() -> None:
    ds = Dataset("t", events([("a", "1", "buy"), ("a", "2", "buy")]))
    cfg = ExperimentConfig.from_dict({"data": {"dataset": "simulated"}})
    with pytest.raises(Exception, match="kind: random"):
        make_split(ds, cfg.split)


def test_ranking_spec_counts_items_the_model_cannot_rank() -> None:
    train = events([("a", "1", "buy"), ("b", "2", "view")])
    test = events([("a", "2", "buy"), ("a", "new", "buy"), ("c", "1", "buy")])
    spec = ranking_spec(test, train, ["1", "2"], "buy", None)
    assert spec.users == ["a", "c"]
    assert spec.unknown_relevant == 1
    assert spec.relevant.indices.tolist() == [1, 0]
    assert spec.exclude is not None and spec.exclude.indices.tolist() == [0]  # a's past buy
    assert spec.user_has_history.tolist() == [True, False]


def test_artifact_layout_and_checksums(trained: Path) -> None:
    manifest = artifacts.read_manifest(trained)
    assert manifest["recipe"] == "pairs" and manifest["target"] == "buy"
    assert {"items.parquet", "seen.parquet", "experiment.yaml", "metrics.json"} <= set(
        manifest["files"]
    )
    assert artifacts.verify(trained) == []
    art = artifacts.Artifact.load(trained)
    assert list(art.items["item"]) == art.scorer.items
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test"]["protocol"] == "full"
    assert 0 <= metrics["test"]["metrics"]["ndcg@10"] <= metrics["test"]["metrics"]["hr@10"]
    assert {"warm users"} <= set(metrics["test"]["slices"]) or metrics["test"]["slices"] == {}
    lo, hi = metrics["test"]["ci"]["hr@10"]
    assert lo <= metrics["test"]["metrics"]["hr@10"] <= hi


def test_damaged_artifact_is_refused_with_the_file_named(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "seen.parquet").write_bytes(b"broken")
    with pytest.raises(artifacts.ArtifactError, match=r"seen\.parquet"):
        artifacts.Artifact.load(copy)
    with pytest.raises(artifacts.ArtifactError, match="not a shoprec artifact"):
        artifacts.Artifact.load(tmp_path)


def test_evaluate_again_gives_the_training_run_numbers(trained: Path) -> None:
    ev, _ = evaluate_artifact(trained, overrides={"bootstrap": 0})
    stored = json.loads((trained / "metrics.json").read_text())["test"]["metrics"]
    for key in ("hr@10", "ndcg@10", "recall@20", "mrr"):
        assert ev.metrics[key] == pytest.approx(stored[key])
    sampled, _ = evaluate_artifact(
        trained, overrides={"protocol": "sampled", "n_negatives": 20, "bootstrap": 0}
    )
    assert sampled.protocol.startswith("sampled")
    # 1 positive among 20 drawn items is easier than the whole catalog
    assert sampled.metrics["hr@10"] >= ev.metrics["hr@10"]


def test_cli_evaluate_json_and_report(trained: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["evaluate", str(trained), "--json", "--bootstrap", "50", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["metrics"]["users"] > 0
    html = report.read_text()
    assert html.count("<svg") >= 3 and "popularity" in html


def test_search_picks_on_validation_and_reads_test_once(tmp_path: Path) -> None:
    from shoprec.search import run_search

    cfg = ExperimentConfig.from_dict(
        {
            **SMALL,
            "train": {**SMALL["train"], "epochs": 1},
            "search": {
                "method": "grid",
                "space": {
                    "train.lr": [0.0001, 0.01],
                    "model.embedding_dim": [4, 8],
                    "recipe.n_negatives": [1, 2],
                },
                "trials": 3,
            },
        }
    )
    out, trials = run_search(cfg, tmp_path / "searched")
    assert len(trials) == 3
    best = max(trials, key=lambda t: t.score)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["search"]["best"]["trial"] == best.number
    assert metrics["valid"][metrics["monitor"]] == pytest.approx(best.score)
    assert "test" in metrics  # once, for the chosen model
    chosen = artifacts.Artifact.load(out).config
    assert chosen.model.embedding_dim == best.values["model.embedding_dim"]
    assert (out / "trials.csv").exists()


def test_cli_train_refuses_a_bad_config_in_one_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: {dataset: simulated}\nrecipe: {name: pairs, n_negatvies: 3}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert "recipe.n_negatvies" in result.output and "Traceback" not in result.output


def test_tasks_without_events_are_refused(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_dict({**SMALL, "tasks": ["view", "rate"]})
    with pytest.raises(ValueError, match="rate"):
        train_experiment(cfg, tmp_path / "x")


def test_load_dataset_from_own_files_drops_unmapped(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("c,p,e\n1,a,pv\n1,b,buy\n2,a,search\n")
    cfg = ExperimentConfig.from_dict(
        {
            "data": {
                "events": {
                    "path": "e.csv",
                    "columns": {"user": "c", "item": "p", "behavior": "e"},
                    "behaviors": {"pv": "view"},
                    "drop_unmapped": True,
                }
            }
        },
        base=tmp_path,
    )
    ds = load_dataset(cfg.data)
    assert ds.interactions.df.height == 2
    assert ds.dropped.to_dict() == {"unmapped behavior 'search'": 1}
    assert np.array_equal(ds.interactions.df["behavior"].to_numpy(), ["view", "buy"])


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium missing")
def test_cli_report_opens_in_chromium_with_its_plots(trained: Path, tmp_path: Path) -> None:
    import os

    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["evaluate", str(trained), "--bootstrap", "50", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(report.as_uri())
            svgs = page.locator("main figure > svg")
            assert svgs.count() >= 3  # slices, learning curves, calibration, coverage
            for k in range(svgs.count()):
                box = svgs.nth(k).bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 100
            assert page.locator("tr.ours").count() >= 1  # ours beside popularity
            folder = Path(os.environ.get("SHOPREC_SCREENSHOTS", tmp_path))
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / "cli_report.png"), full_page=True)
        finally:
            browser.close()
