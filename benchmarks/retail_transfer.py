"""Online Retail: the UK as the source market for the other countries (Country = domain).

Customers each buy in one country, so what transfers is the products: the same product has
one embedding in every market (:func:`shoprec.transfer.cross_domain.tie_items`), each market
its own tower and item biases. Time split: the last 30 days are the test, the 30 days before
them the validation (epochs, ALS settings); a customer is scored if they bought before the
test window and in it; the relevant items are their test-window buys (repeat buys count).
Germany and France have under 40 such customers each, so every NDCG@10 comes with a 95%
bootstrap interval over customers.

Run ``python -m benchmarks.retail_transfer`` (settings: ``configs/retail_transfer.yaml``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import logging
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from benchmarks._als import fit_als
from benchmarks._results import stamp, write_section
from shoprec.data.datasets import online_retail
from shoprec.evaluate import metrics
from shoprec.models import config_from_dict
from shoprec.train.loop import TrainConfig, fit
from shoprec.transfer.cross_domain import (
    CrossDomainConfig,
    CrossDomainModel,
    DomainIndex,
    history_matrix,
    score_items,
    tie_items,
    user_rows,
    user_vectors,
)

log = logging.getLogger("benchmarks.retail_transfer")
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "retail_transfer.yaml"
K = 10


def load(settings: dict[str, Any]) -> tuple[pl.DataFrame, Any, Any]:
    """Buys as (user, item, domain, timestamp); domain = the country, or "Other"."""
    ds = online_retail.load()
    df = ds.interactions.df.filter(pl.col("behavior") == "buy")
    keep = [settings["source"], *settings["targets"]]
    df = df.with_columns(
        pl.when(pl.col("domain").is_in(keep)).then(pl.col("domain")).otherwise(pl.lit("Other"))
    ).select("user", "item", "domain", "timestamp")
    end = df["timestamp"].max() + timedelta(seconds=1)
    test_start = end - timedelta(days=settings["test_days"])
    valid_start = test_start - timedelta(days=settings["test_days"])
    return df, valid_start, test_start


def held_out(
    index: DomainIndex, before: pl.DataFrame, window: pl.DataFrame, k: int
) -> tuple[np.ndarray, metrics.CSR]:
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
    return users, metrics.CSR.from_pairs(pos, i, len(users))


def ndcg_per_user(scores: torch.Tensor, relevant: metrics.CSR) -> np.ndarray:
    per = metrics.ranking_metrics(scores, relevant, ks=(K,), per_user=True)
    return np.asarray(per[f"NDCG@{K}"])


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


def run(config_path: Path = CONFIG) -> dict[str, Any]:
    settings = yaml.safe_load(config_path.read_text())
    torch.set_num_threads(int(settings["threads"]))
    started = time.perf_counter()
    df, valid_start, test_start = load(settings)
    pre_valid = df.filter(pl.col("timestamp") < valid_start)
    pre_test = df.filter(pl.col("timestamp") < test_start)
    valid = df.filter((pl.col("timestamp") >= valid_start) & (pl.col("timestamp") < test_start))
    test = df.filter(pl.col("timestamp") >= test_start)
    domains = [settings["source"], *settings["targets"], "Other"]
    index = DomainIndex.fit(pre_test.unique(["user", "item", "domain"]), domains=domains)
    fit_u, fit_i, fit_d = index.encode(pre_valid.unique(["user", "item", "domain"]))
    all_u, all_i, all_d = index.encode(pre_test.unique(["user", "item", "domain"]))
    max_len = int(settings["max_history"])
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
    for merged in (False, True):
        name = "implicit ALS, " + ("all markets" if merged else "target market only")
        for k in targets:
            best, best_score = None, -1.0
            for g in settings["als"]["grid"]:
                p = {**g, "iterations": settings["als"]["iterations"]}
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

    # Ours: target market only, and joint over every market with shared product embeddings.
    train_cfg = config_from_dict(TrainConfig, settings["train"])
    m = dict(settings["model"])
    dim = int(m.pop("dim"))
    for joint in (False, True):
        name = "Ours, " + ("joint, all markets, shared products" if joint else "target market only")
        for k in targets if not joint else [None]:
            doms = tuple(range(len(domains))) if joint else (k,)
            fsel = np.isin(fit_d, doms)
            asel = np.isin(all_d, doms)
            h_fit = history_matrix(fit_u[fsel], fit_i[fsel], index.n_users, max_len)
            h_all = history_matrix(all_u[asel], all_i[asel], index.n_users, max_len)
            features, tasks = index.specs(dim)
            cfg = config_from_dict(
                CrossDomainConfig, {**m, "domain_sizes": list(index.domain_sizes)}
            )
            torch.manual_seed(0)
            model = CrossDomainModel(features, tasks, cfg)
            if joint:
                tie_items(model, index.shared_item_rows())
            monitor = targets if joint else [k]

            def evaluate(_: Any, model: CrossDomainModel = model, h: np.ndarray = h_fit,
                         monitor: list[int] = monitor) -> dict[str, float]:  # fmt: skip
                out = []
                for t in monitor:
                    vu, vrel = val_sets[t]
                    if len(vu) == 0:
                        continue
                    s = score_items(model, user_vectors(model, vu, h[vu], t), t)
                    out.append(float(np.nanmean(ndcg_per_user(s, vrel))))
                return {"ndcg": float(np.mean(out)) if out else 0.0}

            rows = user_rows(fit_u[fsel], fit_i[fsel], fit_d[fsel], h_fit, max_pos=128)
            res = fit(model, rows, config=replace(train_cfg, monitor="ndcg"), evaluator=evaluate)
            for t in monitor:
                tu, _ = test_sets[t]
                s = score_items(model, user_vectors(model, tu, h_all[tu], t), t)
                record(name, t, s, f"epoch {res.best_epoch} on validation ({res.best_score:.4f})")
    results["total_s"] = time.perf_counter() - started
    results["domains"] = domains
    results["windows"] = {"valid_start": str(valid_start), "test_start": str(test_start)}
    write_section("retail_transfer", markdown(results, settings))
    return results


def markdown(r: dict[str, Any], settings: dict[str, Any]) -> str:
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

{stamp("python -m benchmarks.retail_transfer")}- settings: `configs/retail_transfer.yaml`;
  whole run {r["total_s"]:.0f} s on a shared machine.

Buys only (UCI Online Retail, `shoprec.data.datasets.online_retail`); domain = country
(United Kingdom = source; {", ".join(settings["targets"])}; every other country pooled as
"Other"). Time split: test from {r["windows"]["test_start"]} (last {settings["test_days"]}
days), validation the {settings["test_days"]} days before. Scored: customers of a market who
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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("shoprec.data").setLevel(logging.WARNING)
    run(args.config)


if __name__ == "__main__":
    main()
