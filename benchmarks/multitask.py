"""Multi-task against single-task on the sparse task, over seeds, with ablations (issue 13).

For Tmall (view / cart / buy), the simulator (a sparse-buy multi-behavior shop) and Online
Retail (buy / return / quantity), every row of ours is a fit through the front door (an
``ExperimentConfig`` and the recipe's own fit: :func:`shoprec.experiment.fit_experiment` for
``multibehavior``, ``WindowsRecipe.prepare`` once + ``WindowsRecipe.train`` per fit for
``windows``, what ``shoprec train`` runs) ranked by the fit's own scorer, for 3 seeds each:

* single-task: the same net (MMoE) with the sparse task alone (the other behaviors still read
  as features where the recipe reads them);
* multi-task: all tasks;
* leave-one-auxiliary-task-out ablations (which auxiliary task helps);
* option rows: ``hide_mode: own`` (each auxiliary flag hidden on its own draw, so cart learns
  "carted given viewed"), ``hide_mode: copies`` (buy learns on every row with its flags
  shown, the auxiliary tasks on hidden copies), auxiliary loss weights 0.3 / 0.1, item-id
  embeddings (single- and multi-task), ESMM cart -> buy and view -> buy; on Online Retail
  uncertainty weighting and ``auxiliary_selection: validation``; every multibehavior fit is
  scored with and without the own-carted rule blended in (``rule_blend``, the weight picked
  on validation by the one-standard-error rule), the blend row shown where a weight > 0 was
  picked;
* the own-carted-items rule (ties and other items by buys per view; and with the other items
  by buy count, as the blend ranks at weight 1) and popularity as rows (no learning).

Mean and sample standard deviation over the seeds; the seed changes the model's init, the
batch order, the drawn negatives and the hidden rows (``train.seed`` and ``recipe.seed``);
the data, the user sample and the split are the same for every row. Each dataset's section
ends with ``target: MT - ST = x vs 2*std = y -> met / not met`` (std: the larger of the two
rows' seed-to-seed sample standard deviations).

Usage::

    .venv/bin/python -m benchmarks.multitask [--datasets tmall sim retail] [--seeds 0 1 2]
        [--tmall-users 3000] [--retail-users 1500] [--quick] [--out FILE]

``--quick`` is a smoke run (1 seed, 1 epoch, small samples); its numbers are not written.
``--variants A B`` runs only the rows whose label contains A or B (``baselines``: the
no-learning rows) and, with ``--save DIR``, merges them into ``DIR/<dataset>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from benchmarks._results import load_note, stamp, write_section
from benchmarks.online_retail import csr as pairs_csr
from benchmarks.tmall import scorer_scores
from shoprec import recipes
from shoprec.config import ExperimentConfig, load_config
from shoprec.data.schema import Dataset, Interactions
from shoprec.data.split import Split, time_split
from shoprec.evaluate import metrics
from shoprec.experiment import fit_experiment, load_dataset, make_split
from shoprec.recipes import retail
from shoprec.recipes.multibehavior import (
    BehaviorLog,
    MultiBehaviorConfig,
    MultiBehaviorScorer,
    Retrieval,
    full_ranking_metrics,
    history_baseline,
    popularity_scores,
)

log = logging.getLogger("benchmarks.multitask")

HERE = Path(__file__).resolve().parent
CONFIGS = {
    "tmall": HERE / "configs" / "tmall.yaml",
    "sim": HERE / "configs" / "multitask_sim.yaml",
    "retail": HERE / "configs" / "online_retail.yaml",
}
TITLES = {
    "tmall": "Tmall view / cart / buy",
    "sim": "Simulator (sparse-buy shop)",
    "retail": "Online Retail buy / return / quantity",
}
BEHAVIORS = ("view", "cart", "buy")
#: Settings every multibehavior row shares (on top of its config): the blend is picked on
#: validation and the fit scored both with and without it.
MB_COMMON = {"recipe.rule_blend": True, "recipe.validation_users": None}
#: The multibehavior rows of ours: label -> (kind, settings replaced in the config).
MB_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "single-task buy": (
        "st",
        {"tasks": ["buy"], "recipe.behaviors": list(BEHAVIORS), "recipe.hide_fraction": 0.0},
    ),
    "multi-task view+cart+buy": ("mt", {}),
    "ablation: without view (cart+buy)": (
        "ablation",
        {"tasks": ["cart", "buy"], "recipe.behaviors": list(BEHAVIORS)},
    ),
    "ablation: without cart (view+buy)": (
        "ablation",
        {"tasks": ["view", "buy"], "recipe.behaviors": list(BEHAVIORS)},
    ),
    "option: multi-task, hide_mode own": ("option", {"recipe.hide_mode": "own"}),
    "option: ESMM cart -> buy (entire space)": (
        "option",
        {
            "tasks": ["cart", "buy"],
            "recipe.behaviors": list(BEHAVIORS),
            "model.name": "esmm",
            "model.config": {"tower_dims": [64, 32]},
        },
    ),
    # On Tmall 19% of the buys were carted and 79% viewed: cart -> buy trains pCTCVR on
    # "carted and bought", which drops 4 of 5 buys; view -> buy is the funnel that holds there.
    "option: ESMM view -> buy (entire space)": (
        "option",
        {
            "tasks": ["view", "buy"],
            "recipe.behaviors": list(BEHAVIORS),
            "model.name": "esmm",
            "model.config": {"tower_dims": [64, 32]},
        },
    ),
    # Task-specific input dropout: buy learns on every row with its flags shown (as the
    # single-task net does), view / cart on copies of half the rows with every flag hidden.
    "option: multi-task, hide_mode copies": ("option", {"recipe.hide_mode": "copies"}),
    # Item-id embeddings: single-task buy learns them from buys alone (and memorises viewed,
    # not bought pairs on Tmall); multi-task trains them on every view and cart too.
    "option: single-task buy, item ids": (
        "st_option",
        {
            "tasks": ["buy"],
            "recipe.behaviors": list(BEHAVIORS),
            "recipe.hide_fraction": 0.0,
            "recipe.item_id": True,
        },
    ),
    "option: multi-task, item ids": ("option", {"recipe.item_id": True}),
    # The auxiliary tasks' loss weight (buy keeps 1): less pull of view / cart on the shared
    # experts.
    "option: multi-task, auxiliary loss weight 0.3": (
        "option",
        {"tasks": [{"name": "view", "weight": 0.3}, {"name": "cart", "weight": 0.3}, "buy"]},
    ),
    "option: multi-task, auxiliary loss weight 0.1": (
        "option",
        {"tasks": [{"name": "view", "weight": 0.1}, {"name": "cart", "weight": 0.1}, "buy"]},
    ),
    # Less input dropout for buy: the flags hidden on a fifth of the rows, not half.
    "option: multi-task, hide_fraction 0.2": ("option", {"recipe.hide_fraction": 0.2}),
    "option: multi-task, hide_mode copies, auxiliary loss weight 0.3": (
        "option",
        {
            "recipe.hide_mode": "copies",
            "tasks": [{"name": "view", "weight": 0.3}, {"name": "cart", "weight": 0.3}, "buy"],
        },
    ),
}
#: The windows rows of ours (Online Retail): label -> (kind, tasks, settings replaced).
RETAIL_VARIANTS: dict[str, tuple[str, list[Any], dict[str, Any]]] = {
    "single-task buy": ("st_buy", ["buy"], {}),
    "single-task return": ("st_return", ["return"], {}),
    "multi-task buy+return+quantity": ("mt", ["buy", "return", "quantity"], {}),
    "ablation: without return (buy+quantity)": ("ablation", ["buy", "quantity"], {}),
    "ablation: without quantity (buy+return)": ("ablation", ["buy", "return"], {}),
    "ablation: without buy (return+quantity)": ("ablation", ["return", "quantity"], {}),
    "option: multi-task, uncertainty weighting": (
        "option",
        ["buy", "return", "quantity"],
        {"weighting": {"name": "uncertainty"}},
    ),
    # The recipe option configs/online_retail_mmoe.yaml ships: all three tasks and each set
    # without one auxiliary task fitted, the set kept picked on validation (3 fits a seed).
    "option: task set picked on validation (auxiliary_selection)": (
        "option",
        ["buy", "return", "quantity"],
        {"recipe.auxiliary_selection": "validation"},
    ),
}
#: Validation metric each target line's multi-task task set is picked by (per dataset, per
#: test metric): the multi-task row of any task set or option with the best validation mean.
PICK_BY = {
    ("tmall", "hr@10"): "buy/ndcg@10",
    ("sim", "hr@10"): "buy/ndcg@10",
    ("retail", "hr@10"): "buy/auc",
    ("retail", "return_auc"): "return/auc",
}


# --------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def target_line(
    what: str, mt: Sequence[float], st: Sequence[float], *, higher_is_better: bool = True
) -> str:
    """``target: MT - ST = x vs 2*std = y -> met / not met`` for one metric."""
    m_mt, s_mt = mean_std(mt)
    m_st, s_st = mean_std(st)
    diff = (m_mt - m_st) if higher_is_better else (m_st - m_mt)
    bar = 2.0 * max(s_mt, s_st)
    verdict = "met" if diff > bar and len(mt) > 1 and len(st) > 1 else "not met"
    return (
        f"target ({what}): MT - ST = {diff:+.4f} vs 2*std = {bar:.4f} -> **{verdict}** "
        f"(MT {m_mt:.4f} ± {s_mt:.4f}, ST {m_st:.4f} ± {s_st:.4f}, {len(mt)} seeds)"
    )


# --------------------------------------------------------------------------- multibehavior


def _sample_users(ds: Dataset, users: int | None, seed: int = 0) -> Dataset:
    """The dataset restricted to a seeded sample of its users (every part, the test file
    too); the whole dataset when ``users`` is None or not below the number of users."""
    all_users = ds.interactions.df["user"].unique().sort()
    if users is None or users >= len(all_users):
        return ds
    pick = all_users.sample(users, seed=seed).implode()
    keep = pl.col("user").is_in(pick)
    test = None if ds.test is None else Interactions(ds.test.df.filter(keep))
    return dataclasses.replace(
        ds, interactions=Interactions(ds.interactions.df.filter(keep)), test=test
    )


def _test_pairs(ds: Dataset, split: Split, target: str) -> tuple[BehaviorLog, pl.DataFrame]:
    """``(log of everything before test, test target pairs)``: the release's test file, else
    the split's test part, its pairs new to the user (not of ``target`` before the test)."""
    if ds.test is not None:  # Tmall: the release's train file is train + valid
        known = ds.interactions
        test = ds.test.of(target).df
    else:
        parts = [split.train.df] + ([split.valid.df] if split.valid is not None else [])
        known = Interactions(pl.concat(parts, how="vertical_relaxed"))
        test = split.test.df.filter(pl.col("behavior") == target)  # type: ignore[union-attr]
    blog = BehaviorLog.from_interactions(known, BEHAVIORS)
    pairs = test.select("user", "item").unique().sort("user", "item")
    u, i = blog.user_index(pairs["user"]), blog.item_index(pairs["item"])
    new = (u >= 0) & (i >= 0)
    new[new] = ~blog.contains(target, u[new], i[new])
    return blog, pairs.filter(pl.Series(new))


def _plain(scorer: MultiBehaviorScorer) -> MultiBehaviorScorer:
    """The same fit scored by its model alone (rule weight 0)."""
    cfg = dataclasses.replace(scorer.config, rule_weight=0.0)
    return MultiBehaviorScorer(scorer.model, scorer.blog, cfg, scorer.behaviors, scorer.target)


def _popularity_tail(rule: Retrieval, blog: BehaviorLog) -> Retrieval:
    """``rule``'s scores with every item outside the user's own ones (score < 1) ordered by
    its target count instead, in ``[0, 1)``: how the recipe ranks at blend weight 1."""
    pop = blog.item_counts("buy").astype(np.float64)
    scaled = pop / (pop.max() * 1.001) if pop.max() > 0 else pop
    tail = torch.from_numpy(scaled.astype(np.float32))

    def scores(users: np.ndarray) -> torch.Tensor:
        s = torch.as_tensor(rule(users)).clone()
        untouched = s < 1.0
        s[untouched] = tail.unsqueeze(0).expand_as(s)[untouched]
        return s

    return scores


def run_multibehavior(
    name: str,
    seeds: Sequence[int],
    users: int | None,
    epochs: int | None,
    quick: bool,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Every row of one multibehavior dataset (``tmall`` or ``sim``), or those whose label
    contains one of ``only`` (then the rule and popularity rows are left out, unless ``only``
    holds ``baselines``)."""
    cfg = load_config(CONFIGS[name]).with_values(
        {
            **MB_COMMON,
            **({"train.epochs": epochs} if epochs else {}),
            "output": str(Path(tempfile.gettempdir()) / f"bench_multitask_{name}"),
        }
    )
    tick = time.perf_counter()
    ds = _sample_users(load_dataset(cfg.data), users)  # type: ignore[arg-type]
    split = make_split(ds, cfg.split, "buy")
    blog, test = _test_pairs(ds, split, "buy")
    t_users, t_items = blog.user_index(test["user"]), blog.item_index(test["item"])
    data_s = time.perf_counter() - tick
    log.info("%s: %d users x %d items, %d test pairs", name, blog.n_users, blog.n_items, len(test))

    def evaluate(score: Retrieval) -> dict[str, float]:
        return full_ranking_metrics(score, blog, t_users, t_items, target="buy", ks=(10, 20))

    rows: dict[str, dict[str, Any]] = {}
    rc = MultiBehaviorConfig(behaviors=BEHAVIORS, target="buy")
    rows["popularity (buy count)"] = {
        "kind": "baseline",
        "runs": [evaluate(popularity_scores(blog, "buy"))],
    }
    rows["own carted > viewed items, ties by buys per view (rule)"] = {
        "kind": "rule",
        "runs": [evaluate(history_baseline(blog, rc, "rate"))],
    }
    # The rule as the recipe's blend at weight 1 ranks: the own items by the rule, every
    # other item by its buy count (history_baseline's tail is the buys-per-view rate).
    rows["own carted > viewed items, others by buy count (rule, popularity tail)"] = {
        "kind": "rule_pop",
        "runs": [evaluate(_popularity_tail(history_baseline(blog, rc, "rate"), blog))],
    }
    facts: dict[str, Any] = {}
    if only and "baselines" not in only:  # --variants baselines: the rows above only
        rows.clear()
    for label, (kind, values) in MB_VARIANTS.items():
        if only and not any(o in label for o in only):
            continue
        plain, blended, notes = [], [], []
        tick = time.perf_counter()
        for seed in seeds:
            c = cfg.with_values(
                {**values, "train.seed": seed, "recipe.seed": seed, "name": f"mt_{name}_{seed}"}
            )
            run, _, _ = fit_experiment(c, dataset=ds, split=split)
            plain.append(evaluate(scorer_scores(_plain(run.scorer), blog)))  # type: ignore[arg-type]
            w = float(run.info.get("rule_weight", 0.0))
            blended.append(
                evaluate(scorer_scores(run.scorer, blog)) if w > 0 else dict(plain[-1])  # type: ignore[arg-type]
            )
            gain = run.info.get("rule_blend_gain_over_rule", {}).get(w)  # (mean, se) on valid
            notes.append({"seed": seed, "epoch": run.best_epoch, "rule_weight": w,
                          "valid": {k: round(v, 4) for k, v in run.valid.items()},
                          "valid_gain_over_rule": gain})  # fmt: skip
            log.info(
                "%s / %s seed %d: %s",
                name,
                label,
                seed,
                {k: round(v, 4) for k, v in plain[-1].items()},
            )
        rows[f"ours: {label}"] = {"kind": kind, "runs": plain, "notes": notes}
        # the blend row where it differs from the model alone (a weight > 0 on some seed),
        # always for the single- and multi-task rows and in a partial run (--variants)
        if kind in ("st", "mt") or only or any(n["rule_weight"] > 0 for n in notes):
            rows[f"ours: {label} + rule blend (weight on validation)"] = {
                "kind": f"{kind}_blend",
                "runs": blended,
                "notes": notes,
            }
        facts[label] = time.perf_counter() - tick
    return {
        "rows": rows,
        "facts": {
            "users": blog.n_users,
            "items": blog.n_items,
            "test_pairs": len(test),
            "pairs": {b: len(blog.keys[b]) for b in BEHAVIORS},
            "seconds": facts,
            "data_s": data_s,
            **_config_facts(cfg),
            "sampled": users,
        },
    }


# --------------------------------------------------------------------------- windows


def run_retail(
    seeds: Sequence[int],
    users: int | None,
    windows: int,
    negatives: int,
    epochs: int | None,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Every row of Online Retail (windows recipe): buy HR@10 and return AUC (or the rows
    of ours whose label contains one of ``only``; then the baselines are left out)."""
    values: dict[str, Any] = {
        "recipe.n_train_windows": windows,
        "recipe.n_negatives": negatives,
        "train.threads": 1,
        "model.name": "mmoe",
        "recipe.auxiliary_selection": "none",  # each row's tasks as given (one row selects)
    }
    if epochs:
        values["train.epochs"] = epochs
    cfg = load_config(CONFIGS["retail"]).with_values(values)
    quantity = next(t for t in cfg.to_dict()["tasks"] if t["name"] == "quantity")
    tick = time.perf_counter()
    ds = load_dataset(cfg.data)
    ds = _sample_users(ds, users)  # type: ignore[arg-type]
    split = time_split(ds.interactions, **cfg.split.model_dump(exclude={"kind"}))
    recipe = recipes.get("windows")(cfg)
    assert isinstance(recipe, retail.WindowsRecipe)
    data = recipe.prepare(ds, split)  # shared by every fit below
    test_rows = recipe.test_rows(data, split)
    items = data.catalog["item"]
    buyers = test_rows["user"].unique().sort()
    t_users = buyers.filter(buyers.is_in(data.snapshot.users["user"].implode()))
    rel = pairs_csr(test_rows.select("user", "item"), t_users, items)
    y_ret = test_rows["return"].to_numpy().astype(np.float64)
    data_s = time.perf_counter() - tick

    def hr(scores: np.ndarray) -> dict[str, float]:
        s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        m = metrics.ranking_metrics(s, rel, None, ks=(10, 20))
        return {k: float(v) for k, v in m.items() if k.split("@")[0] in ("hr", "ndcg")}

    snap = data.snapshot
    pop_recent = retail.popularity_scores(snap, items, recent=True)
    n_u = len(t_users)
    rows: dict[str, dict[str, Any]] = {
        "popularity, last 30 days": {
            "kind": "baseline",
            "runs": [
                {
                    **hr(np.tile(pop_recent, (n_u, 1))),
                    "return_auc": metrics.auc(y_ret, retail.item_return_rate(snap, test_rows)),
                }
            ],
        },
        "repeat purchase (rule)": {
            "kind": "rule",
            "runs": [hr(retail.repeat_scores(snap, t_users, items, pop_recent))],
        },
    }
    seconds: dict[str, float] = {}
    user_ids = t_users.to_list()
    if only:
        rows.clear()
    for label, (kind, tasks, extra) in RETAIL_VARIANTS.items():
        if only and not any(o in label for o in only):
            continue
        specs = [quantity if t == "quantity" else t for t in tasks]
        runs, notes = [], []
        tick = time.perf_counter()
        for seed in seeds:
            c = cfg.with_values({**extra, "tasks": specs, "train.seed": seed})
            run = recipes.get("windows")(c).train(data, split)
            m: dict[str, float] = {}
            if "buy" in tasks:
                m.update(hr(run.scorer.rank_scores(user_ids)))
            if "return/auc" in run.test:
                m["return_auc"] = float(run.test["return/auc"])
            runs.append(m)
            valid = {k: round(float(v), 4) for k, v in run.valid.items() if isinstance(v, float)}
            note = {"seed": seed, "epoch": run.best_epoch, "valid": valid}
            if "auxiliary_selection" in run.info:
                note["picked"] = "+".join(run.info["auxiliary_selection"]["picked"])
            notes.append(note)
            log.info("retail / %s seed %d: %s", label, seed, {k: round(v, 4) for k, v in m.items()})
        rows[f"ours: {label}"] = {"kind": kind, "runs": runs, "notes": notes}
        seconds[label] = time.perf_counter() - tick
    return {
        "rows": rows,
        "facts": {
            "users": int(ds.interactions.df["user"].n_unique()),
            "items": len(items),
            "test_users": n_u,
            "test_pairs": test_rows.height,
            "returned": int(y_ret.sum()),
            "train_rows": len(data.train_data),
            "train_bought": int((data.train_data.columns["buy"] > 0).sum()),
            "windows": windows,
            "negatives": negatives,
            "seconds": seconds,
            "data_s": data_s,
            **_config_facts(cfg),
            "sampled": users,
        },
    }


# --------------------------------------------------------------------------- report


def _config_facts(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the report says of a config (plain values, so results can be saved as JSON)."""
    source = Path(cfg.source).resolve() if cfg.source else None
    return {
        "config_path": str(source.relative_to(HERE.parent)) if source else "",
        "model_config": dict(cfg.model.config),
        "epochs": cfg.train.get("epochs"),
    }


def picked_on_validation(
    rows: dict[str, dict[str, Any]], valid_key: str, test_key: str, kinds: set[str]
) -> str:
    """The row of ``kinds`` with test values of ``test_key`` whose mean validation
    ``valid_key`` over the seeds is best ("" when no row records it)."""
    best, best_v = "", float("-inf")
    for n, row in rows.items():
        if row["kind"] not in kinds or not any(test_key in x for x in row["runs"]):
            continue
        vals = [x.get("valid", {}).get(valid_key) for x in row.get("notes", [])]
        vals = [v for v in vals if v is not None]
        if vals and statistics.fmean(vals) > best_v:
            best, best_v = n, statistics.fmean(vals)
    return best


def _picked_line(
    name: str, rows: dict[str, dict[str, Any]], key: str, st_kind: str, what: str
) -> str:
    """The target line with the multi-task row picked on validation (any task set / option)."""
    valid_key = PICK_BY.get((name, key), "")
    picked = picked_on_validation(rows, valid_key, key, {"mt", "ablation", "option"})
    if not picked:
        return ""
    mt = [x[key] for x in rows[picked]["runs"] if key in x]
    return (
        target_line(f"{what}, MT task set picked on validation {valid_key}", mt,
                    _values(rows, st_kind, key))
        + f" (picked: {picked.removeprefix('ours: ')})"
    )  # fmt: skip


def _cell(runs: list[dict[str, float]], key: str) -> str:
    vals = [r[key] for r in runs if key in r]
    if not vals:
        return "—"
    m, s = mean_std(vals)
    return f"{m:.4f}" if len(vals) == 1 else f"{m:.4f} ± {s:.4f}"


def _values(rows: dict[str, dict[str, Any]], kind: str, key: str) -> list[float]:
    found = [r for r in rows.values() if r["kind"] == kind]
    return [run[key] for run in found[0]["runs"] if key in run] if found else []


def _best_of(
    rows: dict[str, dict[str, Any]], key: str, kinds: set[str]
) -> tuple[str, float, float]:
    """``(name, mean, std)`` of the row of ``kinds`` with the best mean ``key``."""
    scored = [(n, *mean_std([x[key] for x in r["runs"] if key in x]))
              for n, r in rows.items() if r["kind"] in kinds]  # fmt: skip
    scored = [t for t in scored if t[1] == t[1]]
    return max(scored, key=lambda t: t[1]) if scored else ("", float("nan"), float("nan"))


def _plain_line(
    rows: dict[str, dict[str, Any]],
    key: str,
    st_kinds: set[str],
    mt_kinds: set[str],
    peer: str = "single-task row",
) -> str:
    """The best multi-task row (any task set or option) against the best single-task row
    (or the best row of ``st_kinds`` named ``peer``)."""
    st, v, sv = _best_of(rows, key, st_kinds)
    mt, m, sm = _best_of(rows, key, mt_kinds)
    if not st or not mt:
        return ""
    bar = 2 * max(sv, sm)
    d = m - v
    verdict = (
        "multi-task pays here (beyond 2*std)"
        if d > bar
        else "within seed noise: multi-task does not pay here"
        if d > -bar
        else "single-task is ahead beyond 2*std: multi-task does not pay here"
    )
    return (
        f"- plainly ({key}): the best multi-task row of any task set or option "
        f"({mt.removeprefix('ours: ')}, {m:.4f} ± {sm:.4f}) vs the best {peer} "
        f"({st.removeprefix('ours: ')}, {v:.4f} ± {sv:.4f}): {d:+.4f} vs 2*std {bar:.4f}, "
        f"{verdict}."
    )


def _rule_line(
    rows: dict[str, dict[str, Any]], key: str, kinds: set[str] | None = None, what: str = ""
) -> str:
    """Met when no row of ours (of ``kinds``, all by default) has a mean below the rule's."""
    rule = next((r for r in rows.values() if r["kind"] == "rule"), None)
    if rule is None:
        return ""
    r = mean_std([x[key] for x in rule["runs"]])[0]
    below = []
    for n, row in rows.items():
        if not n.startswith("ours") or not any(key in x for x in row["runs"]):
            continue
        if kinds is not None and row["kind"] not in kinds:
            continue
        m = mean_std([x[key] for x in row["runs"] if key in x])[0]
        if m < r:
            below.append(f"{n.removeprefix('ours: ')} {m:.4f}")
    verdict = "met" if not below else "not met"
    return (
        f"target (no row of ours{what} below the rule on {key}): rule {r:.4f}; "
        + (f"below it: {'; '.join(below)}" if below else "every row of ours is at or above it")
        + f" -> **{verdict}**"
    )


def _as_shipped(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows as the recipe ships them (``rule_blend: true``): each row of ours replaced by
    its ``+ rule blend`` row where there is one (the others picked weight 0 on every seed)."""
    suffix = " + rule blend (weight on validation)"
    out = {}
    for n, row in rows.items():
        if n.endswith(suffix):
            continue
        out[n] = rows.get(n + suffix, row)
    return out


def _ablation_lines(rows: dict[str, dict[str, Any]], key: str, mt_kind: str = "mt") -> list[str]:
    mt = _values(rows, mt_kind, key)
    if not mt:
        return []
    m_mt, s_mt = mean_std(mt)
    out = []
    for n, row in rows.items():
        if row["kind"] != "ablation":
            continue
        vals = [x[key] for x in row["runs"] if key in x]
        if not vals:
            continue
        m, s = mean_std(vals)
        bar = 2 * max(s, s_mt)
        d = m_mt - m
        what = n.removeprefix("ours: ablation: ")
        if len(vals) < 2 or len(mt) < 2:
            verdict = "one seed: no spread to judge by"
        elif d > bar:
            verdict = "the left-out task helps (beyond 2*std)"
        elif -d > bar:
            verdict = "the left-out task hurts (beyond 2*std)"
        else:
            verdict = "no difference beyond 2*std"
        out.append(f"- {what}: {key} {m:.4f} vs all tasks {m_mt:.4f} (all - this = {d:+.4f}, "
                   f"2*std = {bar:.4f}): {verdict}")  # fmt: skip
    return out


def section(name: str, result: dict[str, Any], seeds: Sequence[int]) -> str:
    rows, f = result["rows"], result["facts"]
    lines = [f"### {TITLES[name]}", ""]
    if result.get("stamp"):  # written from a saved run: that run's command, date and commit
        lines += ["This table's run:", "", result["stamp"].strip()]
        if "load" in result:
            lines.append(f"- torch threads 1; {load_note(1, float(result['load']))}")
        for m in result.get("merged", []):
            lines += [
                "",
                f"Rows {', '.join(m['variants'])} rerun and merged in (same sizes, seeds and "
                "sample; with the blend rows where a weight > 0 was picked):",
                "",
                m["stamp"].strip(),
            ]
        lines.append("")
    if name == "retail":
        keys = ["hr@10", "ndcg@10", "return_auc"]
        lines.append(
            f"Data: {f['users']:,} users"
            + (
                f" (a seeded sample of {f['sampled']:,}, the same for every row)"
                if f["sampled"]
                else ""
            )
            + f", {f['items']:,} items; {f['windows']} training windows of 30 days, "
            f"{f['negatives']} drawn negatives per buyer ({f['train_rows']:,} training rows, "
            f"{f['train_bought']:,} bought); test = the last month: {f['test_users']:,} known "
            f"buyers ranked over every item (repeat purchases count), {f['test_pairs']:,} bought "
            f"pairs of which {f['returned']:,} returned (the sparse task: return AUC over the "
            "test bought pairs). Every row of ours is MMoE (`model.name: mmoe`, "
            f"{f['model_config']}) with the tasks shown, from `{f['config_path']}` "
            "with those settings replaced; the windows are prepared once and every fit trains "
            "on them."
        )
    else:
        keys = ["hr@10", "ndcg@10", "hr@20"]
        sampled = (
            f" (a seeded sample of {f['sampled']:,} users, the same for every row)"
            if f["sampled"]
            else ""
        )
        lines.append(
            f"Data: {f['users']:,} users{sampled} x {f['items']:,} items; train pairs "
            + ", ".join(f"{b} {n:,}" for b, n in f["pairs"].items())
            + f"; {f['test_pairs']:,} test buy pairs new to the user, each ranked against every "
            "item (the user's earlier buys excluded, ties against the target). Rows of ours: "
            f"`{f['config_path']}` with the settings of the row replaced, MMoE "
            f"{f['model_config']}, {f['epochs']} epochs at most (best on validation "
            "buy NDCG@10, refit on train + valid), `rule_blend: true`: each fit is scored by its "
            "model alone and by its blend with the rule (weight picked on validation)."
        )
    lines += [
        "",
        "| row | " + " | ".join(keys) + " | notes |",
        "|---|" + "---:|" * len(keys) + "---|",
    ]
    for n, row in rows.items():
        note = ""
        if row.get("notes"):
            ep = "/".join(str(x["epoch"]) for x in row["notes"])
            note = f"epochs {ep}"
            if row["kind"].endswith("_blend"):
                note += "; weights " + "/".join(f"{x['rule_weight']:g}" for x in row["notes"])
            if any("picked" in x for x in row["notes"]):
                note += "; picked " + " / ".join(x.get("picked", "?") for x in row["notes"])
        lines.append(f"| {n} | " + " | ".join(_cell(row["runs"], k) for k in keys) + f" | {note} |")
    lines.append("")
    if name == "retail":
        lines.append(
            "- "
            + target_line(
                "buy HR@10", _values(rows, "mt", "hr@10"), _values(rows, "st_buy", "hr@10")
            )
        )
        lines.append(
            "- "
            + target_line(
                "return AUC, the sparse task",
                _values(rows, "mt", "return_auc"),
                _values(rows, "st_return", "return_auc"),
            )
        )
        for key, st_kind, what in (
            ("hr@10", "st_buy", "buy HR@10"),
            ("return_auc", "st_return", "return AUC"),
        ):
            line = _picked_line(name, rows, key, st_kind, what)
            lines += [f"- {line}"] if line else []
        lines.append(
            "- "
            + _rule_line(rows, "hr@10")
            + " (repeat purchase: the user's past items first; Online Retail has no cart)"
        )
        lines.append("- which auxiliary task helps:")
        lines += ["  " + x for x in _ablation_lines(rows, "hr@10")]
        lines += ["  " + x for x in _ablation_lines(rows, "return_auc")]
    else:
        lines.append(
            "- "
            + target_line(
                "buy HR@10, model alone", _values(rows, "mt", "hr@10"), _values(rows, "st", "hr@10")
            )
        )
        line = _picked_line(name, rows, "hr@10", "st", "buy HR@10, model alone")
        lines += [f"- {line}"] if line else []
        lines.append(
            "- "
            + target_line(
                "buy NDCG@10, model alone",
                _values(rows, "mt", "ndcg@10"),
                _values(rows, "st", "ndcg@10"),
            )
        )
        lines.append(
            "- "
            + target_line(
                "buy HR@10, both with the rule blend",
                _values(rows, "mt_blend", "hr@10"),
                _values(rows, "st_blend", "hr@10"),
            )
        )
        lines.append("- " + _rule_line(_as_shipped(rows), "hr@10", None, " as shipped"))
        lines.append(
            "  (as shipped: `rule_blend: true`, the recipe's default: each row of ours with its "
            "blend, the model alone where the blend picked weight 0 on every seed; the same "
            "rule over every row, model-alone rows included:)"
        )
        lines.append("- " + _rule_line(rows, "hr@10"))
        lines.append("- which auxiliary task helps:")
        lines += ["  " + x for x in _ablation_lines(rows, "hr@10")]
    mt_kinds = {"mt", "mt_blend", "ablation", "option", "ablation_blend", "option_blend"}
    st_kinds = {"st", "st_buy", "st_blend", "st_option", "st_option_blend"}
    lines.append(_plain_line(rows, "hr@10", st_kinds, mt_kinds))
    if any(r["kind"] == "rule_pop" for r in rows.values()):
        lines.append(
            _plain_line(rows, "hr@10", {"rule_pop"}, mt_kinds, "no-learning row (blend weight 1)")
        )
    if name == "retail":
        lines.append(_plain_line(rows, "return_auc", {"st_return"}, mt_kinds))
    secs = ", ".join(f"{k} {s:.0f} s" for k, s in f["seconds"].items())
    lines += ["", f"Wall time for {len(seeds)} seeds: data {f['data_s']:.0f} s; {secs}.", ""]
    return "\n".join(lines)


def markdown(
    results: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    total: float,
    threads: int,
    from_saved: bool = False,
) -> str:
    load = (
        "load averages: per table below (written from saved runs)"
        if from_saved
        else load_note(threads, os.getloadavg()[0])
    )
    head = [
        "## Multi-task vs single-task on the sparse task (multitask, issue 13)",
        "",
        stamp(),
        f"- `nproc` {os.cpu_count()}; torch threads {threads}; {load}; runs {total:.0f} s in all",
        f"- seeds {', '.join(map(str, seeds))}: mean ± sample std over them; the seed changes the "
        "init, batch order, drawn negatives and hidden rows; data, user sample and split are fixed",
        "- MT = multi-task with every task, ST = the same net with the sparse task alone; a target "
        "is met when MT - ST > 2 x the larger of the two rows' seed std",
        "- what was tried so that the auxiliary tasks carry what the sparse task lacks (rows "
        "`option:`): the auxiliary tasks learn only where their behavior is not an input "
        "(`hide_fraction`, all rows; `hide_mode: own`, each flag on its own draw so cart learns "
        "cart-given-view; `hide_mode: copies`, task-specific input dropout: buy learns on every "
        "row with its flags shown, as single-task does, view / cart on hidden copies), the "
        "auxiliary tasks' loss weight (0.3, 0.1; buy 1), item-id embeddings (single- and "
        "multi-task), ESMM's entire-space funnel (`model: esmm`, cart -> buy and view -> buy), "
        "loss balancing by uncertainty and the task set picked on validation "
        "(`auxiliary_selection: validation`, Online Retail), and the own-carted rule blended "
        "into the score with a weight picked on validation by the one-standard-error rule "
        "(`rule_blend`, `rule_pick: one_se`: the rule unless a weight beats it by more than "
        "one SE of the paired per-user difference; rows `+ rule blend`); which auxiliary task "
        "helps: the `ablation:` rows leave one out",
        "",
    ]
    body = [section(n, r, seeds) for n, r in results.items()]
    return "\n".join(head + body).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", nargs="*", default=["tmall", "sim", "retail"], choices=list(CONFIGS)
    )
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--tmall-users", type=int, default=3000)
    parser.add_argument("--sim-users", type=int, default=None)
    parser.add_argument("--retail-users", type=int, default=1500)
    parser.add_argument("--retail-windows", type=int, default=3)
    parser.add_argument("--retail-negatives", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=None, help="cap on every row's epochs")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="multibehavior rows to run (labels containing one of these); with --save the "
        "rows are merged into DIR/<dataset>.json of an earlier run (same sizes and seeds)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, small, not written"
    )
    parser.add_argument("--out", type=Path, help="write the section here, not in RESULTS.md")
    parser.add_argument(
        "--save", type=Path, help="also save each dataset's rows as DIR/<dataset>.json"
    )
    parser.add_argument(
        "--from",
        dest="load",
        type=Path,
        help="run nothing: write the section from the DIR/<dataset>.json of earlier --save runs",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(1)
    seeds, epochs = args.seeds, args.epochs
    if args.quick:
        seeds, epochs = seeds[:1], 1
        args.tmall_users, args.retail_users, args.retail_windows = 500, 300, 1
    started = time.perf_counter()
    started_stamp = stamp()  # the commit the code was loaded from (HEAD may move meanwhile)
    results: dict[str, dict[str, Any]] = {}
    if args.load is not None:
        saved = {n: json.loads((args.load / f"{n}.json").read_text()) for n in args.datasets}
        total = sum(r["total_s"] for r in saved.values())
        text = markdown(saved, saved[args.datasets[0]]["seeds"], total, 1, from_saved=True)
        if args.out is not None:
            args.out.write_text(text)
        else:
            write_section("multitask", text)
        print(text)
        return
    for name in args.datasets:
        if name == "retail":
            results[name] = run_retail(
                seeds,
                args.retail_users,
                args.retail_windows,
                args.retail_negatives,
                epochs,
                args.variants,
            )
        else:
            users = args.tmall_users if name == "tmall" else args.sim_users
            results[name] = run_multibehavior(name, seeds, users, epochs, args.quick, args.variants)
        results[name]["total_s"] = (
            time.perf_counter()
            - started
            - sum(r.get("total_s", 0.0) for k, r in results.items() if k != name)
        )
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            saved_one = {
                **results[name],
                "seeds": list(seeds),
                "stamp": started_stamp,
                "load": os.getloadavg()[0],
            }
            earlier = args.save / f"{name}.json"
            if args.variants and earlier.exists():  # merge the rows into the earlier run's
                base = json.loads(earlier.read_text())
                base["rows"].update(saved_one["rows"])
                base["facts"]["seconds"].update(saved_one["facts"]["seconds"])
                base.setdefault("merged", []).append(
                    {"variants": list(args.variants), "stamp": started_stamp}
                )
                saved_one = base
            (args.save / f"{name}.json").write_text(json.dumps(saved_one, indent=1, default=str))
        text = markdown(results, seeds, time.perf_counter() - started, 1)
        print(text, flush=True)
        if args.out is not None:
            args.out.write_text(text)
    text = markdown(results, seeds, time.perf_counter() - started, 1)
    if args.out is not None:
        args.out.write_text(text)
    elif not args.quick:
        write_section("multitask", text)


if __name__ == "__main__":
    main()
