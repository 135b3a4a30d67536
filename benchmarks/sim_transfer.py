"""Simulator transfer: does a big market help a small one, and does the gain follow the planted
taste overlap? (issue 13 item 4; the ``make demo`` transfer step at several overlaps).

For each ``taste_overlap`` and seed, :func:`shoprec.demo.compare_transfer` simulates a two-market
shop (market_0: 85% of the shoppers; item popularity unrelated between markets), trains target
only, fine-tune and joint (lambda 0.3 / 1 / 3; the best on validation is "transfer") and item
neighbours (market_1 only, and both markets), and ranks market_1's items for each test
shopper's held-out last click (full ranking, HR@10 / NDCG@10), read once after selection; the
"sparse" slice is the test shoppers with at most ``shoprec.demo.SPARSE`` market_1 training
events.

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
    print("| overlap | method | HR@10 | NDCG@10 | NDCG@10 vs target only | sparse NDCG@10 | sparse "
          "vs target only | chosen |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for ov, runs in raw.items():
        base = np.array([r["target_only"]["ndcg@10"] for r in runs])
        base_s = np.array([r["target_only"]["sparse_ndcg@10"] for r in runs])
        for name in ROWS:
            hr = np.array([r[name]["hr@10"] for r in runs])
            nd = np.array([r[name]["ndcg@10"] for r in runs])
            sp = np.array([r[name]["sparse_ndcg@10"] for r in runs])
            gain, gain_s = nd / base - 1.0, sp / base_s - 1.0
            chosen = ", ".join(str(r[name]["setting"]) for r in runs)
            print(
                f"| {ov} | {name} | {hr.mean():.4f} ± {hr.std(ddof=1):.4f} | {nd.mean():.4f} ± "
                f"{nd.std(ddof=1):.4f} | {gain.mean():+.1%} "
                f"({' '.join(f'{g:+.1%}' for g in gain)}) | {sp.mean():.4f} | "
                f"{gain_s.mean():+.1%} ({' '.join(f'{g:+.1%}' for g in gain_s)}) | {chosen} |"
            )
        users = [int(r["target_only"]["users"]) for r in runs]
        sparse = [int(r["target_only"]["sparse_users"]) for r in runs]
        print(f"overlap {ov}: test shoppers {users}, of them sparse {sparse}")


if __name__ == "__main__":
    main()
