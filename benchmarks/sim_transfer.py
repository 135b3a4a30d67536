"""Simulator transfer: does a big market help a small one, and does the gain follow the planted
taste overlap? (issue 13 item 4; the ``make demo`` transfer step at several overlaps).

For each ``taste_overlap`` and seed, :func:`shoprec.demo.compare_transfer` simulates a two-market
shop (market_0: 85% of the shoppers; item popularity unrelated between markets), trains target
only, fine-tune and joint (lambda 0.3 / 1 / 3; the best on validation is "transfer") and item
neighbours (market_1 only, and both markets), and ranks market_1's items for each test
shopper's held-out last click (full ranking, HR@10 / NDCG@10), read once after selection.

Run: .venv/bin/python benchmarks/sim_transfer.py [--overlaps 0,0.5,0.9] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from shoprec.demo import compare_transfer

ROWS = ("popularity", "target_only", "transfer", "neighbours_target", "neighbours")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overlaps", default="0,0.5,0.9")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    overlaps = [float(x) for x in args.overlaps.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    start = time.perf_counter()
    raw: dict[str, list[dict]] = {}
    for ov in overlaps:
        for seed in seeds:
            rows = compare_transfer(ov, events=args.events, seed=seed, epochs=args.epochs)
            raw.setdefault(f"{ov:g}", []).append(rows)
            print(json.dumps({"overlap": ov, "seed": seed, "rows": rows}), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s on {platform.node()}")
    print("| overlap | method | HR@10 | NDCG@10 | NDCG@10 vs target only | chosen |")
    print("|---|---|---|---|---|---|")
    for ov, runs in raw.items():
        base = np.array([r["target_only"]["ndcg@10"] for r in runs])
        for name in ROWS:
            hr = np.array([r[name]["hr@10"] for r in runs])
            nd = np.array([r[name]["ndcg@10"] for r in runs])
            gain = nd / base - 1.0
            chosen = ", ".join(str(r[name]["setting"]) for r in runs)
            print(
                f"| {ov} | {name} | {hr.mean():.4f} ± {hr.std():.4f} | {nd.mean():.4f} ± "
                f"{nd.std():.4f} | {gain.mean():+.1%} ({', '.join(f'{g:+.1%}' for g in gain)}) "
                f"| {chosen} |"
            )


if __name__ == "__main__":
    main()
