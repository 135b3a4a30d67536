"""``make demo``: simulate a shop, train MMoE next to single-task models, recommend, and
forecast each product's demand with its reorder list (what the merchant page shows).

Offline and end to end: no file outside the package is read. Every step is a public API call
that a notebook user can copy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.table import Table

from shoprec.artifact import Artifact
from shoprec.config import ExperimentConfig
from shoprec.data.simulate import simulate_shop
from shoprec.experiment import evaluate_scorer, fit_experiment, make_split, save_experiment
from shoprec.recommend import build_retrieval

log = logging.getLogger(__name__)

BEHAVIORS = ["view", "cart", "buy"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes for the demo; the defaults finish in about a minute on 2 CPU cores."""

    events: int = 400_000  # simulated events
    seed: int = 0
    test_days: int = 14  # the last two weeks are the test period
    valid_days: int = 7  # the week before is for model selection
    epochs: int = 8
    batch_size: int = 2048
    n_negatives: int = 4
    output: str = "runs/demo"  # where the MMoE artifact is saved
    forecast: bool = True  # also forecast demand into <output>/forecast (stock-aware serving)

    def experiment(self, model: str, options: dict) -> ExperimentConfig:
        """The demo's experiment config: what `shoprec train` would read from a YAML file."""
        return ExperimentConfig.from_dict(
            {
                "name": "demo" if model == "mmoe" else f"demo_{model}",
                "data": {
                    "dataset": "simulated",
                    "simulate": {"n_events": self.events, "seed": self.seed},
                },
                "split": {
                    "kind": "time",
                    "test_days": self.test_days,
                    "valid_days": self.valid_days,
                },
                "recipe": {"name": "pairs", "n_negatives": self.n_negatives},
                "tasks": BEHAVIORS,
                "model": {"name": model, "embedding_dim": 16, "config": options},
                "train": {
                    "epochs": self.epochs,
                    "batch_size": self.batch_size,
                    "seed": self.seed,
                    "patience": 2,
                    "progress": True,
                },
                "evaluate": {"protocol": "full", "ks": [10, 50], "bootstrap": 200},
                "output": self.output,
            }
        )


def run_demo(config: DemoConfig | None = None, console: Console | None = None) -> dict:
    """Run the demo and print what it finds. Returns the numbers it printed."""
    cfg = config or DemoConfig()
    console = console or Console()
    # Small models gain little from intra-op threads, and lose a lot when cores are busy.
    torch.set_num_threads(1)

    console.rule("[bold]1. A simulated shop")
    start = time.perf_counter()
    ds = simulate_shop(n_events=cfg.events, seed=cfg.seed).dataset
    counts = ds.interactions.df.group_by("behavior").len().sort("len", descending=True)
    console.print(
        f"{len(ds.interactions):,} events from {ds.interactions.df['user'].n_unique():,} shoppers "
        f"over {len(ds.catalog):,} products in "  # type: ignore[arg-type]
        f"{ds.interactions.df['domain'].n_unique()} markets, simulated in "
        f"{time.perf_counter() - start:.1f} s: "
        + ", ".join(f"{b} {n:,}" for b, n in counts.iter_rows())
    )

    console.rule("[bold]2. Split by time (the last two weeks are the test period)")
    mmoe_options = {"n_experts": 4, "expert_dims": [64], "tower_dims": [32]}
    configs = {
        "single_task": cfg.experiment("single_task", {}),
        "mmoe": cfg.experiment("mmoe", mmoe_options),
    }
    split = make_split(ds, configs["mmoe"].split, "buy")
    console.print(
        f"train {len(split.train):,} / valid {len(split.valid or []):,} / test "
        f"{len(split.test):,} events; checked for leakage"
    )

    console.rule("[bold]3. Train MMoE and one single-task network per task (pairs recipe)")
    results: dict[str, dict[str, float]] = {}
    runs = {}
    for name, exp in configs.items():
        run, _, _ = fit_experiment(exp, dataset=ds, split=split)
        ev = evaluate_scorer(run.scorer, split, exp.evaluate)
        results[name] = {
            **{b: run.test[f"{b}/auc"] for b in BEHAVIORS},
            "buy/recall@50": ev.metrics["recall@50"],
            "buy/ndcg@50": ev.metrics["ndcg@50"],
            "seconds": run.info["train_seconds"],
        }
        runs[name] = (run, ev)
        console.print(
            f"{name}: best epoch {run.best_epoch}, {run.info['samples_per_second']:,.0f} samples/s"
        )

    table = Table(title="Test metrics (the test period is read once, after selection)")
    table.add_column("model", no_wrap=True)
    for b in BEHAVIORS:
        table.add_column(f"{b} AUC", justify="right")
    table.add_column("buy Recall@50", justify="right")
    table.add_column("buy NDCG@50", justify="right")
    table.add_column("train s", justify="right")
    ranking_keys = ["buy/recall@50", "buy/ndcg@50"]
    for name, row in results.items():
        table.add_row(
            name,
            *[f"{row[k]:.4f}" for k in [*BEHAVIORS, *ranking_keys]],
            f"{row['seconds']:.1f}",
        )
    console.print(table)
    console.print(
        "AUC: the test period's (shopper, product) samples (touched pairs and sampled "
        "untouched ones). Recall/NDCG@50: the whole catalog ranked by p(buy) for each test "
        "buyer, past purchases excluded."
    )
    for key, metric in [("buy", "AUC"), ("buy/ndcg@50", "NDCG@50")]:
        gain = results["mmoe"][key] - results["single_task"][key]
        console.print(
            f"On the sparse buy task ({metric}) MMoE is "
            f"{'ahead of' if gain > 0 else 'behind'} single-task by {gain:+.4f}."
        )

    console.rule("[bold]4. Save the MMoE artifact and build its retrieval index")
    out = Path(cfg.output)
    run, ev = runs["mmoe"]
    save_experiment(configs["mmoe"], run, ds, split, out)
    start = time.perf_counter()
    with console.status("training the two-tower retrieval model..."):
        build_retrieval(out)
    console.print(f"artifact and retrieval index in {out} ({time.perf_counter() - start:.0f} s)")

    if cfg.forecast:
        console.rule("[bold]5. Forecast each product's demand; what to reorder")
        _show_forecast(cfg, out, console)

    console.rule("[bold]6. Top-10 for three shoppers: the list the service will return")
    _show_recommendations(Artifact.load(out), split.train.df, console, cfg)
    console.print(
        f"Serve it: shoprec serve {out} --open-reads, then http://127.0.0.1:8000/ui/ "
        "(the Merchant tab shows each product's forecast chart, the reorder list and the "
        "products at risk of running out)."
    )
    return results


def _show_forecast(cfg: DemoConfig, out: Path, console: Console) -> Path:
    """``shoprec forecast`` for the demo's shop into ``<out>/forecast``: the served
    recommender reads it (stock-aware lists, ``GET /forecast/{item}``)."""
    from shoprec.inventory.forecast import run_forecast

    exp = ExperimentConfig.from_dict(
        {
            "name": "demo_demand",
            "data": {
                "dataset": "simulated",
                "simulate": {"n_events": cfg.events, "seed": cfg.seed},
            },
            "recipe": {"name": "demand", "freq": "week", "horizon": 4, "history_len": 8},
            "train": {
                "epochs": max(2, cfg.epochs),
                "batch_size": 512,
                "seed": cfg.seed,
                "patience": 2,
                "progress": False,
            },
        }
    )
    start = time.perf_counter()
    with console.status("training the demand forecaster..."):
        folder = run_forecast(exp, out / "forecast")
    reorder = pl.read_parquet(folder / "reorder.parquet")
    titles = pl.read_parquet(out / "items.parquet").select("item", "title")
    top = reorder.filter(pl.col("reorder_qty") > 0).join(titles, on="item", how="left").head(5)
    table = Table(title=f"Reorder list: {top.height} of {int((reorder['reorder_qty'] > 0).sum())}")
    for col in ("product", "stock", "lead-time demand P50 / P90", "P(stock-out)", "order"):
        table.add_column(col, justify="left" if col == "product" else "right")
    for r in top.iter_rows(named=True):
        table.add_row(
            f"{r['title'] or r['item']} ({r['item']})",
            f"{r['stock']:.0f}",
            f"{r['demand_p50_lead']:.1f} / {r['demand_p90_lead']:.1f}",
            f"{r['p_stockout']:.0%}",
            f"{r['reorder_qty']:.0f}",
        )
    console.print(table)
    console.print(
        f"forecast of {reorder.height:,} products in {folder} "
        f"({time.perf_counter() - start:.0f} s); {int(reorder['at_risk'].sum())} at risk of "
        "running out before a restock: the recommender pushes them down."
    )
    return folder


def _show_recommendations(
    art: Artifact, train: pl.DataFrame, console: Console, cfg: DemoConfig
) -> None:
    active = (
        train.filter(pl.col("behavior") == "buy")
        .group_by("user")
        .len()
        .filter(pl.col("len") >= 2)
        .sort("user")["user"]
    )
    rng = np.random.default_rng(cfg.seed)
    shoppers = [str(u) for u in rng.choice(active.to_numpy(), size=3, replace=False)]
    rec = art.recommender()
    info = art.items
    titles = dict(zip(info["item"], info["title"], strict=True))
    cats = dict(zip(info["item"], info["category"], strict=True))
    for user in shoppers:
        hist = train.filter(pl.col("user") == user).sort("timestamp")
        recent = (
            hist.filter(pl.col("behavior").is_in(["cart", "buy"]))
            .tail(6)
            .select("item", "behavior")
            .rows()
        )
        table = Table(title=f"shopper {user}", title_justify="left")
        table.add_column("history (latest last)", overflow="fold", max_width=34)
        table.add_column("#", justify="right")
        table.add_column("recommended", overflow="fold", max_width=34)
        for task in BEHAVIORS:
            table.add_column(f"p({task})", justify="right")
        for i, r in enumerate(rec.recommend(user, 10)):
            h = ""
            if i < len(recent):
                item, what = recent[i]
                h = f"{what}: {titles.get(item, item)} ({cats.get(item)})"
            table.add_row(
                h,
                str(r.rank),
                f"{titles.get(r.item, r.item)} ({cats.get(r.item)})"
                + (" [new]" if r.is_new else ""),
                *[f"{r.predictions[t]:.3f}" for t in BEHAVIORS],
            )
        console.print(table)
