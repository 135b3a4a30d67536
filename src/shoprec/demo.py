"""``make demo``: simulate a shop, train MMoE next to single-task models, recommend,
forecast each product's demand with its reorder list (what the merchant page shows), and show
what transfer buys a small market (:func:`compare_transfer`, with its zero-overlap control).

Offline and end to end: no file outside the package is read. Every step is a public API call
that a notebook user can copy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.table import Table

from shoprec.artifact import Artifact
from shoprec.config import ExperimentConfig
from shoprec.data.simulate import simulate_shop
from shoprec.experiment import (
    evaluate_scorer,
    fit_experiment,
    load_dataset,
    make_split,
    save_experiment,
)
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
    transfer: bool = True  # also show a small market helped by a big one (cross_domain)
    transfer_events: int = 100_000  # the two-market shop of the transfer step
    transfer_overlap: float = 0.9  # its markets' taste_overlap ...
    transfer_control: bool = True  # ... and the same at overlap 0, where transfer cannot help

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

    if cfg.transfer:
        console.rule("[bold]7. Transfer: a small market helped by a big one (cross_domain)")
        results.update(_show_transfer(cfg, console))
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


# --------------------------------------------------------------------------- transfer

#: Test shoppers with at most this many training events in the small market form the
#: "sparse" slice of :func:`compare_transfer`.
SPARSE = 3

#: Transfer settings tried on validation (``recipe.method``, ``recipe.lambda``).
TRANSFER_TRIALS: tuple[tuple[str, float], ...] = (
    ("finetune", 1.0),
    ("joint", 0.3),
    ("joint", 1.0),
    ("joint", 3.0),
)


def transfer_config(
    overlap: float,
    *,
    events: int = 40_000,
    seed: int = 0,
    epochs: int = 8,
    method: str = "joint",
    lam: float = 1.0,
    world: dict[str, Any] | None = None,
    source_history: bool = True,
) -> ExperimentConfig:
    """The transfer experiment: ``market_0`` (big) helps rank ``market_1`` (small).

    Two markets whose tastes share ``overlap`` of their structure (``taste_overlap``) and
    whose item popularity is unrelated (``popularity_overlap: 0``): what carries over is
    taste, not bestsellers. 85% of the shoppers live in market_0, half of all shoppers also
    shop in the other market (10% of their activity). The ranked behavior is the click (the
    densest chosen one; views are exposures); click, favorite, cart and buy events are the
    pairs. The same settings as ``configs/sim_transfer.yaml``.

    Args:
        overlap: the markets' ``taste_overlap``.
        events: simulated events (users: ``events / 25``, at least 500).
        seed: simulation and training seed.
        epochs: maximum epochs (early stopping on validation).
        method: the cross_domain method; ``lam``: its lambda (joint).
        world: other :class:`~shoprec.config.SimulateSection` settings.
    """
    return ExperimentConfig.from_dict(
        {
            "name": f"demo_transfer_{method}",
            "data": {
                "dataset": "simulated",
                "simulate": {
                    "n_events": events,
                    "n_users": max(500, events // 25),
                    "n_items": 400,
                    "n_markets": 2,
                    "source_market_share": 0.85,
                    "shared_user_share": 0.5,
                    "second_market_activity": 0.1,
                    "taste_overlap": overlap,
                    "popularity_overlap": 0.0,
                    "seed": seed,
                    **(world or {}),
                },
                "behaviors": ["click", "favorite", "cart", "buy"],  # chosen, not just seen
            },
            "split": {"kind": "leave_last_out", "behavior": "click", "n_test": 1, "n_valid": 1},
            "recipe": {
                "name": "cross_domain",
                "source": "market_0",
                "target": "market_1",
                "method": method,
                "lambda": lam,
                "source_history": source_history,
                "dim": 16,
                "model": {"history_dropout": 0.5, "use_user_id": False},
            },
            "tasks": ["click"],
            "train": {
                "epochs": epochs,
                "batch_size": 128,
                "lr": 0.01,
                "patience": 2,
                "seed": seed,
                "progress": False,
            },
            "evaluate": {"protocol": "full", "ks": [10], "exposure": False},
        }
    )


def compare_transfer(
    overlap: float,
    *,
    events: int = 40_000,
    seed: int = 0,
    epochs: int = 8,
    trials: tuple[tuple[str, float], ...] = TRANSFER_TRIALS,
    world: dict[str, Any] | None = None,
) -> dict[str, dict[str, float | str]]:
    """Target only vs transfer (best of ``trials`` on validation) vs item neighbours vs
    popularity on the small market's test, each scored once after selection.

    Returns:
        ``name -> {hr@10, ndcg@10, sparse_hr@10, sparse_ndcg@10, valid_ndcg@10, users,
        sparse_users, setting}`` (``sparse_``: test shoppers with at most :data:`SPARSE`
        market_1 training events, where transfer matters most) for ``popularity``
        (no validation score: nothing to select), ``target_only``, ``transfer``,
        ``neighbours_target`` (item neighbours from market_1 alone) and ``neighbours`` (from
        both markets); ``transfer`` also has ``tried``: each trial's validation NDCG@10.
    """
    base = transfer_config(overlap, events=events, seed=seed, epochs=epochs, world=world)
    ds = load_dataset(base.data)
    split = make_split(ds, base.split, "click")

    def fit(method: str, lam: float = 1.0, source_history: bool = True) -> Any:
        exp = transfer_config(
            overlap,
            events=events,
            seed=seed,
            epochs=epochs,
            method=method,
            lam=lam,
            world=world,
            source_history=source_history,
        )
        run, _, _ = fit_experiment(exp, dataset=ds, split=split)
        return run, exp

    candidates = {f"{m} lambda={lam:g}" if m == "joint" else m: fit(m, lam) for m, lam in trials}
    chosen = max(candidates, key=lambda k: candidates[k][0].valid[candidates[k][0].monitor])
    runs = {
        "target_only": (fit("target_only"), "target_only"),
        "transfer": (candidates[chosen], chosen),
        "neighbours_target": (fit("neighbours", source_history=False), "market_1 only"),
        "neighbours": (fit("neighbours"), "both markets"),
    }
    # the slice transfer is for: test shoppers with at most SPARSE market_1 training events
    seen = split.train.df.filter(pl.col("domain") == "market_1").group_by("user").len()
    rich = seen.filter(pl.col("len") > SPARSE)["user"].implode()
    sparse = dataclasses.replace(split, test=split.test.filter(~pl.col("user").is_in(rich)))
    rows: dict[str, dict[str, float | str]] = {}
    for name, ((run, exp), setting) in runs.items():
        ev = evaluate_scorer(run.scorer, split, exp.evaluate)
        ev_sparse = evaluate_scorer(run.scorer, sparse, exp.evaluate)
        users = ev.counts["users"]
        if not rows:  # popularity, ranked by the same evaluation (its validation too)
            pop = ev.baselines["popularity"]["metrics"]
            pop_sparse = ev_sparse.baselines["popularity"]["metrics"]
            rows["popularity"] = {
                "hr@10": pop["hr@10"],
                "ndcg@10": pop["ndcg@10"],
                "sparse_hr@10": pop_sparse["hr@10"],
                "sparse_ndcg@10": pop_sparse["ndcg@10"],
                "valid_ndcg@10": float("nan"),  # not scored by the recipes' validation
                "setting": "target popularity",
            }
        rows[name] = {
            "hr@10": ev.metrics["hr@10"],
            "ndcg@10": ev.metrics["ndcg@10"],
            "sparse_hr@10": ev_sparse.metrics["hr@10"],
            "sparse_ndcg@10": ev_sparse.metrics["ndcg@10"],
            "valid_ndcg@10": run.valid[run.monitor],
            "setting": setting,
        }
    for row in rows.values():
        row["users"] = float(users)
        row["sparse_users"] = float(ev_sparse.counts["users"])
    rows["transfer"]["tried"] = ", ".join(
        f"{k} {r.valid[r.monitor]:.4f}" for k, (r, _) in candidates.items()
    )
    return rows


def _show_transfer(cfg: DemoConfig, console: Console) -> dict[str, dict[str, float]]:
    """Step 7: :func:`compare_transfer` at ``transfer_overlap`` (and at 0, the control),
    printed with each row's gain over target only."""
    overlaps = [cfg.transfer_overlap] + ([0.0] if cfg.transfer_control else [])
    out: dict[str, dict[str, float]] = {}
    for overlap in overlaps:
        start = time.perf_counter()
        with console.status(f"training target-only, fine-tune, joint (overlap {overlap:g})..."):
            rows = compare_transfer(
                overlap, events=cfg.transfer_events, seed=cfg.seed, epochs=cfg.epochs
            )
        seconds = time.perf_counter() - start
        base = rows["target_only"]
        table = Table(
            title=f"market_1 (small) test, markets' taste overlap {overlap:g} "
            f"({int(rows['target_only']['users'])} shoppers, "
            f"{int(rows['target_only']['sparse_users'])} with <= {SPARSE} market_1 events; "
            f"{seconds:.0f} s)"
        )
        for col in ("method", "chosen on validation", "valid NDCG@10", "HR@10", "NDCG@10",
                    "NDCG@10 vs target only", f"NDCG@10, <= {SPARSE} events"):  # fmt: skip
            table.add_column(col, justify="left" if col in ("method", "chosen on validation")
                             else "right")  # fmt: skip
        for name, row in rows.items():
            gain = float(row["ndcg@10"]) / max(float(base["ndcg@10"]), 1e-12) - 1.0
            table.add_row(
                {"neighbours_target": "item neighbours", "neighbours": "item neighbours"}.get(
                    name, name.replace("_", " ")
                ),
                str(row["setting"]),
                "-" if math.isnan(float(row["valid_ndcg@10"])) else f"{row['valid_ndcg@10']:.4f}",
                f"{row['hr@10']:.4f}",
                f"{row['ndcg@10']:.4f}",
                "" if name == "target_only" else f"{gain:+.1%}",
                f"{row['sparse_ndcg@10']:.4f}",
            )
        console.print(table)
        out[f"transfer@{overlap:g}"] = {
            f"{name}/{k}": float(row[k])
            for name, row in rows.items()
            for k in ("hr@10", "ndcg@10", "sparse_ndcg@10", "valid_ndcg@10")
        }
    console.print(
        "market_0 has 85% of the shoppers, half of whom also shop a little in market_1; item "
        "popularity is unrelated between the markets, so only taste carries over. Transfer "
        "(fine-tune or joint J_S + lambda J_T, chosen on validation) reads a shopper's "
        "market_0 history to rank market_1's items; at overlap 0 that history says nothing "
        "about market_1 and the gain should vanish (benchmarks/RESULTS.md, 'Simulator "
        "transfer', says how far it does). Test scores are read once, after selection."
    )
    return out
