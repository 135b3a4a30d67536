"""Amazon Sport <-> Cloth cross-domain benchmark: each domain as the target in turn.

Rows per target: popularity, implicit ALS on the target only and on both domains merged
(users shared, items of both domains as columns, only target items ranked), and ours
(:mod:`shoprec.transfer.cross_domain`): target only, pretrain on the source then fine-tune,
joint training ``J_S + lambda J_T``, and the multi-domain experts model. HR@10 / NDCG@10 with
999 sampled negatives (the DisenCDR protocol) and with full ranking, on the whole test set
and on the pairs without a cross-domain "twin". A second scenario hides all target history
of a seeded 20% of users (they keep their source history): cold-start users, where EMCDR
joins the rows.

Settings: ``configs/amazon_sport_cloth.yaml``. Run ``python -m benchmarks.amazon_cdr``
(``--part main`` / ``--part cold`` run one scenario and save it; ``--report`` writes the
RESULTS.md section from both saved parts).
"""

from __future__ import annotations

import os

# implicit's ALS wants a single-threaded BLAS; it must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import copy
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from benchmarks._als import fit_als
from benchmarks._results import load_note, stamp, write_section
from shoprec.data.datasets import amazon_cross_domain
from shoprec.evaluate import metrics
from shoprec.models import config_from_dict
from shoprec.train.loop import TrainConfig, fit
from shoprec.transfer.cross_domain import (
    CrossDomainConfig,
    CrossDomainModel,
    DomainIndex,
    EMCDRConfig,
    fit_mapping,
    freeze,
    history_matrix,
    joint_weighting,
    score_items,
    user_rows,
    user_vectors,
)
from shoprec.transfer.neighbours import ItemNeighbours, NeighbourConfig

log = logging.getLogger("benchmarks.amazon_cdr")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "amazon_sport_cloth.yaml"
OUT = ROOT / "runs" / "benchmarks"
K = 10
TARGET_GAIN = 0.10  # relative NDCG@10 over the better ALS (twin-free) / merged ALS (cold)
Scorer = Callable[[np.ndarray], torch.Tensor]  # user ids -> (U, I_target) scores


# --------------------------------------------------------------------------- data


@dataclass
class Pairs:
    """Parallel arrays of (user id, item id, domain index)."""

    u: np.ndarray
    i: np.ndarray
    d: np.ndarray

    def where(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.u[mask], self.i[mask], self.d[mask])

    def __len__(self) -> int:
        return len(self.u)


@dataclass
class Data:
    index: DomainIndex
    full: Pairs  # all train pairs (test time)
    fit: Pairs  # train minus validation (selection time)
    valid: Pairs
    test: Pairs


def load_data(settings: dict[str, Any], quick: dict[str, Any] | None) -> Data:
    ds = amazon_cross_domain.load()
    train = ds.interactions.df.select("user", "item", "domain")
    test = ds.test.df.select("user", "item", "domain")
    if quick:
        users = train["user"].unique().sort().sample(quick["users"], seed=0)
        train = train.filter(pl.col("user").is_in(users.implode()))
        test = test.filter(pl.col("user").is_in(users.implode()))
    index = DomainIndex.fit(train, domains=settings["domains"])
    full = Pairs(*index.encode(train))
    t = Pairs(*index.encode(test))
    t = t.where((t.u > 0) & (t.i > 0))
    rng = np.random.default_rng(settings["data"]["valid_seed"])
    perm = rng.permutation(len(full))
    key = full.u[perm] * 2 + full.d[perm]
    _, first, count = np.unique(key, return_index=True, return_counts=True)
    vmask = np.zeros(len(full), dtype=bool)
    vmask[perm[first[count >= 2]]] = True
    return Data(index, full, full.where(~vmask), full.where(vmask), t)


def cold_start(data: Data, share: float, seed: int) -> tuple[Data, dict[int, np.ndarray]]:
    """Hide all target history of ``share`` of the users, a disjoint group per target domain;
    they keep their source history. Returns the reduced data and the cold users per domain."""
    rng = np.random.default_rng(seed)
    users = rng.permutation(np.arange(1, data.index.n_users + 1))
    n = int(share * len(users))
    cold = {0: np.sort(users[:n]), 1: np.sort(users[n : 2 * n])}

    def drop(p: Pairs) -> Pairs:
        hit = np.zeros(len(p), dtype=bool)
        for k, us in cold.items():
            hit |= (p.d == k) & np.isin(p.u, us)
        return p.where(~hit)

    reduced = Data(data.index, drop(data.full), drop(data.fit), drop(data.valid), data.test)
    return reduced, cold


def domain_csr(p: Pairs, k: int, index: DomainIndex, users: np.ndarray) -> metrics.CSR:
    """Per listed user, their domain-``k`` items as columns of the domain."""
    sel = p.d == k
    lo = index.starts[k] + 1
    all_rows = metrics.CSR.from_pairs(p.u[sel], p.i[sel] - lo, index.n_users + 1)
    return metrics.CSR.from_lists(
        [all_rows.indices[all_rows.indptr[x] : all_rows.indptr[x + 1]] for x in users]
    )


def sampled_negatives(
    users: np.ndarray, seen: metrics.CSR, targets: np.ndarray, n_items: int, n: int, seed: int
) -> np.ndarray:
    """``(U, n)`` uniform item columns the user never touched (train or test), per user."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(users), n), dtype=np.int64)
    for r in range(len(users)):
        bad = set(seen.indices[seen.indptr[r] : seen.indptr[r + 1]].tolist()) | {targets[r]}
        draw = rng.choice(n_items, size=n + len(bad) + 8, replace=False)
        out[r] = [x for x in draw if x not in bad][:n]
    return out


def twins(
    data: Data, k: int, users: np.ndarray, items: np.ndarray, jaccard: float, with_test: bool
) -> np.ndarray:
    """Whether each test pair (user, item of domain k) has a near-identical product in the
    user's source train history: a source item whose user-set has Jaccard >= ``jaccard`` with
    the test item's. User-sets come from the train pairs of both domains, plus the test pairs
    when ``with_test`` (the test user did buy the test item; without them an item bought by
    two users loses half its set). Only the slice uses test pairs; no model sees them."""
    p = data.full
    if with_test:
        p = Pairs(*(np.concatenate([a, b]) for a, b in zip(
            (p.u, p.i, p.d), (data.test.u, data.test.i, data.test.d), strict=True)))  # fmt: skip
    users_of: dict[int, set[int]] = {}
    for uu, ii in zip(p.u.tolist(), p.i.tolist(), strict=True):
        users_of.setdefault(ii, set()).add(uu)
    src = data.full.d == 1 - k
    source_items: dict[int, list[int]] = {}
    for uu, ii in zip(data.full.u[src].tolist(), data.full.i[src].tolist(), strict=True):
        source_items.setdefault(uu, []).append(ii)
    out = np.zeros(len(users), dtype=bool)
    for r, (uu, ii) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
        a = users_of.get(ii, set())
        for s in source_items.get(uu, []):
            b = users_of[s]
            inter = len(a & b)
            if inter and inter / (len(a) + len(b) - inter) >= jaccard:
                out[r] = True
                break
    return out


# --------------------------------------------------------------------------- evaluation


@dataclass
class Target:
    """What one target domain is scored on (users, held-out items, exclusions, negatives)."""

    k: int
    users: np.ndarray
    items: np.ndarray  # columns of the domain
    exclude: metrics.CSR
    negatives: np.ndarray | None = None  # (U, 999) columns, test only


def make_target(data: Data, pairs: Pairs, held: Pairs, k: int, users: np.ndarray | None) -> Target:
    sel = held.d == k
    if users is not None:
        sel &= np.isin(held.u, users)
    lo = data.index.starts[k] + 1
    us = held.u[sel]
    return Target(k, us, held.i[sel] - lo, domain_csr(pairs, k, data.index, us))


def ranks(scorer: Scorer, t: Target, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray | None]:
    """Full-ranking ranks (train items excluded) and sampled ranks (if negatives are set)."""
    full, sampled = [], []
    for lo in range(0, len(t.users), chunk):
        sl = slice(lo, lo + chunk)
        s = scorer(t.users[sl]).float()
        ex = t.exclude.slice_rows(lo, min(lo + chunk, len(t.users)))
        full.append(metrics.rank_of_targets(s, t.items[sl], ex))
        if t.negatives is not None:
            rows = torch.arange(s.shape[0]).unsqueeze(1)
            pos = s[rows[:, 0], torch.as_tensor(t.items[sl])].numpy()
            neg = s[rows, torch.as_tensor(t.negatives[sl])].numpy()
            sampled.append(metrics.sampled_ranks(pos, neg))
    return np.concatenate(full), (np.concatenate(sampled) if sampled else None)


def summary(full: np.ndarray, sampled: np.ndarray | None, mask: np.ndarray) -> dict[str, float]:
    out = {
        "full_HR": metrics.hit_rate_at_k(full[mask], K),
        "full_NDCG": metrics.ndcg_at_k(full[mask], K),
    }
    if sampled is not None:
        out["s_HR"] = metrics.hit_rate_at_k(sampled[mask], K)
        out["s_NDCG"] = metrics.ndcg_at_k(sampled[mask], K)
    return out


# --------------------------------------------------------------------------- baselines


def popularity(data: Data, pairs: Pairs, k: int) -> Scorer:
    sel = pairs.d == k
    lo = data.index.starts[k] + 1
    counts = np.bincount(pairs.i[sel] - lo, minlength=data.index.domain_sizes[k])
    row = torch.as_tensor(counts, dtype=torch.float32)
    return lambda users: row.expand(len(users), -1)


def als(data: Data, pairs: Pairs, params: dict[str, Any], seed: int) -> tuple[Any, float]:
    """Fit implicit ALS on the (user, item) matrix of ``pairs`` (every domain in it)."""
    import scipy.sparse as sp

    shape = (data.index.n_users + 1, data.index.n_items + 1)
    matrix = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs.u, pairs.i)), shape=shape)
    return fit_als(matrix, params, seed)


def als_scorer(data: Data, model: Any, k: int) -> Scorer:
    lo = data.index.starts[k] + 1
    users = torch.from_numpy(np.asarray(model.user_factors, dtype=np.float32))
    items = torch.from_numpy(
        np.asarray(model.item_factors, dtype=np.float32)[lo : lo + data.index.domain_sizes[k]]
    )
    return lambda u: users[torch.as_tensor(u)] @ items.T


def select_als(
    data: Data, merged: bool, k: int, grid: list[dict[str, Any]], iters: int, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick ALS settings on validation NDCG@10 (full ranking)."""
    pairs = data.fit if merged else data.fit.where(data.fit.d == k)
    val = make_target(data, data.fit, data.valid, k, None)
    tried = []
    for g in grid:
        params = {**g, "iterations": iters}
        model, _ = als(data, pairs, params, seed)
        full, _ = ranks(als_scorer(data, model, k), val)
        tried.append({**params, "val_NDCG": metrics.ndcg_at_k(full, K)})
        log.info(
            "ALS %s k=%d %s -> %.4f", "merged" if merged else "target", k, g, tried[-1]["val_NDCG"]
        )
    best = max(tried, key=lambda r: r["val_NDCG"])
    return {x: best[x] for x in ("factors", "regularization", "alpha", "iterations")}, tried


def neighbours(data: Data, pairs: Pairs, params: dict[str, Any]) -> tuple[ItemNeighbours, float]:
    """Fit our cross-domain item neighbours on ``pairs`` (every domain in it)."""
    tick = time.perf_counter()
    cfg = NeighbourConfig(**{x: params[x] for x in ("shrink", "alpha", "top_k")})
    sizes = data.index.domain_sizes
    item_domain = np.repeat([0, 0, 1], [1, *sizes])  # id 0 (padding), then each domain's ids
    model = ItemNeighbours(cfg).fit(pairs.u, pairs.i, data.index.n_items + 1, item_domain)
    return model, time.perf_counter() - tick


def neighbour_scorer(data: Data, model: ItemNeighbours, pairs: Pairs, k: int) -> Scorer:
    """Scores of domain ``k``'s items from each user's history in ``pairs``."""
    n_rows, n_items = data.index.n_users + 1, data.index.n_items + 1
    hist = ItemNeighbours.histories(pairs.u, pairs.i, n_rows, n_items)
    lo = data.index.starts[k] + 1
    hi = lo + data.index.domain_sizes[k]
    return lambda u: model.score(hist[u], lo, hi)


def neighbour_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = ("shrink", "alpha", "top_k")
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*(grid[x] for x in keys))]


def select_neighbours(
    data: Data, merged: bool, grid: dict[str, list[Any]]
) -> dict[int, list[dict[str, Any]]]:
    """Validation NDCG@10 (full ranking) of every grid point, per target domain."""
    vals = {k: make_target(data, data.fit, data.valid, k, None) for k in (0, 1)}
    tried: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for g in neighbour_grid(grid):
        if merged:
            model, _ = neighbours(data, data.fit, g)
        for k in (0, 1):
            pairs = data.fit if merged else data.fit.where(data.fit.d == k)
            if not merged:
                model, _ = neighbours(data, pairs, g)
            full, _ = ranks(neighbour_scorer(data, model, pairs, k), vals[k])
            tried[k].append({**g, "val_NDCG": metrics.ndcg_at_k(full, K)})
            log.info(
                "neighbours %s k=%d %s -> %.4f",
                "merged" if merged else "target", k, g, tried[k][-1]["val_NDCG"],
            )  # fmt: skip
    return tried


def _best(tried: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(tried, key=lambda r: r["val_NDCG"])
    return {x: best[x] for x in ("shrink", "alpha", "top_k")}


# --------------------------------------------------------------------------- ours


class Ours:
    """Builds and trains CrossDomainModels with the benchmark's settings."""

    def __init__(self, data: Data, settings: dict[str, Any], train_cfg: TrainConfig) -> None:
        self.data = data
        self.s = settings
        self.train_cfg = train_cfg
        self.max_len = int(settings["data"]["max_history"])

    def history(self, pairs: Pairs, domains: tuple[int, ...]) -> np.ndarray:
        p = pairs.where(np.isin(pairs.d, domains))
        return history_matrix(p.u, p.i, self.data.index.n_users, self.max_len, seed=0)

    def build(self, experts: bool) -> CrossDomainModel:
        m = dict(self.s["model"])
        dim = int(m.pop("dim"))
        if experts:
            m.update(self.s["experts"])
        cfg = config_from_dict(
            CrossDomainConfig, {**m, "domain_sizes": list(self.data.index.domain_sizes)}
        )
        features, tasks = self.data.index.specs(dim)
        torch.manual_seed(int(self.s["seed"]))
        return CrossDomainModel(features, tasks, cfg)

    def evaluator(
        self,
        model: CrossDomainModel,
        data: Data,
        domains: tuple[int, ...],
        hist_domains: tuple[int, ...],
    ) -> Callable[[Any], dict[str, float]]:
        """Mean validation NDCG@10 (full ranking) over ``domains`` on a user sample."""
        hist = self.history(data.fit, hist_domains)
        n = int(self.s["data"]["valid_users"])
        targets = []
        for k in domains:
            t = make_target(data, data.fit, data.valid, k, None)
            keep = np.random.default_rng(k).permutation(len(t.users))[:n]
            keep.sort()
            targets.append(make_target(data, data.fit, data.valid, k, t.users[keep]))

        def evaluate(_: Any) -> dict[str, float]:
            out = {}
            for t in targets:
                full, _s = ranks(self.scorer(model, hist, t.k), t)
                out[f"ndcg_{t.k}"] = metrics.ndcg_at_k(full, K)
            out["ndcg"] = float(np.mean(list(out.values())))
            return out

        return evaluate

    def scorer(self, model: CrossDomainModel, hist: np.ndarray, k: int) -> Scorer:
        return lambda u: score_items(model, user_vectors(model, u, hist[u], k), k)

    def train(
        self,
        model: CrossDomainModel,
        data: Data,
        domains: tuple[int, ...],
        hist_domains: tuple[int, ...],
        monitor_domains: tuple[int, ...],
        weighting: Any = None,
    ) -> dict[str, Any]:
        """fit() on the user rows of ``domains`` with histories from ``hist_domains``."""
        p = data.fit.where(np.isin(data.fit.d, domains))
        rows = user_rows(p.u, p.i, p.d, self.history(data.fit, hist_domains))
        ev = self.evaluator(model, data, monitor_domains, hist_domains)
        tick = time.perf_counter()
        result = fit(
            model,
            rows,
            config=replace(self.train_cfg, monitor="ndcg"),
            evaluator=ev,
            weighting=weighting,
        )
        return {
            "rows": len(rows),
            "best_epoch": result.best_epoch,
            "val_ndcg": round(result.best_score, 4),
            "history": [round(h["ndcg"], 4) for h in result.history],
            "train_s": result.train_seconds,
            "wall_s": time.perf_counter() - tick,
        }


# --------------------------------------------------------------------------- scenarios


def run_main(data: Data, settings: dict[str, Any], ours: Ours, als_iters: int) -> dict[str, Any]:
    seed = int(settings["seed"])
    ds = settings["data"]
    results: dict[str, Any] = {"targets": {}, "facts": {}}
    test_targets = {}
    for k in (0, 1):
        t = make_target(data, data.full, data.test, k, None)
        everything = Pairs(*(np.concatenate([a, b]) for a, b in zip(
            (data.full.u, data.full.i, data.full.d), (data.test.u, data.test.i, data.test.d),
            strict=True)))  # fmt: skip
        seen = domain_csr(everything, k, data.index, t.users)
        t.negatives = sampled_negatives(
            t.users, seen, t.items, data.index.domain_sizes[k], ds["n_sampled_negatives"],
            ds["negatives_seed"] + k,
        )  # fmt: skip
        test_targets[k] = t
        ids = t.items + data.index.starts[k] + 1
        tw = twins(data, k, t.users, ids, ds["twin_jaccard"], with_test=True)
        strict = twins(data, k, t.users, ids, ds["twin_jaccard"], with_test=False)
        results["targets"][k] = {
            "n_test": len(t.users),
            "n_twins": int(tw.sum()),
            "n_twins_train_only": int(strict.sum()),
            "rows": [],
        }
        results["facts"][f"twins_{k}"] = tw

    def add(
        k: int, name: str, scorer: Scorer, note: str = "", train_s: float | None = None
    ) -> None:
        t = test_targets[k]
        full, sampled = ranks(scorer, t)
        tw = results["facts"][f"twins_{k}"]
        row = {
            "name": name,
            "all": summary(full, sampled, np.ones(len(full), dtype=bool)),
            "no_twin": summary(full, sampled, ~tw),
            "twin": summary(full, sampled, tw),
            "note": note,
            "train_s": train_s,
        }
        results["targets"][k]["rows"].append(row)
        log.info(
            "k=%d %s: %s",
            k,
            name,
            {a: {m: round(v, 4) for m, v in row[a].items()} for a in ("all", "no_twin")},
        )

    grid = settings["als"]["grid"]
    for k in (0, 1):
        add(k, "Popularity (target train count)", popularity(data, data.full, k))
        for merged in (False, True):
            params, tried = select_als(data, merged, k, grid, als_iters, seed)
            pairs = data.full if merged else data.full.where(data.full.d == k)
            model, secs = als(data, pairs, params, seed)
            what = "both domains merged" if merged else "target only"
            best_val = max(r["val_NDCG"] for r in tried)
            note = f"{_als_params(params)} (val NDCG@10 {best_val:.4f})"
            add(k, f"implicit ALS, {what}", als_scorer(data, model, k), note, secs)
            results["facts"][f"als_{k}_{int(merged)}"] = tried

    # Ours, cross-domain item neighbours: target pairs only, then both domains.
    for merged in (False, True):
        tried = select_neighbours(data, merged, settings["neighbours"]["grid"])
        for k in (0, 1):
            params = _best(tried[k])
            pairs = data.full if merged else data.full.where(data.full.d == k)
            model, secs = neighbours(data, pairs, params)
            what = "both domains" if merged else "target only"
            best_val = max(r["val_NDCG"] for r in tried[k])
            note = f"{_nb_params(params)} (val NDCG@10 {best_val:.4f})"
            add(k, f"Ours, item neighbours, {what}", neighbour_scorer(data, model, pairs, k),
                note, secs)  # fmt: skip
            results["facts"][f"nb_{k}_{int(merged)}"] = tried[k]

    # Ours, target only (also the source model that fine-tuning starts from).
    single: dict[int, CrossDomainModel] = {}
    for k in (0, 1):
        m = ours.build(experts=False)
        info = ours.train(m, data, (k,), (k,), (k,))
        single[k] = m
        results["facts"][f"target_only_{k}"] = info
        hist = ours.history(data.full, (k,))
        add(k, "Ours, target only", ours.scorer(m, hist, k), _note(info), info["train_s"])
    both = ours.history(data.full, (0, 1))
    # Pretrain on the source, then fine-tune on the target (histories of both domains).
    for k in (0, 1):
        m = copy.deepcopy(single[1 - k])
        parts = tuple(settings["finetune"]["freeze"])
        if parts:
            freeze(m, parts=parts)
        info = ours.train(m, data, (k,), (0, 1), (k,))
        results["facts"][f"finetune_{k}"] = info
        pre = results["facts"][f"target_only_{1 - k}"]["train_s"]
        note = _note(info) + f"; frozen: {list(parts) or 'nothing'}"
        add(k, "Ours, pretrain on source + fine-tune", ours.scorer(m, both, k), note,
            info["train_s"] + pre)  # fmt: skip
    # Joint J_S + lambda J_T, and the multi-domain experts model.
    lam = float(settings["joint"]["lambda"])
    for experts, name in ((False, "Ours, joint (shared embeddings, domain towers)"),
                          (True, "Ours, multi-domain experts (PLE/STAR-style)")):  # fmt: skip
        targets = [(None, (0, 1))] if lam == 1.0 else [(k, (k,)) for k in (0, 1)]
        for k_only, monitor in targets:
            m = ours.build(experts=experts)
            names = data.index.domains
            weighting = (
                joint_weighting(names[1 - k_only], names[k_only], lam)
                if k_only is not None
                else None
            )
            info = ours.train(m, data, (0, 1), (0, 1), monitor, weighting)
            results["facts"][f"{'experts' if experts else 'joint'}_{k_only}"] = info
            for k in monitor:
                add(
                    k,
                    name,
                    ours.scorer(m, both, k),
                    _note(info) + f"; lambda {lam}",
                    info["train_s"],
                )
    for k in (0, 1):
        results["facts"][f"twins_{k}"] = results["facts"][f"twins_{k}"].tolist()
    return results


def run_cold(
    data: Data,
    settings: dict[str, Any],
    ours: Ours,
    als_params: dict[int, dict[str, Any]],
    nb_params: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    seed = int(settings["seed"])
    reduced, cold = cold_start(data, settings["data"]["cold_share"], settings["data"]["cold_seed"])
    results: dict[str, Any] = {"targets": {}, "facts": {}}
    tests = {k: make_target(reduced, reduced.full, data.test, k, cold[k]) for k in (0, 1)}
    for k in (0, 1):
        results["targets"][k] = {"n_test": len(tests[k].users), "n_cold": len(cold[k]), "rows": []}

    def add(
        k: int, name: str, scorer: Scorer, note: str = "", train_s: float | None = None
    ) -> None:
        full, _ = ranks(scorer, tests[k])
        row = {
            "name": name,
            "all": summary(full, None, np.ones(len(full), dtype=bool)),
            "note": note,
            "train_s": train_s,
        }
        results["targets"][k]["rows"].append(row)
        log.info("cold k=%d %s: %s", k, name, {m: round(v, 4) for m, v in row["all"].items()})

    for k in (0, 1):
        add(k, "Popularity (target train count)", popularity(reduced, reduced.full, k))
        model, secs = als(reduced, reduced.full, als_params[k], seed)
        p = als_params[k]
        note = f"{_als_params(p)} (picked on validation of the main scenario)"
        add(k, "implicit ALS, both domains merged", als_scorer(reduced, model, k), note, secs)
    for k in (0, 1):
        nb, secs = neighbours(reduced, reduced.full, nb_params[k])
        note = f"{_nb_params(nb_params[k])} (picked on validation of the main scenario)"
        scorer = neighbour_scorer(reduced, nb, reduced.full, k)
        add(k, "Ours, item neighbours, both domains", scorer, note, secs)
    both = ours.history(reduced.full, (0, 1))
    for experts, name in ((False, "Ours, joint (shared embeddings, domain towers)"),
                          (True, "Ours, multi-domain experts (PLE/STAR-style)")):  # fmt: skip
        m = ours.build(experts=experts)
        info = ours.train(m, reduced, (0, 1), (0, 1), (0, 1))
        results["facts"][name] = info
        for k in (0, 1):
            add(k, name, ours.scorer(m, both, k), _note(info), info["train_s"])
    # EMCDR: a model per domain, an MLP from source to target user vectors fit on the users
    # active in both, applied to the cold users' source vectors.
    single, hists = {}, {}
    for k in (0, 1):
        m = ours.build(experts=False)
        info = ours.train(m, reduced, (k,), (k,), (k,))
        single[k], hists[k] = m, ours.history(reduced.full, (k,))
        results["facts"][f"single_{k}"] = info
    e = settings["emcdr"]
    for k in (0, 1):
        src = 1 - k
        warm = np.intersect1d(
            reduced.full.u[reduced.full.d == k], reduced.full.u[reduced.full.d == src]
        )
        sv = user_vectors(single[src], warm, hists[src][warm], src)
        tv = user_vectors(single[k], warm, hists[k][warm], k)
        cfg = EMCDRConfig(
            hidden=tuple(e["hidden"]),
            epochs=int(e["epochs"]),
            patience=int(e["patience"]),
            seed=seed,
        )
        tick = time.perf_counter()
        mapping, facts = fit_mapping(sv, tv, cfg)
        secs = time.perf_counter() - tick
        results["facts"][f"emcdr_{k}"] = {**facts, "users": len(warm)}

        def scorer(
            u: np.ndarray, k: int = k, src: int = src, mapping: Any = mapping
        ) -> torch.Tensor:
            with torch.no_grad():
                v = mapping(user_vectors(single[src], u, hists[src][u], src))
            return score_items(single[k], v, k)

        note = (
            f"mapping fit on {len(warm):,} users active in both (val MSE {facts['valid_mse']:.4f})"
        )
        add(k, "Ours, EMCDR (target-only models + MLP mapping)", scorer, note, secs)
    return results


def _nb_params(p: dict[str, Any]) -> str:
    return f"shrink {p['shrink']}, alpha {p['alpha']}, top {p['top_k']} neighbours"


def _als_params(p: dict[str, Any]) -> str:
    return f"{p['factors']} factors, reg {p['regularization']}, alpha {p['alpha']}"


def _note(info: dict[str, Any]) -> str:
    return f"epoch {info['best_epoch']} picked on validation (NDCG@10 {info['val_ndcg']:.4f})"


# --------------------------------------------------------------------------- report


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _main_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | sampled HR@10 | sampled NDCG@10 | full HR@10 | full NDCG@10 | no-twin "
        "sampled NDCG@10 | no-twin full HR@10 | no-twin full NDCG@10 | train time | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, n = r["all"], r["no_twin"]
        t = "-" if not r["train_s"] else f"{r['train_s']:.0f} s"
        lines.append(
            f"| {r['name']} | {_fmt(a['s_HR'])} | {_fmt(a['s_NDCG'])} | {_fmt(a['full_HR'])} | "
            f"{_fmt(a['full_NDCG'])} | {_fmt(n['s_NDCG'])} | {_fmt(n['full_HR'])} | "
            f"{_fmt(n['full_NDCG'])} | {t} | {r['note']} |"
        )
    return "\n".join(lines)


def _cold_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | full HR@10 | full NDCG@10 | train time | notes |", "|---|---|---|---|---|"]
    for r in rows:
        t = "-" if not r["train_s"] else f"{r['train_s']:.0f} s"
        lines.append(
            f"| {r['name']} | {_fmt(r['all']['full_HR'])} | {_fmt(r['all']['full_NDCG'])} | "
            f"{t} | {r['note']} |"
        )
    return "\n".join(lines)


def _verdicts(main: dict[str, Any], cold: dict[str, Any] | None, domains: list[str]) -> list[str]:
    out = []
    for k in (0, 1):
        rows = main["targets"][str(k)]["rows"]
        for proto, key in (("full ranking", "full_NDCG"), ("999 sampled negatives", "s_NDCG")):
            als_best = max(r["no_twin"][key] for r in rows if r["name"].startswith("implicit ALS"))
            ours = [r for r in rows if r["name"].startswith("Ours")]
            best = max(ours, key=lambda r: r["no_twin"][key])
            gain = best["no_twin"][key] / als_best - 1 if als_best > 0 else float("nan")
            met = gain >= TARGET_GAIN
            out.append(
                f"- {domains[1 - k]} -> **{domains[k]}**, twin-free pairs, {proto}: best of ours "
                f"({best['name']}) NDCG@10 {best['no_twin'][key]:.4f} vs the better ALS "
                f"{als_best:.4f}: {gain:+.1%} -> **target {'met' if met else 'not met'}** "
                f"(needs >= +{TARGET_GAIN:.0%})."
            )
    if cold is not None:
        for k in (0, 1):
            rows = cold["targets"][str(k)]["rows"]
            als_row = next(r for r in rows if r["name"].startswith("implicit ALS"))
            ours = [r for r in rows if r["name"].startswith("Ours")]
            best = max(ours, key=lambda r: r["all"]["full_NDCG"])
            base = als_row["all"]["full_NDCG"]
            gain = best["all"]["full_NDCG"] / base - 1 if base > 0 else float("nan")
            out.append(
                f"- cold-start users, target **{domains[k]}**: best of ours ({best['name']}) "
                f"NDCG@10 {best['all']['full_NDCG']:.4f} vs ALS on both domains merged "
                f"{base:.4f}: {gain:+.1%} -> **target "
                f"{'met' if gain >= TARGET_GAIN else 'not met'}**."
            )
    return out


def _markdown(main: dict[str, Any], cold: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    domains = settings["domains"]
    parts = []
    for k in (0, 1):
        t = main["targets"][str(k)]
        parts.append(
            f"### Target {domains[k]} (source {domains[1 - k]}): {t['n_test']:,} test users, "
            f"{t['n_twins']:,} ({t['n_twins'] / t['n_test']:.1%}) with a twin "
            f"({t['n_twins_train_only']:,} with user-sets from train pairs only)\n\n"
            + _main_table(t["rows"])
        )
    cold_md = ""
    if cold is not None:
        cparts = []
        for k in (0, 1):
            t = cold["targets"][str(k)]
            cparts.append(
                f"#### Cold-start users in {domains[k]}: {t['n_cold']:,} users lost all "
                f"{domains[k]} history; {t['n_test']:,} of them have a test item\n\n"
                + _cold_table(t["rows"])
            )
        cold_md = "\n\n### Cold-start users\n\n" + "\n\n".join(cparts)
    verdicts = "\n".join(_verdicts(main, cold, domains))
    frozen = settings["finetune"]["freeze"] or "nothing"
    merge = []
    for k in (0, 1):
        rows = {r["name"]: r for r in main["targets"][str(k)]["rows"]}
        a = rows["implicit ALS, target only"]
        b = rows["implicit ALS, both domains merged"]
        merge.append(
            f"- target {domains[k]}: merging the domains moves ALS full NDCG@10 from "
            f"{a['all']['full_NDCG']:.4f} to {b['all']['full_NDCG']:.4f} on all pairs, from "
            f"{a['no_twin']['full_NDCG']:.4f} to {b['no_twin']['full_NDCG']:.4f} on twin-free "
            f"pairs and from {a['twin']['full_NDCG']:.4f} to {b['twin']['full_NDCG']:.4f} on "
            "the twin pairs."
        )
    for k in (0, 1):
        rows = {r["name"]: r for r in main["targets"][str(k)]["rows"]}
        a = rows.get("Ours, item neighbours, target only")
        b = rows.get("Ours, item neighbours, both domains")
        if a and b:
            merge.append(
                f"- target {domains[k]}, our item neighbours: the source history moves full "
                f"NDCG@10 from {a['all']['full_NDCG']:.4f} to {b['all']['full_NDCG']:.4f} on all "
                f"pairs, from {a['no_twin']['full_NDCG']:.4f} to "
                f"{b['no_twin']['full_NDCG']:.4f} on twin-free pairs and from "
                f"{a['twin']['full_NDCG']:.4f} to {b['twin']['full_NDCG']:.4f} on the twin pairs."
            )
    merge_lines = "\n".join(merge)
    behind, neural_ahead, n_cells = [], [], 0
    metric_names = {"s_HR": "sampled HR", "s_NDCG": "sampled NDCG", "full_HR": "full HR",
                    "full_NDCG": "full NDCG"}  # fmt: skip
    for k in (0, 1):
        rows = main["targets"][str(k)]["rows"]
        als_rows = [r for r in rows if r["name"].startswith("implicit ALS")]
        ours = [r for r in rows if r["name"].startswith("Ours")]
        neural = [r for r in ours if not r["name"].startswith("Ours, item neighbours")]
        for part in ("all", "no_twin"):
            for m, label in metric_names.items():
                n_cells += 1
                base = max(als_rows, key=lambda r: r[part][m])
                best = max(ours, key=lambda r: r[part][m])
                cell = f"{domains[k]} {part.replace('_', '-')} {label}"
                if best[part][m] <= base[part][m]:
                    behind.append(
                        f"{cell} ({best['name'].removeprefix('Ours, ')} {best[part][m]:.4f} vs "
                        f"{base['name'].removeprefix('implicit ')} {base[part][m]:.4f})"
                    )
                if neural and max(r[part][m] for r in neural) > base[part][m]:
                    neural_ahead.append(cell)
    behind_text = "; ".join(behind) or "none"
    neural_text = ", ".join(neural_ahead) or "none"
    lam, ex = settings["joint"]["lambda"], settings["experts"]
    nb_grid = settings["neighbours"]["grid"]
    facts = json.dumps(
        {k: v for k, v in main["facts"].items() if not k.startswith(("als_", "twins_"))},
        default=str,
    )
    run_stamp = main.get("stamp") or stamp("python -m benchmarks.amazon_cdr")
    return f"""## Amazon Sport <-> Cloth cross-domain transfer (amazon_cdr)

{run_stamp}- torch threads: {settings["threads"]};
  {load_note(settings["threads"], main.get("load_end", float("nan")))}. Whole run:
  {main.get("total_s", 0):.0f} s (main) + {(cold or {}).get("total_s", 0):.0f} s (cold start).
- settings: `configs/amazon_sport_cloth.yaml`

Data: the DisenCDR release (9,928 users shared by both domains; Sport 30,796 items / 92,612
train pairs, Cloth 39,008 items / 87,829 train pairs; no timestamps). Test: `test.txt` of
each domain, one held-out item per user (items unseen in that domain's train are already
removed by the release). Validation for every choice (epochs, ALS settings): one random
train item per (user, domain) with at least two, held out of training; the test files are
read once, at the end. Metrics: HR@10 and NDCG@10 with one relevant item, (a) among the
test item and 999 items drawn uniformly from the target items the user never touched (the
DisenCDR protocol; the same negatives for every row), (b) among **all** target items less
the user's target train items (ties count against the target). "No-twin": test pairs for
which the user's source history holds no near-identical product (a source item whose train
user-set has Jaccard >= {settings["data"]["twin_jaccard"]} with the test item's; user-sets from
the train and test pairs of both domains, since from train pairs alone an item bought by two
users loses half its set; the slice only, no model sees test pairs).

{(chr(10) * 2).join(parts)}{cold_md}

Targets (relative NDCG@10; "best of ours" is the best of our rows on that slice of the test
set: each row's settings were chosen on validation, but picking the row on test flatters us):
{verdicts}

How each row works:
- **Popularity**: target items by train count.
- **implicit ALS**: on the target's user x item matrix, or on both domains' (users shared,
  items of both domains as columns, only target items ranked); factors, regularization and
  alpha picked from {settings["als"]["grid"]} on validation, then refit on all train pairs.
- **Ours, item neighbours** (`shoprec.transfer.neighbours.ItemNeighbours`): item-to-item
  similarities over the items of both domains from the users they share (asymmetric cosine
  `c_ij / (d_i^alpha d_j^(1-alpha) + shrink)`, each item keeping its top-k neighbours in each
  domain), a user's score for a target item = the sum of its similarities to every item of
  their history, whatever the domain, plus a popularity tie-break below any real neighbour.
  Nothing is trained: two sparse products. *Target only*: target pairs alone; *both domains*:
  the source history votes too, which is also how a cold-start user is served. Shrink, alpha
  and k picked from {nb_grid} on validation.
- **Ours** (`shoprec.transfer.cross_domain.CrossDomainModel`, one `fit` loop): a user's
  vector in a domain = per-domain head over [mean embedding of the user's history items]
  (user-id embeddings off: they memorised on validation), dot item embedding + item bias;
  one training row per (user, domain) with a softmax over all the domain's items for each of
  the user's items and half the history hidden (denoising). *Target only*: target rows and
  target histories. *Pretrain + fine-tune*: the source's target-only model, then fit on the
  target rows with histories of both domains (frozen: {frozen}).
  *Joint*: rows of both domains, `J = J_S + {lam} J_T` (at 1.0 one model serves both
  directions). *Multi-domain experts*: the same with {ex["n_shared_experts"]} shared and
  {ex["n_domain_experts"]} per-domain experts mixed by a per-domain gate.
  *EMCDR*: the two target-only models, and an MLP mapping source to target user vectors fit
  on warm users, applied to cold users' source vectors.
- Cold start: a seeded {settings["data"]["cold_share"]:.0%} of users lose all target train
  history (a disjoint group per target), every model is retrained without it, and those
  users' target test items are ranked (full ranking). ALS on the target only cannot score
  users it has no row for (it would fall back to popularity), so it is not listed.

Where ours loses (the best of our rows vs the better ALS row, {n_cells} cells: two targets,
all pairs / twin-free, four metrics): {behind_text}. Our neural models
(`CrossDomainModel`: target only, fine-tune, joint, experts) are ahead of the better ALS
in these cells only: {neural_text}. What the source domain adds, on all pairs, on the
twin-free pairs and on the twin pairs (mostly the twins):
{merge_lines}

On our validation hold-out (random training pairs, one per user and domain) the source
history helped the twin-free validation pairs as well (during development, Sport: item
neighbours with both domains 0.053 vs ALS merged 0.045 full NDCG@10; twin flags computed the
same way); on the released test pairs it does not, for ALS nor for us, which is why the
both-domains rows, picked on validation, lose the twin-free slice to the target-only ones.

Findings from developing `CrossDomainModel` (validation hold-out, Sport as the target, full
ranking NDCG@10; not rerun by this script): popularity 0.0048, ALS target only 0.0145 (256
factors), ALS merged 0.0733. (A quick item-kNN figure of 0.0034 from that time had no recorded
setting; the item-neighbour rows above, with their validation scores, replace it.) Our
target-only model: one row per
(user, item) with a sampled softmax (512 uniform + in-batch negatives) 0.0037, best at epoch
1-2, then falling while the training loss kept dropping (memorisation, with or without user-id
embeddings; Adam weight decay or an L2 on the rows used did not stop it); 4,096 uniform
negatives 0.0037; full softmax 0.0050; one row per user with a multinomial likelihood (the
shipped setting) 0.0047 at lr 1e-3, 0.0059 at lr 1e-2 (0.0049 with user ids); predicting only
the history items hidden by dropout 0.0060. Loading ALS factors into the embeddings (frozen)
and training the towers from an exact copy of ALS (zero-initialised residual heads) went
0.0130 (the copy, on a 30% user sample) -> 0.0128 -> 0.0104 over five epochs: the softmax
objective moved the scores away from what ALS ranks well. We did not find a setting of our
model that approaches ALS on this data in the time we had.

Training facts: `{facts}`
"""


# --------------------------------------------------------------------------- entry


def run(part: str, quick: bool, config_path: Path = CONFIG) -> dict[str, Any]:
    settings = yaml.safe_load(config_path.read_text())
    torch.set_num_threads(int(settings["threads"]))
    q = settings["quick"] if quick else None
    train_cfg = config_from_dict(TrainConfig, settings["train"])
    als_iters = int(settings["als"]["iterations"])
    if q:
        train_cfg = replace(train_cfg, epochs=q["epochs"])
        als_iters = q["als_iterations"]
        settings["data"]["valid_users"] = 500
    started = time.perf_counter()
    data = load_data(settings, q)
    ours = Ours(data, settings, train_cfg)
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    if part == "main":
        res = run_main(data, settings, ours, als_iters)
    else:
        params = {}
        main_path = OUT / f"amazon_cdr_main{suffix}.json"
        for k in (0, 1):
            if main_path.exists():
                tried = json.loads(main_path.read_text())["facts"][f"als_{k}_1"]
                best = max(tried, key=lambda r: r["val_NDCG"])
                params[k] = {
                    x: best[x] for x in ("factors", "regularization", "alpha", "iterations")
                }
            else:
                params[k] = select_als(
                    data, True, k, settings["als"]["grid"], als_iters, int(settings["seed"])
                )[0]
        nb_params = {}
        for k in (0, 1):
            if main_path.exists():
                nb_params[k] = _best(json.loads(main_path.read_text())["facts"][f"nb_{k}_1"])
            else:
                grid = settings["neighbours"]["grid"]
                nb_params[k] = _best(select_neighbours(data, True, grid)[k])
        res = run_cold(data, settings, ours, params, nb_params)
    res["total_s"] = time.perf_counter() - started
    res["stamp"] = stamp("python -m benchmarks.amazon_cdr")  # the code and date of the run
    res["load_end"] = os.getloadavg()[0]
    path = OUT / f"amazon_cdr_{part}{suffix}.json"
    path.write_text(json.dumps(res, default=_json_default, indent=1))
    log.info("wrote %s", path)
    return res


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def report(quick: bool, config_path: Path = CONFIG) -> None:
    settings = yaml.safe_load(config_path.read_text())
    suffix = "_quick" if quick else ""
    main = json.loads((OUT / f"amazon_cdr_main{suffix}.json").read_text())
    cold_path = OUT / f"amazon_cdr_cold{suffix}.json"
    cold = json.loads(cold_path.read_text()) if cold_path.exists() else None
    md = _markdown(main, cold, settings)
    if quick:
        print(md)
    else:
        write_section("amazon_cdr", md)
        print(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on a user sample")
    parser.add_argument("--part", choices=["main", "cold", "all"], default="all")
    parser.add_argument(
        "--report", action="store_true", help="only write RESULTS.md from saved parts"
    )
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("shoprec.data").setLevel(logging.WARNING)
    if not args.report:
        for part in ("main", "cold") if args.part == "all" else (args.part,):
            run(part, args.quick, args.config)
    if args.report or args.part == "all":
        report(args.quick, args.config)


if __name__ == "__main__":
    main()
