"""Online Retail: products first sold in the last month, recommended from their descriptions.

Run::

    .venv/bin/python -m benchmarks.retail_new_items            # writes RESULTS.md
    .venv/bin/python -m benchmarks.retail_new_items --quick    # fewer epochs, prints only

Protocol (every row, one split, one run):

* Data: UCI Online Retail (:mod:`shoprec.data.datasets.online_retail`, default cleaning),
  purchases only; a product is its description, which is also its title; its price is the
  catalog's median unit price.
* Test: the cutoff is 30 days before the last invoice. New products = those whose first sale
  is on or after the cutoff; training = every purchase before it (so no new product is seen).
  Test buyers = customers with purchases before the cutoff who bought at least one new
  product after it. Each buyer's ranking covers every new product; the relevant ones are the
  new products they bought. HR@10 (at least one in the top 10), NDCG@10 (binary gains),
  Recall@10, mean AUC over buyers.
* Validation (selection only): the same one month earlier (cutoff minus 30 days; products
  first sold between the two cutoffs are the new ones; training = purchases before it). Our
  epoch count is chosen on it, then ours is refit on the test training log.
* Rows: random; nearest-products popularity (a new product scores the mean log sales of its
  10 most similar old products by description vector: popularity by content, since the data
  has no category); description kNN (mean description vector of the buyer's history,
  cosine); ours: the ``content`` recipe (:mod:`shoprec.recipes.content`: description
  vector, description words and price) through the front door, from
  ``benchmarks/configs/retail_new_items.yaml``. It is handed the validation stage as a
  :class:`shoprec.data.split.Split` (train = purchases before the validation cutoff, valid =
  the month after it; ``valid_pool: cold`` ranks the month's new products), picks its
  epoch there, refits on every purchase before the test cutoff, and its scorer's
  ``rank_scores`` (what is served) ranks the new products here.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
import yaml

from benchmarks._results import stamp, write_section
from shoprec.data.datasets import online_retail
from shoprec.transfer.text import encode_titles

if TYPE_CHECKING:
    from shoprec.config import ExperimentConfig
    from shoprec.data.schema import Dataset

log = logging.getLogger("benchmarks.retail_new_items")

#: "ours": the content recipe's experiment config (the front door's schema).
CONFIG = Path(__file__).resolve().parent / "configs" / "retail_new_items.yaml"
WINDOW = timedelta(days=30)
K = 10
SEED = 0
OURS = "ours: ID + content tower"


@dataclass
class Stage:
    """Training purchases (index arrays, grouped by user in time order) and test buyers."""

    train_user: np.ndarray
    train_item: np.ndarray
    new_items: np.ndarray  # (N,) item indices of the new products
    users: np.ndarray  # (U,) buyers to rank for
    relevant: list[np.ndarray]  # per buyer, the new products they bought
    warm: np.ndarray  # (I,) bool


def load() -> tuple[pl.DataFrame, list[str], int, Dataset]:
    """Purchases with user/item indices, titles, number of users, the dataset."""
    ds = online_retail.load()
    cat = ds.catalog.df
    titles = cat["title"].fill_null("").to_list()
    items = pl.DataFrame({"item": cat["item"], "i": np.arange(len(cat))})
    buys = ds.interactions.df.filter(pl.col("behavior") == "buy").join(items, on="item")
    users = buys["user"].unique().sort()
    buys = buys.join(pl.DataFrame({"user": users, "u": np.arange(len(users))}), on="user")
    return buys.sort(["u", "timestamp"]), titles, len(users), ds


def make_stage(buys: pl.DataFrame, cutoff: Any, end: Any, n_items: int) -> Stage:
    """Train before ``cutoff``; new products first sold in ``[cutoff, end)``."""
    first = buys.group_by("i").agg(pl.col("timestamp").min().alias("first"))
    new = first.filter((pl.col("first") >= cutoff) & (pl.col("first") < end))["i"].to_numpy()
    train = buys.filter(pl.col("timestamp") < cutoff)
    after = buys.filter(
        (pl.col("timestamp") >= cutoff)
        & (pl.col("timestamp") < end)
        & pl.col("i").is_in(pl.Series(new).implode())
        & pl.col("u").is_in(train["u"].unique().implode())
    )
    per_user = after.group_by("u").agg(pl.col("i").unique()).sort("u")
    warm = np.zeros(n_items, bool)
    warm[train["i"].to_numpy()] = True
    return Stage(
        np.array(train["u"].to_numpy(), dtype=np.int64),  # writable copies for torch
        np.array(train["i"].to_numpy(), dtype=np.int64),
        np.sort(new),
        np.array(per_user["u"].to_numpy(), dtype=np.int64),
        [np.asarray(x) for x in per_user["i"].to_list()],
        warm,
    )


def evaluate(scores: np.ndarray, stage: Stage) -> dict[str, float]:
    """Ranking metrics over the new products: ``scores`` is ``(U, N)``, columns =
    ``stage.new_items``."""
    col = {it: k for k, it in enumerate(stage.new_items.tolist())}
    order = np.argsort(-scores, axis=1, kind="stable")
    hr, ndcg, rec, aucs = [], [], [], []
    disc = 1.0 / np.log2(np.arange(2, K + 2))
    for r, rel in enumerate(stage.relevant):
        cols = np.array([col[i] for i in rel.tolist()])
        is_rel = np.zeros(scores.shape[1], bool)
        is_rel[cols] = True
        top = is_rel[order[r, :K]]
        hr.append(float(top.any()))
        ideal = disc[: min(len(cols), K)].sum()
        ndcg.append(float((top * disc).sum() / ideal))
        rec.append(top.sum() / len(cols))
        s = scores[r]
        neg = s[~is_rel]
        if len(neg):
            pos = s[is_rel]
            aucs.append(float((pos[:, None] > neg[None, :]).mean()))
    return {
        "hr@10": float(np.mean(hr)),
        "ndcg@10": float(np.mean(ndcg)),
        "recall@10": float(np.mean(rec)),
        "auc": float(np.mean(aucs)),
    }


def knn_scores(stage: Stage, n_users: int, text: np.ndarray) -> np.ndarray:
    prof = np.zeros((n_users, text.shape[1]))
    np.add.at(prof, stage.train_user, text[stage.train_item])
    prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-12)
    return prof[stage.users] @ text[stage.new_items].T


def neighbour_popularity(stage: Stage, text: np.ndarray, k: int = 10) -> np.ndarray:
    sales = np.bincount(stage.train_item, minlength=len(text)).astype(np.float64)
    old = np.flatnonzero(stage.warm)
    sim = text[stage.new_items] @ text[old].T  # (N, O)
    top = np.argpartition(-sim, k, axis=1)[:, :k]
    pop = np.log1p(sales[old][top]).mean(axis=1)  # (N,)
    return np.broadcast_to(pop, (len(stage.users), len(pop))).copy()


def ours_config(path: Path = CONFIG, quick: bool = False) -> ExperimentConfig:
    """The experiment config of ours (``--quick``: two epochs)."""
    from shoprec.config import ExperimentConfig

    raw = yaml.safe_load(path.read_text())
    if quick:
        raw.setdefault("train", {})["epochs"] = 2
    return ExperimentConfig.from_dict(raw, base=path.parent.resolve(), source=path)


def front_door_split(buys: pl.DataFrame, cutoff: Any, end: Any) -> Any:
    """The validation stage as the recipe's split: train before ``cutoff - WINDOW``, valid
    the month up to ``cutoff``, test from ``cutoff`` to ``end`` (never read by the recipe)."""
    from shoprec.data.schema import Interactions
    from shoprec.data.split import Split

    cols = ["user", "item", "timestamp", "behavior", "quantity", "price", "domain"]
    events = buys.select([c for c in cols if c in buys.columns])
    ts = pl.col("timestamp")
    start = cutoff - WINDOW
    return Split(
        train=Interactions(events.filter(ts < start)),
        valid=Interactions(events.filter((ts >= start) & (ts < cutoff))),
        test=Interactions(events.filter((ts >= cutoff) & (ts < end))),
        kind="time",
    )


def run(quick: bool = False, config_path: Path = CONFIG) -> dict[str, Any]:
    torch.set_num_threads(1)
    started = time.perf_counter()
    from shoprec.recipes import get as get_recipe

    config = ours_config(config_path, quick)
    buys, titles, n_users, ds = load()
    text = encode_titles(titles)
    end = buys["timestamp"].max() + timedelta(seconds=1)
    cutoff = end - WINDOW
    test = make_stage(buys, cutoff, end, len(titles))
    valid = make_stage(buys, cutoff - WINDOW, cutoff, len(titles))
    log.info(
        "test: %d new products, %d buyers; valid: %d new products, %d buyers",
        len(test.new_items),
        len(test.users),
        len(valid.new_items),
        len(valid.users),
    )
    rows: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(SEED)
    rows["random"] = {"metrics": evaluate(rng.random((len(test.users), len(test.new_items))), test)}
    rows["nearest-products popularity"] = {
        "metrics": evaluate(neighbour_popularity(test, text), test)
    }
    rows["description kNN (MiniLM)"] = {"metrics": evaluate(knn_scores(test, n_users, text), test)}
    tick = time.perf_counter()
    recipe = get_recipe(config.recipe.name)(config)
    fitted = recipe.fit(ds, front_door_split(buys, cutoff, end))
    log.info("ours: valid %s at epoch %s; %s", fitted.valid, fitted.best_epoch, fitted.info)
    user_ids = buys.unique("u").sort("u")["user"].to_list()
    item_ids = ds.catalog.df["item"]
    scores = fitted.scorer.rank_scores(
        [user_ids[u] for u in test.users.tolist()],
        fitted.scorer.positions_of(item_ids.gather(pl.Series(test.new_items))),
    )
    rows[OURS] = {
        "metrics": evaluate(scores, test),
        "chosen": {"epochs": fitted.best_epoch},
        "valid": fitted.valid,
        "fit_s": time.perf_counter() - tick,
    }
    for name, row in rows.items():
        log.info("%s: %s", name, row["metrics"])
    return {
        "rows": rows,
        "n": {
            "new": len(test.new_items),
            "buyers": len(test.users),
            "train": len(test.train_user),
            "valid_new": len(valid.new_items),
            "valid_buyers": len(valid.users),
            "cutoff": str(cutoff),
        },
        "wall_s": time.perf_counter() - started,
    }


def _markdown(out: dict[str, Any]) -> str:
    n = out["n"]
    lines = [
        "## New products from their descriptions (Online Retail, last month)",
        "",
        stamp(".venv/bin/python -m benchmarks.retail_new_items"),
        f"- wall time {out['wall_s'] / 60:.1f} min",
        f"- test: {n['new']} products first sold on or after {n['cutoff']}, ranked for "
        f"{n['buyers']:,} returning buyers who bought at least one of them; training = "
        f"{n['train']:,} purchases before the cutoff. Validation (selection only): "
        f"{n['valid_new']} products new in the month before, {n['valid_buyers']:,} buyers.",
        "",
        "| row | HR@10 | NDCG@10 | Recall@10 | AUC | chosen on validation |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in out["rows"].items():
        m = row["metrics"]
        lines.append(
            f"| {name} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | "
            f"{m['auc']:.4f} | {row.get('chosen', '-')} |"
        )
    ours = out["rows"][OURS]["metrics"]
    losses = [
        f"{name} beats ours on {key}: {v:.4f} vs {ours[key]:.4f}"
        for name, row in out["rows"].items()
        if name != OURS
        for key, v in row["metrics"].items()
        if v > ours[key]
    ]
    lines += ["", "Where ours loses:", ""] + ([f"- {x}" for x in losses] or ["- nowhere here"])
    lines += ["", "No target was set for this section."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, print only")
    parser.add_argument("--config", type=Path, default=CONFIG, help="ours: experiment YAML")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the section here instead of RESULTS.md"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = run(quick=args.quick, config_path=args.config)
    text = _markdown(out)
    if args.out is not None:
        args.out.write_text(text + "\n")
        log.info("wrote %s", args.out)
    elif args.quick:
        print(text)
    else:
        log.info("wrote %s", write_section("retail_new_items", text))


if __name__ == "__main__":
    main()
