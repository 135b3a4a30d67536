"""`make bench`: run every benchmark in turn; each writes its own section of RESULTS.md.

Usage: ``python -m benchmarks.run_all [--quick] [--only census tmall ...]``. Installs nothing:
``make bench`` installs the peers from requirements-bench.txt first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

#: In the order they run; the serving benchmark last, so nothing else competes for the cores.
BENCHMARKS = [
    "census",  # multi-task models vs torch-rechub and DeepCTR-Torch (~35 min)
    "tmall",  # multi-behavior buy ranking vs popularity and implicit ALS (~5 min)
    "online_retail",  # buy ranking, return, quantity (~20 min)
    "multitask",  # MT vs ST vs leave-one-task-out x 3 seeds, 3 shops (~90 min)
    "new_items",  # Amazon Games cold items from titles vs LightFM, ALS + ridge, kNN (~25 min)
    "retail_new_items",  # Online Retail products first sold in the last month (~15 min)
    "amazon_cdr",  # Amazon Sport <-> Cloth cross-domain transfer vs ALS (~30 min)
    "amazon_cdr_neural",  # its neural base and neural cross-domain vs EASE, item-kNN (~60 min)
    "amazon_cdr_neural_extras",  # the joint model's lambda on validation, fine-tune (~30 min)
    "retail_transfer",  # Online Retail: the UK as source market for the others
    "served_path",  # what GET /recommend returns vs the offline ranking (Online Retail, Tmall)
    "serve_latency",  # HTTP /recommend latency and throughput
]
#: Entries run as another script with arguments (the rest: ``python -m benchmarks.<name>``).
COMMANDS = {
    "amazon_cdr_neural": ["amazon_cdr", "--part", "neural"],
    "amazon_cdr_neural_extras": ["amazon_cdr", "--part", "neural", "--extras"],
}
#: Benchmarks that have a --quick smoke mode; in quick mode the others are skipped.
QUICK = {"census", "tmall", "online_retail", "new_items", "retail_new_items", "amazon_cdr",
         "amazon_cdr_neural", "served_path", "serve_latency", "multitask"}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke-sized runs")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=BENCHMARKS)
    args = parser.parse_args()
    failed = []
    for name in args.only:
        if args.quick and name not in QUICK:
            print(f"== {name}: no quick mode, skipped", flush=True)
            continue
        module, *extra = COMMANDS.get(name, [name])
        cmd = [sys.executable, "-m", f"benchmarks.{module}", *extra]
        cmd += ["--quick"] if args.quick else []
        print(f"== {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd)
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
