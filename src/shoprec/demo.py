"""``make demo``: simulate a shop, train MMoE next to single-task models, recommend.

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

from shoprec.data.simulate import simulate_shop
from shoprec.data.split import check_no_leakage, time_split
from shoprec.evaluate import metrics
from shoprec.evaluate.protocol import evaluated_users, item_lists
from shoprec.experiment import ExperimentConfig, save_artifact
from shoprec.models import build_model
from shoprec.pipeline import RankingData, prepare_ranking
from shoprec.recommend import build_retrieval
from shoprec.train.loop import TrainConfig, fit, predict

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


def _test_auc(model: torch.nn.Module, data: RankingData) -> dict[str, float]:
    preds = predict(model, data.test)
    return {b: metrics.auc(data.test.columns[b].numpy(), preds[b].numpy()) for b in BEHAVIORS}


def _buy_ranking(
    model: torch.nn.Module, data: RankingData, train: pl.DataFrame, test: pl.DataFrame
) -> dict[str, float]:
    """Full ranking of the whole catalog by p(buy) for the test period's buyers known from
    train, their past purchases excluded: what a shop's "for you" list needs."""
    users = evaluated_users(test, "buy", known=train["user"].unique())
    items = data.item_table["item"]
    scores = data.score(model, users)["buy"]
    return metrics.ranking_metrics(
        scores,
        item_lists(test, users, items, "buy"),
        item_lists(train, users, items, "buy"),
        ks=(10, 50),
    )  # type: ignore[return-value]


def run_demo(config: DemoConfig | None = None, console: Console | None = None) -> dict:
    """Run the demo and print what it finds. Returns the numbers it printed."""
    cfg = config or DemoConfig()
    console = console or Console()
    # Small models gain little from intra-op threads, and lose a lot when cores are busy.
    torch.set_num_threads(1)

    console.rule("[bold]1. A simulated shop")
    start = time.perf_counter()
    shop = simulate_shop(n_events=cfg.events, seed=cfg.seed)
    ds = shop.dataset
    counts = ds.interactions.df.group_by("behavior").len().sort("len", descending=True)
    console.print(
        f"{len(ds.interactions):,} events from {ds.interactions.df['user'].n_unique():,} shoppers "
        f"over {len(ds.catalog):,} products in "  # type: ignore[arg-type]
        f"{ds.interactions.df['domain'].n_unique()} markets, simulated in "
        f"{time.perf_counter() - start:.1f} s: "
        + ", ".join(f"{b} {n:,}" for b, n in counts.iter_rows())
    )

    console.rule("[bold]2. Split by time, encode on train only")
    split = time_split(ds.interactions, test_days=cfg.test_days, valid_days=cfg.valid_days)
    check_no_leakage(split)
    data = prepare_ranking(ds, split, BEHAVIORS, n_negatives=cfg.n_negatives, seed=cfg.seed)
    rates = {b: float(data.train.columns[b].mean()) for b in BEHAVIORS}
    console.print(
        f"train {len(data.train):,} / valid {len(data.valid or []):,} / test {len(data.test):,} "
        "(user, product) samples; positive rate in train: "
        + ", ".join(f"{b} {r:.1%}" for b, r in rates.items())
    )

    console.rule("[bold]3. Train MMoE and one single-task network per task")
    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, patience=2, progress=True
    )
    results: dict[str, dict[str, float]] = {}
    models = {}
    mmoe_options = {"n_experts": 4, "expert_dims": [64], "tower_dims": [32]}
    for name, options in [("single_task", {}), ("mmoe", mmoe_options)]:
        torch.manual_seed(cfg.seed)
        model = build_model(name, data.features, data.tasks, **options)
        res = fit(model, data.train, data.valid, train_cfg)
        ranked = _buy_ranking(model, data, split.train.df, split.test.df)
        results[name] = {
            **_test_auc(model, data),
            "buy/Recall@50": ranked["Recall@50"],
            "buy/NDCG@50": ranked["NDCG@50"],
            "seconds": res.train_seconds,
        }
        models[name] = model
        console.print(
            f"{name}: best epoch {res.best_epoch}, {res.samples_per_second:,.0f} samples/s"
        )

    table = Table(title="Test metrics (the test period is read once, after selection)")
    table.add_column("model", no_wrap=True)
    for b in BEHAVIORS:
        table.add_column(f"{b} AUC", justify="right")
    table.add_column("buy Recall@50", justify="right")
    table.add_column("buy NDCG@50", justify="right")
    table.add_column("train s", justify="right")
    ranking_keys = ["buy/Recall@50", "buy/NDCG@50"]
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
    for key, metric in [("buy", "AUC"), ("buy/NDCG@50", "NDCG@50")]:
        gain = results["mmoe"][key] - results["single_task"][key]
        console.print(
            f"On the sparse buy task ({metric}) MMoE is "
            f"{'ahead of' if gain > 0 else 'behind'} single-task by {gain:+.4f}."
        )

    console.rule("[bold]4. Top-10 for three shoppers (ranked by p(buy), bought items excluded)")
    _show_recommendations(models["mmoe"], data, split.train.df, ds.catalog.df, console, cfg)  # type: ignore[union-attr]

    console.rule("[bold]5. Save the MMoE artifact and build its retrieval index")
    experiment = ExperimentConfig(
        name="demo",
        data={
            "dataset": "simulated",
            "simulate": {"n_events": cfg.events, "seed": cfg.seed},
            "split": {"kind": "time", "test_days": cfg.test_days, "valid_days": cfg.valid_days},
            "behaviors": BEHAVIORS,
            "n_negatives": cfg.n_negatives,
        },
        model={"name": "mmoe", "embedding_dim": 16, "config": mmoe_options},
        train={"epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed, "patience": 2},
        output=cfg.output,
    )
    out = Path(cfg.output)
    save_artifact(
        out,
        models["mmoe"],
        data.builder,
        split,
        experiment,
        {"test": {f"{b}/auc": results["mmoe"][b] for b in BEHAVIORS}},
    )
    start = time.perf_counter()
    with console.status("training the two-tower retrieval model..."):
        build_retrieval(out)
    console.print(f"artifact and retrieval index in {out} ({time.perf_counter() - start:.0f} s)")
    return results


def _show_recommendations(
    model,
    data: RankingData,
    train: pl.DataFrame,
    catalog: pl.DataFrame,
    console: Console,
    cfg: DemoConfig,
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
    scores = data.score(model, shoppers)
    items = data.item_table["item"]
    titles = dict(zip(catalog["item"], catalog["title"], strict=True))
    cats = dict(zip(catalog["item"], catalog["category"], strict=True))
    for row, user in enumerate(shoppers):
        hist = train.filter(pl.col("user") == user).sort("timestamp")
        bought = set(hist.filter(pl.col("behavior") == "buy")["item"].to_list())
        p_buy = scores["buy"][row].copy()
        p_buy[items.is_in(list(bought)).to_numpy()] = -np.inf
        top = np.argsort(-p_buy)[:10]
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
        for i in range(10):
            h = ""
            if i < len(recent):
                item, what = recent[i]
                h = f"{what}: {titles.get(item, item)} ({cats.get(item)})"
            it = items[int(top[i])]
            table.add_row(
                h,
                str(i + 1),
                f"{titles.get(it, it)} ({cats.get(it)})",
                *[f"{scores[t][row, top[i]]:.3f}" for t in BEHAVIORS],
            )
        console.print(table)
