"""Online Retail: the UK as the source market for the other countries (Country = domain).

Customers each buy in one country, so what transfers is the products: the same product has
one embedding in every market (``shared_items``), each market its own tower and item biases.
Time split: the last 30 days are the test, the 30 days before them the validation (epochs,
ALS settings); a customer is scored if they bought before the test window and in it; the
relevant items are their test-window buys (repeat buys count). Germany and France have under
40 such customers each, so every NDCG@10 comes with a 95% bootstrap interval over customers.

Ours comes from the front door: ``benchmarks/configs/retail_transfer.yaml`` is an experiment
config of the ``cross_domain`` recipe; each "ours" row is one fit of it per target market
(``shoprec.experiment.fit_experiment`` + ``save_experiment``, the artifact ``shoprec train``
writes), ranked by the artifact's scorer loaded back from disk. This script pools the small
countries into "Other", adds the peers (popularity, implicit ALS) and the table.

Run ``python -m benchmarks.retail_transfer [--out FILE]``; the section goes into
benchmarks/RESULTS.md unless ``--out`` names another file.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from benchmarks._als import fit_als
from benchmarks._results import stamp, write_section
from shoprec.artifact import Artifact
from shoprec.config import ExperimentConfig, load_config
from shoprec.data.schema import Dataset, Interactions
from shoprec.evaluate import metrics
from shoprec.experiment import fit_experiment, load_dataset, make_split, save_experiment
from shoprec.recipes.cross_domain import CrossDomainScorer
from shoprec.transfer.cross_domain import DomainIndex

log = logging.getLogger("benchmarks.retail_transfer")
CONFIG = Path(__file__).resolve().parent / "configs" / "retail_transfer.yaml"
OUT = Path(__file__).resolve().parent.parent / "runs" / "benchmarks" / "retail_transfer"
K = 10
SOURCE = "United Kingdom"
TARGETS = ("Germany", "France")
OTHER = "Other"  # every other country, pooled
#: Settings of the peers (ours are in the config).
SETTINGS: dict[str, Any] = {
    "threads": 1,
    "als": {
        "iterations": 15,
        "grid": [
            {"factors": 64, "regularization": 0.1, "alpha": 10},
            {"factors": 128, "regularization": 1.0, "alpha": 20},
        ],
    },
}
#: Our rows: label -> recipe settings replaced (the target and sources are set per market).
OURS = (
    ("Ours, target market only", {"recipe.method": "target_only", "recipe.shared_items": False}),
    ("Ours, joint, all markets, shared products", {}),
)


def pooled(cfg: ExperimentConfig) -> Dataset:
    """The config's dataset (buys) with every country but the source and targets as "Other"."""
    ds = load_dataset(cfg.data)
    assert isinstance(ds, Dataset)
    keep = [SOURCE, *TARGETS]
    domain = pl.when(pl.col("domain").is_in(keep)).then(pl.col("domain")).otherwise(pl.lit(OTHER))
    df = ds.interactions.df.filter(pl.col("behavior") == "buy").with_columns(domain)
    return dataclasses.replace(ds, interactions=Interactions(df))


def held_out(
    index: DomainIndex, before: pl.DataFrame, window: pl.DataFrame, k: int
) -> tuple[np.ndarray, metrics.Sparse]:
    """Users of domain k who bought before and in the window; their window items (columns)."""
    name = index.domains[k]
    w = window.filter(pl.col("domain") == name)
    known = before.filter(pl.col("domain") == name)["user"].unique()
    w = w.filter(pl.col("user").is_in(known.implode())).unique(["user", "item"])
    u, i, _ = index.encode(w)
    ok = (u > 0) & (i > 0)
    u, i = u[ok], i[ok] - (index.starts[k] + 1)
    users = np.unique(u)
    pos = np.searchsorted(users, u)
    return users, metrics.csr_from_pairs(pos, i, len(users))


def ndcg_per_user(scores: torch.Tensor, relevant: metrics.Sparse) -> np.ndarray:
    per = metrics.ranking_metrics(scores, relevant, ks=(K,), per_user=True)
    return np.asarray(per[f"ndcg@{K}"])


def bootstrap(values: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    if len(values) == 0:
        return float("nan"), float("nan")
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def als_factors(index: DomainIndex, u: np.ndarray, i: np.ndarray, p: dict[str, Any]) -> Any:
    """ALS on (user, product) with a product's ids of every market folded into one column."""
    import scipy.sparse as sp

    rows = index.shared_item_rows()
    cols = rows[i]
    m = sp.csr_matrix(
        (np.ones(len(u), np.float32), (u, cols)), shape=(index.n_users + 1, index.n_items + 1)
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    model, _ = fit_als(m, p, seed=0)
    users = torch.from_numpy(np.asarray(model.user_factors, dtype=np.float32))
    items = torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32))[
        torch.as_tensor(rows)
    ]
    return users, items


def ours(
    cfg: ExperimentConfig,
    ds: Dataset,
    split: Any,
    domains: list[str],
    k: int,
    values: dict[str, Any],
) -> tuple[CrossDomainScorer, str, float]:
    """One front-door fit with market ``k`` as the target: the artifact's scorer, a note."""
    joint = values.get("recipe.method", cfg.recipe.options.method) != "target_only"
    sources = [d for j, d in enumerate(domains) if j != k] if joint else [SOURCE]
    trial = cfg.with_values({**values, "recipe.source": sources, "recipe.target": domains[k]})
    run, _, _ = fit_experiment(trial, dataset=ds, split=split)
    kind = "joint" if joint else "target_only"
    path = save_experiment(trial, run, ds, split, OUT / f"{kind}_{domains[k].replace(' ', '_')}")
    scorer = Artifact.load(path).scorer
    assert isinstance(scorer, CrossDomainScorer)
    note = f"epoch {run.best_epoch} on validation ({run.valid_score:.4f})"
    return scorer, note, float(run.info.get("fit_s", 0.0))


def run(config_path: Path = CONFIG, out: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(int(SETTINGS["threads"]))
    started = time.perf_counter()
    cfg = load_config(config_path)
    ds = pooled(cfg)
    split = make_split(ds, cfg.split, "buy")
    valid_start, test_start = split.valid_start, split.test_start
    df = ds.interactions.df.select("user", "item", "domain", "timestamp")
    pre_valid = df.filter(pl.col("timestamp") < valid_start)
    pre_test = df.filter(pl.col("timestamp") < test_start)
    valid = df.filter((pl.col("timestamp") >= valid_start) & (pl.col("timestamp") < test_start))
    test = df.filter(pl.col("timestamp") >= test_start)
    domains = [SOURCE, *TARGETS, OTHER]
    index = DomainIndex.fit(pre_test.unique(["user", "item", "domain"]), domains=domains)
    fit_u, fit_i, fit_d = index.encode(pre_valid.unique(["user", "item", "domain"]))
    all_u, all_i, all_d = index.encode(pre_test.unique(["user", "item", "domain"]))
    targets = list(range(1, len(domains)))
    val_sets = {k: held_out(index, pre_valid, valid, k) for k in targets}
    test_sets = {k: held_out(index, pre_test, test, k) for k in targets}
    results: dict[str, Any] = {"rows": {}, "n_test": {}, "n_valid": {}}
    for k in targets:
        results["n_test"][domains[k]] = len(test_sets[k][0])
        results["n_valid"][domains[k]] = len(val_sets[k][0])

    def record(name: str, k: int, scores: torch.Tensor, note: str = "") -> None:
        per = ndcg_per_user(scores, test_sets[k][1])
        lo, hi = bootstrap(per)
        results["rows"].setdefault(name, {})[domains[k]] = {
            "ndcg": float(per.mean()),
            "lo": lo,
            "hi": hi,
            "note": note,
        }
        log.info("%s %s: %.4f [%.4f, %.4f]", name, domains[k], per.mean(), lo, hi)

    # Popularity: in the target market, and over every market.
    for k in targets:
        lo_id = index.starts[k] + 1
        n = index.domain_sizes[k]
        sel = all_d == k
        counts = torch.as_tensor(np.bincount(all_i[sel] - lo_id, minlength=n), dtype=torch.float32)
        record("Popularity, target market", k, counts.expand(len(test_sets[k][0]), -1))
        rows = index.shared_item_rows()
        every = np.bincount(rows[all_i], minlength=index.n_items + 1)
        glob = torch.as_tensor(every[rows[lo_id : lo_id + n]], dtype=torch.float32)
        record("Popularity, all markets", k, glob.expand(len(test_sets[k][0]), -1))

    # ALS on the target market only, and on every market (products shared).
    als_cfg = SETTINGS["als"]
    for merged in (False, True):
        name = "implicit ALS, " + ("all markets" if merged else "target market only")
        for k in targets:
            best, best_score = None, -1.0
            for g in als_cfg["grid"]:
                p = {**g, "iterations": als_cfg["iterations"]}
                sel = np.ones(len(fit_u), bool) if merged else fit_d == k
                users, items = als_factors(index, fit_u[sel], fit_i[sel], p)
                lo_id = index.starts[k] + 1
                vu, vrel = val_sets[k]
                s = users[torch.as_tensor(vu)] @ items[lo_id : lo_id + index.domain_sizes[k]].T
                score = float(np.nanmean(ndcg_per_user(s, vrel))) if len(vu) else 0.0
                if score > best_score:
                    best, best_score = p, score
            assert best is not None
            sel = np.ones(len(all_u), bool) if merged else all_d == k
            users, items = als_factors(index, all_u[sel], all_i[sel], best)
            tu, _ = test_sets[k]
            s = users[torch.as_tensor(tu)] @ items[lo_id : lo_id + index.domain_sizes[k]].T
            note = f"{best['factors']} factors, reg {best['regularization']}, alpha {best['alpha']}"
            record(name, k, s, f"{note} (val NDCG@10 {best_score:.4f})")

    # Ours: the config through the front door, once per target market.
    names = np.asarray(index.users)
    for label, values in OURS:
        for k in targets:
            scorer, note, secs = ours(cfg, ds, split, domains, k, values)
            pos = {x: j for j, x in enumerate(scorer.items)}
            cols = np.array([pos.get(x, -1) for x in index.items[k]])
            tu, _ = test_sets[k]
            got = scorer.rank_scores(names[tu - 1].tolist())
            s = np.zeros((len(tu), len(cols)), dtype=np.float32)
            s[:, cols >= 0] = got[:, cols[cols >= 0]]
            record(label, k, torch.from_numpy(s), f"{note}; fit {secs:.0f} s")
    results["total_s"] = time.perf_counter() - started
    results["domains"] = domains
    results["windows"] = {"valid_start": str(valid_start), "test_start": str(test_start)}
    md = markdown(results, config_path)
    if out is not None:
        out.write_text(md)
        log.info("wrote %s", out)
    else:
        write_section("retail_transfer", md)
    return results


def markdown(r: dict[str, Any], config_path: Path) -> str:
    targets = r["domains"][1:]
    head = "| model | " + " | ".join(f"{t} NDCG@10 [95% CI]" for t in targets) + " |"
    lines = [head, "|---|" + "---|" * len(targets)]
    for name, per in r["rows"].items():
        cells = []
        for t in targets:
            x = per.get(t)
            cells.append("-" if x is None else f"{x['ndcg']:.4f} [{x['lo']:.3f}, {x['hi']:.3f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = "\n".join(
        f"- {name} / {t}: {x['note']}" for name, per in r["rows"].items() for t, x in per.items()
        if x["note"]
    )  # fmt: skip
    counts = ", ".join(f"{t}: {r['n_test'][t]} (validation {r['n_valid'][t]})" for t in targets)
    best_ours, best_base = {}, {}
    for t in targets:
        ours = [(n, p[t]["ndcg"]) for n, p in r["rows"].items() if n.startswith("Ours") and t in p]
        base = [(n, p[t]["ndcg"]) for n, p in r["rows"].items() if not n.startswith("Ours")]
        best_ours[t], best_base[t] = max(ours, key=lambda x: x[1]), max(base, key=lambda x: x[1])
    verdict = "\n".join(
        f"- {t}: best of ours {best_ours[t][0]} {best_ours[t][1]:.4f} vs best baseline "
        f"{best_base[t][0]} {best_base[t][1]:.4f}"
        + (" (ours ahead)" if best_ours[t][1] > best_base[t][1] else " (**ours behind**)")
        for t in targets
    )
    return f"""## Online Retail: the UK as source market for the other countries (retail_transfer)

{stamp()}- ours: `{_shown(config_path)}` (an experiment config of the `cross_domain` recipe,
  one front-door fit per market and row); peers: `SETTINGS` in
  `benchmarks/retail_transfer.py`; whole run {r["total_s"]:.0f} s on a shared machine.

Buys only (UCI Online Retail, `shoprec.data.datasets.online_retail`); domain = country
(United Kingdom = source; {", ".join(TARGETS)}; every other country pooled as
"Other"). Time split: test from {r["windows"]["test_start"]} (the last 30 days), validation
from {r["windows"]["valid_start"]}. Scored: customers of a market who
bought before the window and in it; relevant = their window buys (repeats included); each
market's products ranked in full. Test customers per market: {counts}. **Germany and France
have under 40 test customers each**: the intervals are wide and most differences below are
inside the noise.

{chr(10).join(lines)}

Best per market (point estimates; see the intervals):
{verdict}

Notes per row:
{notes}
"""


def _shown(path: Path) -> str:
    root = Path(__file__).resolve().parent.parent
    p = path.resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, help="write the section here, not in RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("shoprec.data").setLevel(logging.WARNING)
    if args.out is None and args.config.resolve() != CONFIG.resolve():
        raise SystemExit("another config: name where the section goes with --out FILE")
    run(args.config, args.out)


if __name__ == "__main__":
    main()
