"""Tmall view / cart / buy: buy is the target, full-ranking HR@k / NDCG@k on buy/test.txt.

Run::

    .venv/bin/python -m benchmarks.tmall            # the full benchmark, writes RESULTS.md
    .venv/bin/python -m benchmarks.tmall --quick    # a smoke run on a user sample, prints only

Protocol (every row):

* train = the three ``train.txt`` files; test = ``buy/test.txt`` (one item per user, 15,449
  users). Each user's buy/train items are excluded from their ranking; every other of the
  11,953 items is ranked (ties count against the target).
* Model selection never reads test: per user one random buy/train item is held out (users
  with >= 2 buys; all of them here) as validation. Our models pick their epoch on it, then
  are refit on the whole train log for that many epochs and scored on test once. ALS
  settings were chosen on the same hold-out while developing this script.
* Our model (``configs/tmall_mmoe.yaml``): the multi-behavior recipe
  (:mod:`shoprec.recipes.multibehavior`) with the registry's MMoE, tasks view / cart / buy;
  single-task = the same model and features trained on buy alone. Candidates = the user's
  own viewed / carted items (not bought in train), ranked by the model's buy probability;
  every other item follows in the order of the multi-behavior ALS score.

Settings come from ``configs/tmall_mmoe.yaml``; ``implicit`` (ALS) from
requirements-bench.txt.
"""

from __future__ import annotations

import os

# implicit's ALS wants a single-threaded BLAS; it must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from benchmarks._als import fit_als
from benchmarks._results import load_note, stamp, write_section
from shoprec.data.datasets import tmall
from shoprec.data.schema import Interactions
from shoprec.models import build_model, config_from_dict
from shoprec.recipes.multibehavior import (
    BehaviorLog,
    MultiBehaviorConfig,
    Retrieval,
    feature_specs,
    full_ranking_metrics,
    history_baseline_scores,
    hold_out_one,
    make_evaluator,
    model_scores,
    popularity_scores,
    task_specs,
    training_data,
)
from shoprec.train.loop import TrainConfig, fit

log = logging.getLogger("benchmarks.tmall")

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tmall_mmoe.yaml"
KS = (10, 20)
TARGET_HR, TARGET_NDCG = 0.35, 0.17
PUBLISHED = (
    "CascadingRank HR@10 0.3324 / NDCG@10 0.1626 (best published on this release we know "
    "of); MB-CGCN's paper 0.1233 / 0.0677"
)


# --------------------------------------------------------------------------- ALS (implicit)


def als_retrieval(
    blog: BehaviorLog, weights: dict[str, float], params: dict[str, Any], threads: int, seed: int
) -> tuple[Retrieval, float]:
    """Fit implicit's ALS on a weighted sum of behaviors; return (user -> scores, seconds)."""
    import scipy.sparse as sp

    rows, cols, vals = [], [], []
    for b, w in weights.items():
        u, i = blog.pairs(b)
        rows.append(u)
        cols.append(i)
        vals.append(np.full(len(u), w, dtype=np.float32))
    matrix = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(blog.n_users, blog.n_items),
    )  # duplicates (a pair in several behaviors) add up
    model, seconds = fit_als(matrix, params, seed, threads)
    users = torch.from_numpy(np.asarray(model.user_factors, dtype=np.float32))
    items = torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32))

    def scores(idx: np.ndarray) -> torch.Tensor:
        return users[torch.from_numpy(idx)] @ items.T  # (C, I)

    return scores, seconds


# --------------------------------------------------------------------------- our model


def train_ours(
    name: str,
    fit_log: BehaviorLog,
    full_log: BehaviorLog,
    val: tuple[np.ndarray, np.ndarray],
    recipe: MultiBehaviorConfig,
    model_cfg: dict[str, Any],
    train_cfg: TrainConfig,
    settings: dict[str, Any],
    multi_task: bool,
) -> tuple[Any, dict[str, Any]]:
    """Select the epoch on validation, refit on the full log; return (model, facts)."""
    model_cfg = dict(model_cfg)
    model_name = model_cfg.pop("name")
    tick = time.perf_counter()
    data = training_data(fit_log, recipe)
    torch.manual_seed(train_cfg.seed)
    model = build_model(
        model_name, feature_specs(fit_log, recipe), task_specs(recipe, multi_task), **model_cfg
    )
    evaluator = make_evaluator(
        fit_log, val[0], val[1], recipe, ks=KS, max_users=settings["validation"]["users"]
    )
    result = fit(model, data, config=train_cfg, evaluator=evaluator)
    facts: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "val": result.best_scores,
        "train_s": result.train_seconds,
        "rows": len(data),
        "history": [
            {k: round(v, 4) for k, v in h.items() if isinstance(v, float)} for h in result.history
        ],
    }
    log.info("%s: validation %s at epoch %d", name, result.best_scores, result.best_epoch)
    if settings["validation"]["retrain_on_full"]:
        data = training_data(full_log, recipe)
        torch.manual_seed(train_cfg.seed)
        model = build_model(
            model_name, feature_specs(full_log, recipe), task_specs(recipe, multi_task), **model_cfg
        )
        refit = fit(model, data, config=replace(train_cfg, epochs=result.best_epoch))
        facts["train_s"] += refit.train_seconds
        facts["rows_full"] = len(data)
    facts["wall_s"] = time.perf_counter() - tick
    return model, facts


# --------------------------------------------------------------------------- the run


def _load(quick: dict[str, Any] | None, seed: int) -> tuple[Interactions, pl.DataFrame]:
    ds = tmall.load()
    inter, test = ds.interactions, ds.test.of("buy").df
    if quick is not None:
        users = inter.df["user"].unique().sort().sample(quick["users"], seed=seed)
        inter = inter.filter(pl.col("user").is_in(users.implode()))
        test = test.filter(pl.col("user").is_in(users.implode()))
    return inter, test


def run(quick: bool = False, config_path: Path = CONFIG) -> dict[str, Any]:
    """Run every row; return the rows and facts (and write RESULTS.md unless ``quick``)."""
    settings = yaml.safe_load(config_path.read_text())
    threads = int(settings["threads"])
    torch.set_num_threads(threads)
    seed = int(settings["seed"])
    q = settings["quick"] if quick else None
    started = time.perf_counter()

    recipe = config_from_dict(MultiBehaviorConfig, settings["recipe"])
    single_recipe = config_from_dict(
        MultiBehaviorConfig, {**settings["recipe"], **settings["single_task"]["recipe"]}
    )
    train_cfg = config_from_dict(TrainConfig, {**settings["train"], "threads": threads})
    als_params = dict(settings["als"])
    if q is not None:
        train_cfg = replace(train_cfg, epochs=q["epochs"])
        settings["validation"]["users"] = q["validation_users"]
        als_params["iterations"] = q["als_iterations"]

    inter, test = _load(q, seed)
    full_log = BehaviorLog.from_interactions(inter, recipe.behaviors)
    test_users = full_log.user_index(test["user"])
    test_items = full_log.item_index(test["item"])
    fit_log, val_users, val_items = hold_out_one(
        full_log, recipe.target, seed=settings["validation"]["hold_out_seed"]
    )
    log.info(
        "%d users x %d items; %d test pairs; %d validation pairs",
        full_log.n_users,
        full_log.n_items,
        len(test_users),
        len(val_users),
    )

    def evaluate(scorer: Any) -> dict[str, float]:
        return full_ranking_metrics(
            scorer, full_log, test_users, test_items, target=recipe.target, ks=KS
        )

    rows: list[dict[str, Any]] = []

    def add(name: str, metrics: dict[str, float], train_s: float | None, note: str = "") -> None:
        rows.append({"name": name, **metrics, "train_s": train_s, "note": note})
        log.info("%s: %s", name, {k: round(v, 4) for k, v in metrics.items()})

    add("Popularity (buy count)", evaluate(popularity_scores(full_log, recipe.target)), 0.0)
    for tiebreak, what in (("rate", "buys per view"), ("popularity", "buy count")):
        add(
            f"Own carted > viewed items, ties by {what} (no learning)",
            evaluate(lambda u, t=tiebreak: history_baseline_scores(full_log, u, recipe, t)),
            0.0,
        )
    buy_only, buy_s = als_retrieval(full_log, {recipe.target: 1.0}, als_params, threads, seed)
    add("implicit ALS, buy only", evaluate(buy_only), buy_s)
    weights = {b: float(w) for b, w in als_params["multi_behavior_weights"].items()}
    als_multi, multi_s = als_retrieval(full_log, weights, als_params, threads, seed)
    add("implicit ALS, buy + cart + view", evaluate(als_multi), multi_s)

    facts: dict[str, Any] = {}
    for name, rcfg, multi in (
        ("Ours: MMoE, multi-task view/cart/buy", recipe, True),
        ("Ours: same model, single-task buy", single_recipe, False),
    ):
        model, info = train_ours(
            name,
            fit_log,
            full_log,
            (val_users, val_items),
            rcfg,
            settings["model"],
            train_cfg,
            settings,
            multi,
        )
        metrics = evaluate(
            lambda u, m=model, c=rcfg: model_scores(m, full_log, u, c, retrieval=als_multi)
        )
        val = info["val"]
        note = (
            f"epoch {info['best_epoch']} picked on validation (HR@10 "
            f"{val.get('buy/HR@10', float('nan')):.4f}, NDCG@10 "
            f"{val.get('buy/NDCG@10', float('nan')):.4f})"
        )
        add(name, metrics, info["train_s"], note)
        facts[name] = info
    total = time.perf_counter() - started
    out = {
        "rows": rows,
        "facts": facts,
        "total_s": total,
        "threads": threads,
        "load_end": os.getloadavg()[0],
    }
    if quick:
        print(_table(rows))
        return out
    write_section("tmall", _markdown(out, settings))
    print(_table(rows))
    return out


# --------------------------------------------------------------------------- report


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | HR@10 | NDCG@10 | HR@20 | NDCG@20 | train time | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = "-" if not r["train_s"] else f"{r['train_s']:.0f} s"
        lines.append(
            f"| {r['name']} | {r['HR@10']:.4f} | {r['NDCG@10']:.4f} | {r['HR@20']:.4f} | "
            f"{r['NDCG@20']:.4f} | {t} | {r['note']} |"
        )
    return "\n".join(lines)


def _markdown(out: dict[str, Any], settings: dict[str, Any]) -> str:
    rows = out["rows"]
    ours = rows[-2]
    met = ours["HR@10"] >= TARGET_HR and ours["NDCG@10"] >= TARGET_NDCG
    verdict = (
        f"**Target met**: HR@10 {ours['HR@10']:.4f} >= {TARGET_HR} and NDCG@10 "
        f"{ours['NDCG@10']:.4f} >= {TARGET_NDCG}."
        if met
        else f"**Target not met**: HR@10 {ours['HR@10']:.4f} (target {TARGET_HR}, short by "
        f"{max(TARGET_HR - ours['HR@10'], 0):.4f}), NDCG@10 {ours['NDCG@10']:.4f} (target "
        f"{TARGET_NDCG}, short by {max(TARGET_NDCG - ours['NDCG@10'], 0):.4f})."
    )
    facts = out["facts"]
    fit_lines = "\n".join(
        f"- {name}: {f['rows']:,} training rows on the validation log, best epoch "
        f"{f['best_epoch']}, then refit on the full log ({f.get('rows_full', 0):,} rows); "
        f"per-epoch validation {f['history']}; wall time {f['wall_s']:.0f} s."
        for name, f in facts.items()
    )
    rc = settings["recipe"]
    return f"""## Tmall view / cart / buy (buy target, full ranking)

{stamp("python -m benchmarks.tmall")}- torch threads: {out["threads"]} (on a busy 2-core
  machine one thread trained 10-30x faster than two); {
        load_note(out["threads"], out["load_end"])
    }. Whole run: {out["total_s"]:.0f} s.
- settings: `configs/tmall_mmoe.yaml`

Data: the MB-CGCN release (15,449 users x 11,953 items; 858,505 view, 180,027 cart and
92,180 buy train pairs; no timestamps). Test: `buy/test.txt`, one item per user. Every row
ranks **all** items for every test user, with that user's buy/train items excluded; ties
count against the target. HR@k = share of users whose test item is in the top k; NDCG@k
with one relevant item.

{_table(rows)}

{verdict} Published on this release: {PUBLISHED}.

How each row ranks:
- **Popularity**: items by buy/train count.
- **Own carted > viewed items (no learning)**: score = 2·[user carted it] + [user viewed it]
  + a tie-break in [0, 1): the item's smoothed buys-per-view over all users (or its buy count).
- **implicit ALS** (`implicit` {_version("implicit")}): {settings["als"]["factors"]} factors,
  regularization {settings["als"]["regularization"]}, alpha {settings["als"]["alpha"]},
  {settings["als"]["iterations"]} iterations; on buy pairs only, or on the sum of the
  view, cart and buy incidence matrices (weights {settings["als"]["multi_behavior_weights"]}).
  Settings chosen on the validation hold-out. Train time = ALS fit.
- **Ours** (`shoprec.recipes.multibehavior` + registry `mmoe`): one row per (user, item)
  the user viewed, carted or bought, plus {rc["n_negatives"]} uniform untouched items per
  buy; labels view / cart / buy. Features, all read from the rest of the log so no row sees
  its own label: did the user view / cart *this* item, how many *other* users viewed / carted
  / bought it (leave-user-out counts), its smoothed buys-per-view and buys-per-cart among
  other users, how many items the user viewed / carted / bought. On
  {rc["hide_fraction"]:.0%} of the rows the view/cart flags are hidden; the view and cart
  tasks learn only on those rows (a 0/1 task weight), so they predict behaviors rather than
  copy an input; buy learns on every row. Single-task: buy only, no hidden rows.
  **Candidates** = the user's own viewed or carted items not bought in train (median 45 per
  user; they hold 83% of the test buys on this release), scored by the model's buy
  probability in [0, 1]; **every other item** is placed after them in the order of the
  multi-behavior ALS score (mapped below -1), so each list is a full ranking of all 11,953
  items (less the user's buy/train items). Train time = training passes of the
  validation fit plus the refit (validation scoring excluded).

Selection and fits:
{fit_lines}

Findings from developing this benchmark (validation hold-out only; not rerun by this script):
- Id features overfit here. On a 3,000-user validation sample, HR@10 over epochs 1-3 was
  0.377 / 0.375 / 0.376 for the id-free multi-task model, 0.375 / 0.373 / 0.368 with an
  item-id embedding, and 0.366 / 0.358 / 0.352 with user- and item-id embeddings plus the
  user's view / cart / buy histories (mean pooling; DIN attention over buys), all sharing
  the item table. 80% of the test buys are items the user viewed, so every candidate, the
  test item included, is a "viewed, not bought" training row with buy = 0, and ids let the
  model memorise exactly those pairs. The shipped config uses no id features.
- Adding the 20 most-bought items as extra candidates ranked by the same model dropped
  validation HR@10 to 0.006-0.09 (by feature set): training rows that are not viewed are
  either uniform negatives or bought-but-not-viewed items, so the model over-rates
  popular unviewed items against the user's viewed ones. Hence `n_retrieved: 0`.
- A leave-user-out item-item feature (cosine co-view similarity of the candidate to the
  user's bought items) lowered full-validation HR@10 of the single-task model from 0.3673 to
  0.3615 after one epoch; not used.
- Item ids in this release were assigned in order of first purchase, user by user (user 0
  bought items 0-12, and its test item is 3), so raw id order leaks test information; no
  row here uses raw id order (ids are only ever looked up, never compared).
"""


def _version(package: str) -> str:
    from importlib.metadata import version

    try:
        return version(package)
    except Exception:  # pragma: no cover - reported, not fatal
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on a user sample")
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("shoprec.data").setLevel(logging.WARNING)
    run(quick=args.quick, config_path=args.config)


if __name__ == "__main__":
    main()
