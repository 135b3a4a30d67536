"""What the service returns, measured: the served list beside the offline ranking.

For each benchmark config (ours, trained through the front door), the same test users are
scored four ways, by HR@10 / NDCG@10 of the target behavior:

* **offline ranking**: the recipe's scorer ranks the whole catalog (what the benchmark
  tables report);
* **served list**: what ``GET /recommend/{user}?k=10`` returns (``Artifact.recommender()``:
  retrieval, ranking, fusion, filters, MMR diversity, the new-item slot), with the config's
  serve settings;
* **served, no re-ranking**: the same with ``diversity: 0`` and ``new_item_slots: 0``, so the
  gap splits into what retrieval / fusion cost and what the re-ranking costs;
* **popularity** and **repeat purchase** (the user's own past target items first, by count,
  then popularity) on the same users and split.

Usage::

    python -m benchmarks.served_path [--quick] [--max-users 2000] \\
        [--configs benchmarks/configs/online_retail.yaml benchmarks/configs/tmall.yaml] \\
        [--reuse] [--output RESULTS.md]

Writes section ``served_path`` of benchmarks/RESULTS.md when run on its own configs (the
default); with other configs, pass ``--output`` (a markdown file) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks._results import load_note, stamp, write_section
from shoprec.artifact import Artifact, is_artifact
from shoprec.config import load_config
from shoprec.evaluate import protocols
from shoprec.experiment import (
    evaluate_scorer,
    evaluate_served,
    exclusions,
    known_before,
    load_dataset,
    make_split,
    ranking_spec,
    train_experiment,
)

HERE = Path(__file__).parent
DEFAULT = [HERE / "configs" / "online_retail.yaml", HERE / "configs" / "tmall.yaml"]


def repeat_counts(bought: pl.DataFrame, users: list[str], items: list[str]) -> np.ndarray:
    """``(U, I)`` how often each of ``users`` bought each of ``items`` (rows of ``bought``:
    ``user, item``): the repeat-purchase baseline's scores."""
    cols = pl.DataFrame({"item": items, "col": np.arange(len(items))})
    past = (
        bought.group_by("user", "item")
        .len()
        .join(pl.DataFrame({"user": users, "row": np.arange(len(users))}), on="user")
        .join(cols, on="item")
    )
    repeat = np.zeros((len(users), len(items)))
    repeat[past["row"].to_numpy(), past["col"].to_numpy()] = past["len"].to_numpy()
    return repeat


def baselines(art: Artifact, split: Any, users: list[str], ks: tuple[int, ...]) -> dict:
    """Popularity and repeat purchase on ``users``, full ranking, the artifact's exclusions."""
    target = art.target
    spec = ranking_spec(
        split.test, known_before(split), art.scorer.items, target, exclusions(art.config)
    )
    index = {u: i for i, u in enumerate(spec.users)}
    rows = np.array([index[u] for u in users], dtype=np.int64)
    items = pl.DataFrame({"item": art.scorer.items, "col": np.arange(len(art.scorer.items))})
    train = known_before(split).df.filter(pl.col("behavior") == target)
    pop = (
        items.join(train.group_by("item").len(), on="item", how="left")["len"]
        .fill_null(0)
        .to_numpy()
        .astype(np.float64)
    )
    repeat = repeat_counts(train, users, art.scorer.items)

    sub = spec.take(rows)
    relevant, exclude = sub.relevant, sub.exclude
    tie = pop / (pop.max() + 1.0)  # below one purchase

    def popularity(r: np.ndarray, pos: np.ndarray | None = None) -> np.ndarray:
        return np.tile(pop if pos is None else pop[pos], (len(r), 1))

    def repeats(r: np.ndarray, pos: np.ndarray | None = None) -> np.ndarray:
        s = repeat[r] + tie[None, :]
        return s if pos is None else s[:, pos]

    out = {}
    for name, fn in (("popularity", popularity), ("repeat purchase", repeats)):
        res = protocols.full_ranking(fn, len(users), len(pop), relevant, exclude, ks=ks)
        out[name] = res.metrics
    return out


def run_one(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(path)
    if args.quick:
        cfg = cfg.with_values({"train.epochs": 1})
    out = Path(args.work) / cfg.name
    start = time.perf_counter()
    if not (args.reuse and is_artifact(out)):
        train_experiment(cfg, out)
    train_s = time.perf_counter() - start
    art = Artifact.load(out)
    ds = load_dataset(art.config.data)
    split = make_split(ds, art.config.split, art.target)
    ev_cfg = art.config.evaluate.model_copy(
        update={"max_users": args.max_users, "bootstrap": 0, "slices": False}
    )
    offline = evaluate_scorer(art.scorer, split, ev_cfg, exclude=exclusions(art.config))
    spec = ranking_spec(
        split.test, known_before(split), art.scorer.items, art.target, exclusions(art.config)
    )
    users = spec.take(spec.sample_rows(args.max_users, ev_cfg.seed)).users
    served = evaluate_served(art, split, ev_cfg, users=users)
    plain_cfg = art.config.serve.recommender_config(diversity=0.0, new_item_slots=0)
    plain = evaluate_served(art, split, ev_cfg, users=users, recommender=art.recommender(plain_cfg))
    base = baselines(art, split, users, tuple(ev_cfg.ks))
    return {
        "name": cfg.name,
        "recipe": art.recipe,
        "target": art.target,
        "users": len(users),
        "fusion": art.recommender().fusion.formula(),
        "rows": {
            "offline ranking (scorer, whole catalog)": offline.metrics,
            "served list (GET /recommend)": served,
            "served, no MMR / new-item slot": plain,
            **base,
        },
        "train_seconds": train_s,
        "served_seconds": served["seconds"],
    }


def markdown(results: list[dict[str, Any]], load: float) -> str:
    lines = [
        "## Served path: what GET /recommend returns, beside the offline ranking",
        "",
        stamp(),
        f"- {load_note(1, load)}",
        "",
        "The same test users, the same split, the same trained artifact (ours, trained by "
        "`shoprec train` on the config named). HR / NDCG of the target behavior at 10.",
        "",
    ]
    for r in results:
        lines += [
            f"### {r['name']} ({r['recipe']} recipe, target {r['target']}, {r['users']:,} users)",
            "",
            f"Served fusion: `{r['fusion']}`; {r['served_seconds'] / max(r['users'], 1) * 1000:.1f}"
            " ms per served list (the default lists, one request each, timed in-process).",
            "",
            "| ranking | HR@10 | NDCG@10 |",
            "|---|---:|---:|",
        ]
        for name, m in r["rows"].items():
            lines.append(f"| {name} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} |")
        rows = r["rows"]
        off = rows["offline ranking (scorer, whole catalog)"]["hr@10"]
        srv = rows["served list (GET /recommend)"]["hr@10"]
        plain = rows["served, no MMR / new-item slot"]["hr@10"]
        lines += [
            "",
            f"Served minus offline: {srv - off:+.4f} HR@10, of which re-ranking (MMR, new-item "
            f"slot) {srv - plain:+.4f} and candidate retrieval / fusion {plain - off:+.4f}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", nargs="*", type=Path, default=DEFAULT)
    p.add_argument("--max-users", type=int, default=2000)
    p.add_argument("--quick", action="store_true", help="1 epoch, 300 users; no RESULTS.md")
    p.add_argument("--reuse", action="store_true", help="reuse artifacts already trained")
    p.add_argument("--work", default="runs/served_path", help="where artifacts are written")
    p.add_argument("--output", type=Path, default=None, help="markdown file instead")
    args = p.parse_args()
    if args.quick:
        args.max_users = min(args.max_users, 300)
    import torch

    torch.set_num_threads(1)
    results = [run_one(c, args) for c in args.configs]
    text = markdown(results, os.getloadavg()[0])
    own = {c.resolve() for c in DEFAULT} == {c.resolve() for c in args.configs}
    print(text)
    print(json.dumps([{k: v for k, v in r.items() if k != "rows"} for r in results]))
    if args.output is not None:
        args.output.write_text(text + "\n")
    elif own and not args.quick:
        write_section("served_path", text)
    else:
        print("not written to RESULTS.md (quick run or other configs: use --output)")


if __name__ == "__main__":
    main()
