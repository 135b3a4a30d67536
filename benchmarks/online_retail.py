"""Online Retail benchmark: buy (full ranking), return and quantity, ours vs baselines.

Usage: ``python -m benchmarks.online_retail [--quick] [--config FILE] [--out FILE] [--report HTML]``
(``--report``: the section also as the HTML report ``shoprec evaluate --report`` writes, with
plots; coverage@10 and the Gini index of exposure are measured for every row).

Ours comes from the front door: ``benchmarks/configs/online_retail.yaml`` is an experiment
config of the ``windows`` recipe (:mod:`shoprec.recipes.retail`), and every "ours" row is one
fit of that recipe (``WindowsRecipe.prepare`` once, then ``WindowsRecipe.train`` per model:
the config's MMoE, PLE and three single-task nets, the model and tasks replaced) ranked with
the fit's own scorer (``Scorer.rank_scores``, the scorer ``shoprec train`` saves and
``shoprec serve`` serves). Return and quantity come from the fit's ``TrainingRun.test``. This
script only adds the baselines and the tables.

Protocol (settings from the config, see :mod:`shoprec.recipes.retail` for the samples):

* Split by calendar time: test = events from 2011-11-09 to the end of the data (2011-12-09
  12:50), valid = 2011-10-09 .. 2011-11-09 (early stopping only), train = everything before.
  Features of a label window come only from the events before it: training windows from
  the train part, the valid window from train, the test window from train + valid (what a
  shop knows on 2011-11-09). No valid or test label is ever trained on; the test is read
  once, after every model is selected.
* buy: for every test buyer with at least one purchase before the test (a known user), every
  catalog item is scored and ranked; relevant = the items they bought in the test month.
  "All items" ranks the whole catalog (repeat purchases count); "new to user" removes the
  user's past purchases from both the list and the relevant set (users without a new item
  drop out).
* return: AUC of p(return | bought) over the test bought pairs (all test buyers).
* quantity: units bought per (user, item) in the test month, on the test bought pairs: RMSE
  and MAE on units and on log1p(units).
* Rows: popularity (buyers before the test; return: the item's return rate; quantity: the
  item's mean), popularity over the last 30 days, user average (return: the user's return
  rate; quantity: the user's mean), repeat purchase (the user's past items by number of
  orders, then recent popularity; quantity: the pair's mean in earlier windows, else the
  user's), ours single-task (one net per task), MMoE and PLE (three tasks together).
  Baselines use every label window before the test (train + valid); baseline means are
  arithmetic for errors in units and geometric (mean of log1p) for errors in log1p.

Writes the ``online_retail`` section of benchmarks/RESULTS.md (not with ``--quick``), or the
section's markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from benchmarks._results import add_report_flag, stamp, write_html_report, write_section
from shoprec import recipes
from shoprec.config import ExperimentConfig, load_config
from shoprec.data import datasets
from shoprec.data.schema import Dataset
from shoprec.data.split import check_no_leakage, time_split
from shoprec.evaluate import fairness, metrics
from shoprec.evaluate.metrics import Sparse, csr_from_pairs
from shoprec.experiment import item_groups, item_popularity, known_before
from shoprec.recipes import retail

log = logging.getLogger("benchmarks.online_retail")

CONFIG = Path(__file__).resolve().parent / "configs" / "online_retail.yaml"
#: Sizes of the other two models of ours (MMoE's come from the config).
SINGLE_TASK = {"hidden_dims": [64, 32]}
PLE = {"n_levels": 1, "n_task_experts": 1, "n_shared_experts": 2, "expert_dims": [64]}
KS = (10, 20)
RANK_COLS = ("hr@10", "recall@10", "recall@20", "ndcg@10", "mrr")
#: The tables' headings of the metric keys.
LABELS = {
    "hr@10": "HR@10",
    "recall@10": "Recall@10",
    "recall@20": "Recall@20",
    "ndcg@10": "NDCG@10",
    "mrr": "MRR",
}
#: ``TrainingRun.test`` keys -> the quantity table's columns.
QTY_KEYS = {
    "RMSE": "quantity/rmse",
    "MAE": "quantity/mae",
    "RMSE log1p": "quantity/rmse_log1p",
    "MAE log1p": "quantity/mae_log1p",
}


def csr(pairs: pl.DataFrame, users: pl.Series, items: pl.Series) -> Sparse:
    """(user, item) pairs as rows of item indices, one row per user of ``users``."""
    u = pl.DataFrame({"user": users, "_u": np.arange(len(users))})
    i = pl.DataFrame({"item": items, "_i": np.arange(len(items))})
    idx = pairs.join(u, on="user").join(i, on="item")
    return csr_from_pairs(idx["_u"].to_numpy(), idx["_i"].to_numpy(), len(users), len(items))


def quantity_metrics(y: np.ndarray, p: np.ndarray, p_log: np.ndarray | None = None) -> dict:
    """Errors in units (prediction ``p``) and in log1p units (``p_log``, default ``p``)."""
    p_log = p if p_log is None else p_log
    ly, lp = np.log1p(y), np.log1p(np.clip(p_log, 0, None))
    return {
        "RMSE": metrics.rmse(y, p),
        "MAE": metrics.mae(y, p),
        "RMSE log1p": metrics.rmse(ly, lp),
        "MAE log1p": metrics.mae(ly, lp),
    }


def variants(cfg: ExperimentConfig) -> dict[str, list[tuple[str, ExperimentConfig]]]:
    """Our rows: label -> the configs fitted for it (the config itself is the MMoE row)."""
    single = {"model.name": "single_task", "model.config": SINGLE_TASK}
    quantity = next(t for t in cfg.to_dict()["tasks"] if t["name"] == "quantity")
    ple = {**PLE, "tower_dims": list(cfg.model.config.get("tower_dims", [32]))}
    return {
        "single-task": [
            (task, cfg.with_values({**single, "tasks": [spec]}))
            for task, spec in (("buy", "buy"), ("return", "return"), ("quantity", quantity))
        ],
        "MMoE": [("all", cfg)],
        "PLE": [("all", cfg.with_values({"model.name": "ple", "model.config": ple}))],
    }


def load_split(cfg: ExperimentConfig) -> tuple[Dataset, Any]:
    """The config's dataset and time split."""
    if cfg.split.kind != "time" or cfg.data.dataset is None:
        raise SystemExit("this benchmark needs a built-in dataset and a time split")
    ds = datasets.load(cfg.data.dataset, **cfg.data.options)
    assert isinstance(ds, Dataset)
    split = time_split(ds.interactions, **cfg.split.model_dump(exclude={"kind"}))
    check_no_leakage(split)
    return ds, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 windows, 1 epoch")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, help="write the section here, not in RESULTS.md")
    add_report_flag(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    t_start, cpu_start = time.perf_counter(), time.process_time()
    load_before = os.getloadavg()[0]
    cfg = load_config(args.config)
    if args.quick:
        cfg = cfg.with_values({"recipe.n_train_windows": 2, "train.epochs": 1})
    threads = int(cfg.train.get("threads") or 2)
    torch.set_num_threads(threads)
    timings: dict[str, float] = {}

    # ---------------------------------------------------------------- data and split
    tick = time.perf_counter()
    ds, split = load_split(cfg)
    recipe = recipes.get(cfg.recipe.name)(cfg)
    if not isinstance(recipe, retail.WindowsRecipe):
        raise SystemExit(f"{args.config}: this benchmark runs the windows recipe")
    data = recipe.prepare(ds, split)  # shared by every model of ours below
    rcfg = recipe.retail_config()
    test_rows = recipe.test_rows(data, split)
    test_snap = data.snapshot
    timings["data"] = time.perf_counter() - tick
    n_train_pos = int((data.train_data.columns["buy"] > 0).sum())
    log.info(
        "train rows %d (%d bought) in %d windows from %s; valid rows %d; test bought pairs %d",
        len(data.train_data),
        n_train_pos,
        len(data.windows),
        data.windows[-1][0].date(),
        len(data.valid_data),
        test_rows.height,
    )

    # Test ranking: known test buyers x every catalog item.
    items = data.catalog["item"]
    test_buyers = test_rows["user"].unique().sort()
    users = test_buyers.filter(test_buyers.is_in(test_snap.users["user"].implode()))
    if args.quick:
        users = users.head(150)
    test_pairs = test_rows.select("user", "item")
    past_pairs = test_snap.pairs.select("user", "item")
    rel = csr(test_pairs, users, items)
    rel_new = csr(test_pairs.join(past_pairs, on=["user", "item"], how="anti"), users, items)
    past = csr(past_pairs, users, items)
    n_rel = len(rel.indices)
    n_rel_new = len(rel_new.indices)
    n_users_new = int((np.diff(rel_new.indptr) > 0).sum())
    cold_items = test_pairs.join(
        test_snap.items.filter(pl.col("i_log_buyers") > 0).select("item"), on="item", how="anti"
    ).height

    # exposure of every model's top-k lists over the whole catalog (repeat purchases allowed)
    popularity = item_popularity(known_before(split), items.to_list())
    groups = item_groups(data.catalog, items.to_list(), None)
    codes, names, column = groups if groups is not None else (None, None, None)

    def ranking(scores: np.ndarray) -> dict[str, Any]:
        s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        lists = metrics.top_k_items(s, max(KS))
        return {
            "all": metrics.ranking_metrics(s, rel, None, ks=KS),
            "new": metrics.ranking_metrics(s, rel_new, past, ks=KS),
            "exposure": fairness.exposure_summary(lists, popularity, KS, codes, names, column),
        }

    y_ret = test_rows["return"].to_numpy().astype(np.float64)
    y_qty = test_rows["quantity"].to_numpy()
    label_rows = data.label_rows  # every window before test

    # ---------------------------------------------------------------- baselines
    results: dict[str, dict[str, Any]] = {}
    tick = time.perf_counter()
    pop = retail.popularity_scores(test_snap, items)
    pop_recent = retail.popularity_scores(test_snap, items, recent=True)
    n_u = len(users)
    results["popularity"] = {
        "rank": ranking(np.tile(pop, (n_u, 1))),
        "return_auc": metrics.auc(y_ret, retail.item_return_rate(test_snap, test_rows)),
        "qty": quantity_metrics(
            y_qty,
            retail.mean_quantity(label_rows, test_rows, "item"),
            retail.mean_quantity(label_rows, test_rows, "item", log_scale=True),
        ),
    }
    results["popularity, last 30 days"] = {"rank": ranking(np.tile(pop_recent, (n_u, 1)))}
    user_rate = (
        test_rows.select("user")
        .join(
            test_snap.users.select("user", "u_return_rate"),
            on="user",
            how="left",
            maintain_order="left",
        )["u_return_rate"]
        .fill_null(float(test_snap.items["i_return_rate"].mean()))  # type: ignore[arg-type]
        .to_numpy()
    )
    results["user average"] = {
        "return_auc": metrics.auc(y_ret, user_rate),
        "qty": quantity_metrics(
            y_qty,
            retail.mean_quantity(label_rows, test_rows, "user"),
            retail.mean_quantity(label_rows, test_rows, "user", log_scale=True),
        ),
    }
    pair_q = _pair_mean(label_rows, test_rows)
    results["repeat purchase"] = {
        "rank": ranking(retail.repeat_scores(test_snap, users, items, pop_recent)),
        "qty": quantity_metrics(
            y_qty,
            np.where(
                np.isnan(pair_q[0]), retail.mean_quantity(label_rows, test_rows, "user"), pair_q[0]
            ),
            np.where(
                np.isnan(pair_q[1]),
                retail.mean_quantity(label_rows, test_rows, "user", log_scale=True),
                pair_q[1],
            ),
        ),
    }
    timings["baselines"] = time.perf_counter() - tick

    # ---------------------------------------------------------------- ours: the front door
    score_seconds: dict[str, float] = {}
    fit_info: dict[str, str] = {}
    user_ids = users.to_list()
    for label, fits in variants(cfg).items():
        tick = time.perf_counter()
        row: dict[str, Any] = {}
        epochs = []
        for task, variant in fits:
            run = recipes.get(variant.recipe.name)(variant).train(data, split)
            assert run.scorer.items == items.to_list()
            epochs.append(f"{run.best_epoch} of {len(run.history)}")
            if task in ("all", "buy"):
                t0 = time.perf_counter()
                row["rank"] = ranking(run.scorer.rank_scores(user_ids))
                score_seconds[label] = time.perf_counter() - t0
            if task in ("all", "return") and "return/auc" in run.test:
                row["return_auc"] = run.test["return/auc"]
            if task in ("all", "quantity") and "quantity/rmse" in run.test:
                row["qty"] = {col: run.test[key] for col, key in QTY_KEYS.items()}
        name = "single-task (3 nets)" if label == "single-task" else f"{label} (3 tasks)"
        results[f"ours: {name}"] = row
        fit_info[label] = (
            f"best epochs {'/'.join(e.split()[0] for e in epochs)} (buy/return/quantity)"
            if len(epochs) > 1
            else f"best epoch {epochs[0]}"
        )
        timings[label] = time.perf_counter() - tick
    total = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start

    # ---------------------------------------------------------------- report
    facts = {
        "windows": data.windows,
        "n_train": len(data.train_data),
        "n_train_pos": n_train_pos,
        "n_valid": len(data.valid_data),
        "n_users": n_u,
        "n_test_buyers": len(test_buyers),
        "n_items": len(items),
        "n_rel": n_rel,
        "n_rel_new": n_rel_new,
        "n_users_new": n_users_new,
        "cold_items": cold_items,
        "n_test_pairs": test_rows.height,
        "n_returned": int(y_ret.sum()),
        "timings": timings,
        "score_seconds": score_seconds,
        "fit_info": fit_info,
        "total": total,
        "cpu": cpu,
        "load": (load_before, os.getloadavg()[0]),
        "threads": threads,
        "quick": args.quick,
        "test_start": data.cut,
        "valid_start": data.valid_start,
        "config": args.config,
    }
    text = report(results, facts, rcfg, cfg)
    print(text)
    if args.report is not None:
        html_report(args.report, results, facts)
        log.info("wrote the report to %s", args.report)
    if args.out is not None:
        args.out.write_text(text + "\n")
        log.info("wrote the section to %s", args.out)
    elif args.quick:
        log.info("--quick: RESULTS.md not written")
    else:
        write_section("online_retail", text)
        log.info("wrote the online_retail section of benchmarks/RESULTS.md")


def _pair_mean(label_rows: pl.DataFrame, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The pair's mean window quantity in earlier windows (units, and expm1 of mean log1p);
    NaN for pairs never bought in a label window."""
    means = (
        label_rows.filter(pl.col("buy") == 1)
        .group_by("user", "item")
        .agg(pl.col("quantity").mean().alias("_m"), pl.col("quantity").log1p().mean().alias("_l"))
    )
    j = rows.select("user", "item").join(
        means, on=["user", "item"], how="left", maintain_order="left"
    )
    return (
        j["_m"].fill_null(np.nan).to_numpy(),
        np.expm1(j["_l"].fill_null(np.nan).to_numpy()),
    )


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def report(
    results: dict[str, dict[str, Any]],
    f: dict[str, Any],
    rcfg: retail.RetailConfig,
    cfg: ExperimentConfig,
) -> str:
    """The markdown section: protocol, three tables, notes on where ours loses."""
    lines = [
        "## Online Retail: buy ranking, return, quantity (time split, last month is test)",
        "",
        stamp(),
        f"- torch threads: {f['threads']}; whole run {f['total']:.0f} s wall, {f['cpu']:.0f} s "
        f"CPU (data {f['timings']['data']:.0f} s; single-task {f['timings']['single-task']:.0f}"
        f" s, MMoE {f['timings']['MMoE']:.0f} s, PLE {f['timings']['PLE']:.0f} s wall, each "
        "training plus full-ranking scoring); 1-minute load average "
        f"{f['load'][0]:.1f} at the start and {f['load'][1]:.1f} at the end (above the "
        "threads used, other jobs shared the cores and the wall times are upper bounds)",
        "",
        "**Protocol.** Calendar cut (the data ends 2011-12-09 12:50, so `test_days=30` would "
        "cut at 12:50 on 2011-11-09; we cut at midnight instead): "
        f"test = {f['test_start']:%Y-%m-%d} .. end of data (30.5 days), valid = "
        f"{f['valid_start']:%Y-%m-%d} .. {f['test_start']:%Y-%m-%d} (early stopping only), "
        "train = everything before. Samples come from label windows of 30 days "
        f"({len(f['windows'])} training windows, {f['windows'][-1][0]:%Y-%m-%d} .. "
        f"{f['windows'][0][1]:%Y-%m-%d}); each window's features (user, item, country, "
        "log price, buyers overall and in the last 30 days, item age, typical quantities, "
        "return rates, the user's last "
        f"{rcfg.max_history} distinct items as a sequence sharing the item table, and per pair "
        "how often / how recently / how many the user bought it before) come only from "
        "events before the window; the test window's from train + valid. Training rows: "
        f"{f['n_train']:,} ({f['n_train_pos']:,} bought pairs; negatives = every past item of "
        f"a buyer not bought again, plus {rcfg.n_negatives} never-bought items drawn per "
        f"buyer, {rcfg.popular_negatives:.0%} of the draws by recent buyers and the rest "
        "uniform; their inclusion rate r is undone when ranking: logit + log r for never-bought"
        f" items); valid rows {f['n_valid']:,}. Loss: BCE (buy, return), "
        f"{rcfg.quantity_loss} (quantity); return and quantity masked to bought pairs "
        "(`Task.weight_key`). Early stopping on the valid mean of buy AUC, return AUC and "
        "quantity R² on log1p units; the test is read once.",
        "",
        "**Ours = the front door.** Every *ours* row is a fit of the `windows` recipe from "
        f"`{_rel(f['config'])}` (`shoprec train` runs the same file): the windows are "
        "prepared once (`WindowsRecipe.prepare`), each model is trained by "
        "`WindowsRecipe.train` (MMoE as configured; PLE and the single-task nets with the "
        "model and tasks replaced), buy is ranked by the fit's own scorer "
        "(`Scorer.rank_scores`, what `shoprec serve` serves) and return / quantity are the "
        "fit's `TrainingRun.test`.",
        "",
        f"**Buy, full ranking.** {f['n_users']:,} test buyers known before the test (of "
        f"{f['n_test_buyers']:,} test buyers) x all {f['n_items']:,} catalog items; "
        f"{f['n_rel']:,} relevant (user, item) pairs. *All items*: the whole catalog, repeat "
        "purchases count. *New to user*: the user's past purchases are removed from the list "
        f"and from the relevant set ({f['n_rel_new']:,} pairs, {f['n_users_new']:,} users). "
        f"{f['cold_items']:,} of the {f['n_test_pairs']:,} test bought pairs are items never "
        "sold before the test. Ties count against the relevant item.",
        "",
        "| model | HR@10 | Recall@10 | Recall@20 | NDCG@10 | MRR | new: HR@10 | new: "
        "Recall@10 | new: Recall@20 | new: NDCG@10 | new: MRR | coverage@10 | Gini@10 |",
        "|---|" + "---:|" * 12,
    ]
    for name, r in results.items():
        if "rank" not in r:
            continue
        a, n = r["rank"]["all"], r["rank"]["new"]
        e = r["rank"]["exposure"]["metrics"]
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(a[c]) for c in RANK_COLS)
            + " | "
            + " | ".join(_fmt(n[c]) for c in RANK_COLS)
            + f" | {_fmt(e['coverage@10'])} | {_fmt(e['gini@10'])} |"
        )
    lines += [
        "",
        "Repeat purchase and popularity, last 30 days rank new-to-user items the same way "
        "(past items removed, the rest by recent popularity), so their *new* columns are equal. "
        "Coverage@10: share of the catalog in at least one user's top 10 (*all items* lists); "
        "Gini@10: Gini index of how often each catalog item is in a top 10 (0 = even, 1 = one "
        "item everywhere).",
        "",
        f"**Return and quantity** on the {f['n_test_pairs']:,} test bought pairs "
        f"({f['n_returned']} returned; all test buyers, known or not). Quantity = units of the "
        "item the user bought in the test month.",
        "",
        "| model | return AUC | qty RMSE | qty MAE | qty RMSE log1p | qty MAE log1p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "return_auc" not in r and "qty" not in r:
            continue
        q = r.get("qty", {})
        lines.append(
            f"| {name} | {_fmt(r.get('return_auc'))} | {_fmt(q.get('RMSE'), 2)} | "
            f"{_fmt(q.get('MAE'), 2)} | {_fmt(q.get('RMSE log1p'))} | {_fmt(q.get('MAE log1p'))} |"
        )
    lines += ["", *_verdict(results), ""]
    lines.append(
        "Fits: single-task "
        + f["fit_info"]["single-task"]
        + "; MMoE "
        + f["fit_info"]["MMoE"]
        + "; PLE "
        + f["fit_info"]["PLE"]
        + ". Full-ranking scoring of "
        f"{f['n_users'] * f['n_items'] / 1e6:.1f}M pairs: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in f["score_seconds"].items())
        + f". Sizes: single-task MLP {list(SINGLE_TASK['hidden_dims'])} per task; MMoE "
        f"{dict(cfg.model.config)}; PLE {PLE}; embeddings {rcfg.embedding_dim}."
    )
    if f["quick"]:
        lines.insert(0, "**--quick smoke run: not a result.**")
    return "\n".join(lines)


def html_report(path: Path, results: dict[str, dict[str, Any]], f: dict[str, Any]) -> Path:
    """The section as the HTML report ``shoprec evaluate --report`` writes: every model's
    buy ranking (all items and new to user), return AUC and quantity errors, coverage and
    Gini, and their exposure by popularity decile."""
    rows: dict[str, dict[str, Any]] = {}
    exposure = {}
    for name, r in results.items():
        row: dict[str, Any] = {}
        if "rank" in r:
            row.update({c: r["rank"]["all"][c] for c in RANK_COLS})
            row.update({f"new: {c}": r["rank"]["new"][c] for c in RANK_COLS})
            row.update(r["rank"]["exposure"]["metrics"])
            exposure[name] = r["rank"]["exposure"]
        if r.get("return_auc") is not None:
            row["return auc"] = r["return_auc"]
        for c, v in (r.get("qty") or {}).items():
            row[f"quantity {c.lower()}"] = v
        rows[name] = row
    return write_html_report(
        path,
        "Online Retail: buy ranking, return, quantity" + (" (--quick)" if f["quick"] else ""),
        rows,
        [n for n in rows if n.startswith("ours")],
        subtitle=f"time split, test from {f['test_start']:%Y-%m-%d}; {f['n_users']:,} test "
        f"buyers x {f['n_items']:,} items",
        notes=[
            "Full ranking of every catalog item for the test buyers known before the test; "
            "'new:' columns leave out the user's past purchases. Ties count against the "
            "relevant item. Exposure: the top-10 lists over all items.",
            *(line.replace("**", "") for line in _verdict(results)),
        ],
        exposure=exposure,
    )


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def _verdict(results: dict[str, dict[str, Any]]) -> list[str]:
    """Sentences naming every metric where the best baseline beats our best model."""
    ours = {k: v for k, v in results.items() if k.startswith("ours")}
    base = {k: v for k, v in results.items() if not k.startswith("ours")}
    out = []
    checks: list[tuple[str, Any, bool]] = []
    for scope in ("all", "new"):
        for c in RANK_COLS:
            checks.append(
                (
                    f"buy {LABELS[c]} ({'all items' if scope == 'all' else 'new to user'})",
                    lambda r, s=scope, c=c: r["rank"][s][c] if "rank" in r else None,
                    True,
                )
            )
    checks.append(("return AUC", lambda r: r.get("return_auc"), True))
    for c in ("RMSE", "MAE", "RMSE log1p", "MAE log1p"):
        checks.append((f"quantity {c}", lambda r, c=c: r["qty"][c] if "qty" in r else None, False))
    losses = []
    for label, get, higher in checks:
        b = [(get(r), k) for k, r in base.items() if get(r) is not None]
        o = [(get(r), k) for k, r in ours.items() if get(r) is not None]
        if not b or not o:
            continue
        best_b = max(b) if higher else min(b)
        best_o = max(o) if higher else min(o)
        if (best_b[0] > best_o[0]) if higher else (best_b[0] < best_o[0]):
            losses.append(
                f"{label}: {best_b[1]} {best_b[0]:.4f} vs {best_o[0]:.4f} for the best of ours "
                f"({best_o[1].removeprefix('ours: ')})"
            )
    if losses:
        out.append("**Where ours loses to a baseline:** " + "; ".join(losses) + ".")
    else:
        out.append("Our best model beats every baseline on every metric above.")
    return out


if __name__ == "__main__":
    main()
