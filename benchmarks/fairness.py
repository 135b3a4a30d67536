"""Exposure fairness on Online Retail: what the lists expose, and what a floor per group costs.

Ours is the artifact ``shoprec train benchmarks/configs/online_retail.yaml`` writes (trained
here through the front door when its folder is missing). On the same test users and split:

* **offline ranking** (the scorer ranks the whole catalog, ``shoprec evaluate``) and
  **popularity** / **repeat purchase** (the user's own past buys first, by count, then
  popularity), full ranking with the artifact's exclusions;
* **served list** (``GET /recommend``: retrieval, ranking, fusion, MMR, slots) with the
  exposure knob off and at two settings of ``serve.group_floor`` (a minimum share of the top
  k per exposure group; ``serve.floor_groups: popularity`` makes two groups, the head = the
  20% most sold items, and the long tail).

Each row: HR@10 / NDCG@10 of the target behavior (accuracy), catalog coverage@10, the Gini
index of exposure over all items, and the share of the top-10 slots that goes to the long
tail (the 80% least sold items: deciles 1-8 of
:func:`shoprec.evaluate.fairness.popularity_deciles`).

Usage::

    python -m benchmarks.fairness [--config benchmarks/configs/online_retail.yaml] \\
        [--max-users 1000] [--floors 0.2 0.4] [--groups popularity] [--out FILE] \\
        [--report fairness.html] [--quick]

Writes section ``fairness`` of benchmarks/RESULTS.md when run on its own config (the default,
not ``--quick``); otherwise pass ``--out``.
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

from benchmarks._results import (
    add_report_flag,
    load_note,
    stamp,
    write_html_report,
    write_section,
)
from benchmarks.served_path import repeat_counts
from shoprec.artifact import Artifact, is_artifact
from shoprec.config import load_config
from shoprec.evaluate import fairness, protocols
from shoprec.experiment import (
    evaluate_scorer,
    evaluate_served,
    exclusions,
    item_groups,
    item_popularity,
    known_before,
    load_dataset,
    make_split,
    ranking_spec,
    train_experiment,
)

log = logging.getLogger("benchmarks.fairness")

HERE = Path(__file__).parent
CONFIG = HERE / "configs" / "online_retail.yaml"
K = 10


def tail_share(exposure: dict[str, Any]) -> float:
    """Share of the top-k slots that goes to the 80% least popular items (deciles 1-8)."""
    return float(np.nansum(exposure["by_popularity_decile"]["exposure"][:8]))


def row_of(metrics: dict[str, Any], exposure: dict[str, Any]) -> dict[str, float]:
    """The table's numbers of one ranking."""
    return {
        "hr@10": float(metrics["hr@10"]),
        "ndcg@10": float(metrics["ndcg@10"]),
        "coverage@10": float(exposure["metrics"]["coverage@10"]),
        "gini@10": float(exposure["metrics"]["gini@10"]),
        "tail share@10": tail_share(exposure),
    }


def peers(
    art: Artifact, split: Any, users: list[str], groups: Any
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Popularity and repeat purchase on ``users``: full ranking and top-10 exposure."""
    target = art.target
    spec = ranking_spec(
        split.test, known_before(split), art.scorer.items, target, exclusions(art.config)
    )
    index = {u: i for i, u in enumerate(spec.users)}
    sub = spec.take(np.array([index[u] for u in users], dtype=np.int64))
    bought = known_before(split).df.filter(pl.col("behavior") == target)
    pop = item_popularity(known_before(split).of(target), art.scorer.items)
    repeat = repeat_counts(bought, users, art.scorer.items)
    tie = pop / (pop.max() + 1.0)  # below one purchase

    def popularity(r: np.ndarray, pos: np.ndarray | None = None) -> np.ndarray:
        return np.tile(pop if pos is None else pop[pos], (len(r), 1))

    def repeats(r: np.ndarray, pos: np.ndarray | None = None) -> np.ndarray:
        s = repeat[r] + tie[None, :]
        return s if pos is None else s[:, pos]

    events = item_popularity(known_before(split), art.scorer.items)
    codes, names, column = groups if groups is not None else (None, None, None)
    out = {}
    for name, fn in (("popularity", popularity), ("repeat purchase", repeats)):
        res = protocols.full_ranking(
            fn, len(users), len(pop), sub.relevant, sub.exclude, ks=(K,), top_k=K
        )
        exp = fairness.exposure_summary(res.top_items, events, (K,), codes, names, column)
        out[name] = (res.metrics, exp)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(args.config)
    if args.quick:
        cfg = cfg.with_values({"train.epochs": 1, "recipe.n_train_windows": 2})
    path = Path(args.artifact) if args.artifact else cfg.output_dir
    train_s = None
    if not is_artifact(path):
        log.info("no artifact at %s: training it through the front door", path)
        tick = time.perf_counter()
        train_experiment(cfg, path)
        train_s = time.perf_counter() - tick
    art = Artifact.load(path)
    ds = load_dataset(art.config.data)
    split = make_split(ds, art.config.split, art.target)
    ev_cfg = art.config.evaluate.model_copy(
        update={"max_users": args.max_users, "bootstrap": 0, "slices": False, "ks": (K,)}
    )
    groups = item_groups(art.items, art.scorer.items, None)
    tick = time.perf_counter()
    offline = evaluate_scorer(
        art.scorer, split, ev_cfg, exclude=exclusions(art.config), item_table=art.items
    )
    offline_s = time.perf_counter() - tick
    spec = ranking_spec(
        split.test, known_before(split), art.scorer.items, art.target, exclusions(art.config)
    )
    users = spec.take(spec.sample_rows(args.max_users, ev_cfg.seed)).users
    rows: dict[str, dict[str, float]] = {
        "offline ranking (scorer, whole catalog)": row_of(offline.metrics, offline.exposure)
    }
    exposures = {"offline ranking": offline.exposure}
    served_s: dict[str, float] = {}
    for floor in [0.0, *args.floors]:
        rc = art.config.serve.recommender_config(group_floor=floor, floor_groups=args.groups)
        served = evaluate_served(art, split, ev_cfg, users=users, recommender=art.recommender(rc))
        label = (
            "served list, floor off"
            if floor == 0
            else f"served list, floor {floor:g} per {args.groups} group"
        )
        rows[label] = row_of(served, served["exposure"])
        exposures[label] = served["exposure"]
        served_s[label] = served["seconds"] / max(served["users"], 1)
        log.info("%s: %s", label, rows[label])
    for name, (metrics, exp) in peers(art, split, users, groups).items():
        rows[name] = row_of(metrics, exp)
        exposures[name] = exp
    return {
        "name": art.config.name,
        "artifact": _rel(Path(path)),
        "recipe": art.recipe,
        "target": art.target,
        "users": len(users),
        "offline_users": offline.metrics.get("users"),
        "n_items": len(art.scorer.items),
        "groups": args.groups,
        "floors": list(args.floors),
        "rows": rows,
        "exposures": exposures,
        "served_ms": {k: 1000 * v for k, v in served_s.items()},
        "offline_s": offline_s,
        "train_s": train_s,
        "load": os.getloadavg()[0],
        "quick": args.quick,
        "fusion": art.recommender().fusion.formula(),
        "config": args.config.resolve(),
        "config_name": _rel(args.config),
    }


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(HERE.parent.resolve()))
    except ValueError:
        return str(path)


def markdown(r: dict[str, Any]) -> str:
    rows = r["rows"]
    off_label = "served list, floor off"
    lines = [
        "## Exposure fairness: coverage, concentration, and a floor per group "
        f"({'Online Retail' if r['config'] == CONFIG.resolve() else r['name']})",
        "",
        stamp(),
        f"- {load_note(int(torch.get_num_threads()), r['load'])}",
        f"- artifact: `{r['artifact']}` ({r['recipe']} recipe, target {r['target']}, served "
        f"fusion `{r['fusion']}`), trained by `shoprec train {r['config_name']}`"
        + (f" in this run ({r['train_s']:.0f} s)" if r["train_s"] else " before this run"),
        "",
        f"The same {r['users']:,} test buyers (a seeded sample; the offline ranking row is over "
        f"the same sample) and split, {r['n_items']:,} items. Accuracy: HR@10 / NDCG@10 of "
        f"the test part's '{r['target']}' events. Exposure of the top-10 lists: catalog "
        "coverage@10 (share of items in at least one list), the Gini index of how often each "
        "item is listed (0 = even, 1 = one item everywhere), and the long tail's share of the "
        "slots (the 80% least sold items). The knob: `serve: {group_floor: F, floor_groups: "
        f"{r['groups']}}}` gives every group at least ceil(F x 10) places of a served list "
        "(with `popularity`: the head, the 20% most sold items, and the tail); the floor's "
        "items replace the lowest-placed items of groups above their floor and take the last "
        "places.",
        "",
        "| ranking | HR@10 | NDCG@10 | coverage@10 | Gini@10 | tail share@10 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | {m['coverage@10']:.4f} | "
            f"{m['gini@10']:.4f} | {m['tail share@10']:.4f} |"
        )
    base = rows[off_label]
    notes = []
    for name, m in rows.items():
        if not name.startswith("served list, floor ") or name == off_label:
            continue
        notes.append(
            f"- {name}: HR@10 {m['hr@10'] - base['hr@10']:+.4f} "
            f"({(m['hr@10'] / base['hr@10'] - 1) if base['hr@10'] else float('nan'):+.1%}), "
            f"NDCG@10 {m['ndcg@10'] - base['ndcg@10']:+.4f}, coverage@10 "
            f"{m['coverage@10'] - base['coverage@10']:+.4f}, Gini@10 "
            f"{m['gini@10'] - base['gini@10']:+.4f}, tail share {base['tail share@10']:.3f} -> "
            f"{m['tail share@10']:.3f} against the served list with the floor off "
            f"({r['served_ms'][name]:.1f} ms per list)."
        )
    pop, rep = rows["popularity"], rows["repeat purchase"]
    lines += [
        "",
        "What the knob costs (same users, same artifact):",
        *notes,
        "",
        f"Beside the peers: popularity lists reach coverage@10 {pop['coverage@10']:.4f} "
        f"(Gini {pop['gini@10']:.4f}), repeat purchase {rep['coverage@10']:.4f} "
        f"(Gini {rep['gini@10']:.4f}); ours {base['coverage@10']:.4f} (Gini "
        f"{base['gini@10']:.4f}) served with the floor off.",
    ]
    losses = [
        f"{peer} {m[key]:.4f} vs ours {base[key]:.4f} ({label})"
        for peer, m in (("popularity", pop), ("repeat purchase", rep))
        for key, label, worse in (
            ("hr@10", "HR@10", m["hr@10"] > base["hr@10"]),
            ("coverage@10", "coverage@10", m["coverage@10"] > base["coverage@10"]),
            ("gini@10", "Gini@10, lower is more even", m["gini@10"] < base["gini@10"]),
        )
        if worse
    ]
    if losses:
        lines.append(
            "**Where ours (served, floor off) loses to a peer:** " + "; ".join(losses) + "."
        )
    if r["quick"]:
        lines.insert(0, "**--quick smoke run: not a result.**")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--artifact", help="the artifact folder (default: the config's output)")
    parser.add_argument("--max-users", type=int, default=1000)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--groups", default="popularity", help="serve.floor_groups")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 2 windows (smoke run)")
    parser.add_argument("--out", type=Path, help="write the section here, not in RESULTS.md")
    add_report_flag(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    result = run(args)
    text = markdown(result)
    print(text)
    if args.report is not None:
        write_html_report(
            args.report,
            f"Exposure fairness: {result['name']}" + (" (--quick)" if args.quick else ""),
            result["rows"],
            [n for n in result["rows"] if not n.startswith(("popularity", "repeat"))],
            subtitle=f"{result['users']:,} test buyers, artifact {result['artifact']}",
            notes=[
                line.removeprefix("- ")
                for line in text.splitlines()
                if line.startswith(("- served list, floor", "Beside the peers"))
            ],
            exposure=result["exposures"],
        )
        log.info("wrote the report to %s", args.report)
    if args.out is not None:
        args.out.write_text(text + "\n")
    elif args.quick or args.config.resolve() != CONFIG.resolve():
        log.info("not the benchmark's own run: RESULTS.md not written (use --out)")
    else:
        write_section("fairness", text)
        log.info("wrote the fairness section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
