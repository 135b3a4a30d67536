"""`make bench`: run every benchmark in turn; each writes its own section of RESULTS.md.

Usage: ``python -m benchmarks.run_all [--quick] [--only census tmall ...]``. Installs nothing:
``make bench`` installs the peers from requirements-bench.txt first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = ["census", "tmall", "online_retail"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke-sized runs")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=BENCHMARKS)
    args = parser.parse_args()
    failed = []
    for name in args.only:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if args.quick else [])]
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
