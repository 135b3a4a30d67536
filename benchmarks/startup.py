"""Start-up of a Recommender on a large catalog, before and after the saved new-item index.

Usage: ``python -m benchmarks.startup [--items 300000] [--before-src PATH] [--repeats 2]
[--rebuild] [--write]``

Protocol:

* One artifact, made here once (reused from ``runs/startup/`` afterwards): the ``pairs``
  recipe (the MMoE of ``benchmarks/serve_latency.py``, one epoch, no test evaluation) on a
  simulated shop with ``--items`` items and few events, so most items have none (new items,
  as in a shop's long tail); its retrieval files come from
  :func:`~shoprec.recommend.build_retrieval` (two-tower, one epoch), which now also saves
  the new-item index.
* Start-up = ``Recommender.from_artifact(path, build=False)`` in a fresh process with one
  torch thread (load the artifact and the retrieval files, embed the items, the candidate
  sources, the known shoppers' query vectors), wall clock, and that process's peak RSS.
  Rows: *before*: the code of ``--before-src`` (a checkout of the commit before the saved
  index: the new-item index is built at every start); *after*: this code (the index is read
  from the artifact); *after, first start without a saved index* (a copy of the artifact
  without the file, as an artifact trained before this change; a fresh ``$SHOPREC_CACHE``:
  the first start builds it and saves it there) and the start after it (reads it).
* Products added at run time: the new-item index extended with 100 items (a copy with the
  rows appended, :meth:`ItemIndex.extended`) against building it again over all of them.
* The 1-minute load average is read before and after each measurement: the 2 cores are
  shared with other jobs, so only ratios measured side by side mean much.

Writes the ``startup`` section of benchmarks/RESULTS.md with ``--write``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._results import stamp, write_section
from benchmarks.serve_latency import MODEL, TRAIN

log = logging.getLogger("benchmarks.startup")

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "startup"

#: Timed in a fresh process: prints one JSON line.
CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
import shoprec
from shoprec.recommend import Recommender
start = time.perf_counter()
rec = Recommender.from_artifact(sys.argv[1], build=False)
seconds = time.perf_counter() - start
new_pos, index = rec.candidates.new_index[:2]
peak = 0.0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        peak = int(line.split()[1]) / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "new_items": len(new_pos),
                  "index": index.describe(), "shoprec": shoprec.__file__,
                  "items": rec.n_items}))
"""


#: What the rows mean (the section's last paragraph).
NOTES = (
    "*before*: the code of `--before-src` (here commit 3919fae, the parent of the change), "
    "which builds the new-item index at every Recommender start, reload, forget and product"
    " addition; *after*: this code, reading the index that `build_retrieval` (so `shoprec t"
    "rain`) saved into the artifact. The seconds left after the change are loading the arti"
    "fact and the retrieval files, embedding every item with the two-tower model, the co-oc"
    "currence table and the known shoppers' query vectors. An artifact trained before this "
    "change (no saved index) pays the build once, in its first start, which saves it under "
    "`$SHOPREC_CACHE/new_items` (the artifact is not written); the next start reads it. Wit"
    "h `--workers N` the workers take a lock, so one builds and the others read. The 2 core"
    "s were shared with other engineers' benchmarks (the load columns: 1-minute load averag"
    "e): absolute seconds are inflated; the before/after rows ran back to back. Not re-meas"
    "ured at 1M items (238 s start-up with 1 worker before, per the issue-11 notes, most of"
    " it this index over ~773k new items): it would take longer than this session's 5-minut"
    "e limit per run."
)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def shop(n_items: int) -> dict[str, int]:
    return {"n_items": n_items, "n_users": 20_000, "n_events": 200_000, "seed": 0}


def artifact(n_items: int, rebuild: bool = False, part: str = "all") -> tuple[Path, dict]:
    """The artifact (trained once; ``part``: only ``train`` or only ``retrieval``, each a
    separate run), and how long its steps took."""
    import torch

    from shoprec.artifact import is_artifact
    from shoprec.config import ExperimentConfig
    from shoprec.experiment import train_experiment
    from shoprec.models.two_tower import TwoTowerConfig
    from shoprec.recommend import build_retrieval, has_retrieval

    out = RUNS / f"sim_{n_items // 1000}k"
    info_file = out.with_suffix(".json")
    info = json.loads(info_file.read_text()) if info_file.exists() and not rebuild else {}
    torch.set_num_threads(1)
    if rebuild or not is_artifact(out):
        if part == "retrieval":
            raise SystemExit(f"{out} is not trained yet: run --part train first")
        start = time.perf_counter()
        cfg = ExperimentConfig.from_dict(
            {
                "name": "startup",
                "data": {"dataset": "simulated", "simulate": shop(n_items)},
                "split": {"kind": "time", "test_days": 14, "valid_days": 7},
                "recipe": {"name": "pairs", "n_negatives": 4},
                "tasks": ["view", "cart", "buy"],
                "model": MODEL,
                "train": {**TRAIN, "epochs": 1},
                "evaluate": {"protocol": "sampled", "bootstrap": 0, "max_users": 500},
            }
        )
        RUNS.mkdir(parents=True, exist_ok=True)
        train_experiment(cfg, out, evaluate_test=False)
        info = {"shop": shop(n_items), "train_seconds": time.perf_counter() - start}
        info_file.write_text(json.dumps(info, indent=2))
    if part == "train":
        return out, info
    if rebuild or not has_retrieval(out) or "retrieval_seconds" not in info:
        start = time.perf_counter()
        build_retrieval(out, TwoTowerConfig(epochs=1, batch_size=2048))
        info["retrieval_seconds"] = time.perf_counter() - start
        info_file.write_text(json.dumps(info, indent=2))
    return out, info


def start_once(path: Path, src: Path | None, cache: Path) -> dict[str, Any]:
    """One start-up in a fresh process (``src``: import shoprec from there)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SHOPREC_CACHE": str(cache)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    before = loadavg()
    wall = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(load_before=before, load_after=loadavg(), process_seconds=time.perf_counter() - wall)
    log.info("%s", row)
    return row


def without_saved_index(path: Path) -> Path:
    """A copy of the artifact without its saved new-item index (an older artifact)."""
    from shoprec.artifact import seal
    from shoprec.recommend.retrieve import NEW_INDEX_PREFIX

    copy = path.with_name(path.name + "_no_index")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(path, copy)
    for f in (copy / "retrieval").glob(f"{NEW_INDEX_PREFIX}*"):
        f.unlink()
    seal(copy, "retrieval")
    return copy


def serve_start(path: Path, src: Path | None, workers: int, cache: Path) -> dict[str, Any]:
    """Seconds from ``shoprec serve ARTIFACT --workers N`` to an answer from every worker
    (``/health``, told apart by ``X-Shoprec-Worker``)."""
    import urllib.request

    from benchmarks.serve_scale import CliServer

    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "SHOPREC_CACHE")}
    os.environ["SHOPREC_CACHE"] = str(cache)
    if src is not None:
        os.environ["PYTHONPATH"] = str(src)
    before = loadavg()
    start = time.perf_counter()
    seen: set[str] = set()
    try:
        with CliServer(path, workers) as server:
            deadline = time.monotonic() + 300
            while len(seen) < workers and time.monotonic() < deadline:
                url = f"http://127.0.0.1:{server.port}/health"
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        seen.add(r.headers.get("X-Shoprec-Worker", "?"))
                except OSError:
                    time.sleep(0.2)
            seconds = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    row = {"workers": workers, "answered": len(seen), "seconds": seconds}
    row.update(load_before=before, load_after=loadavg())
    log.info("%s", row)
    return row


def extend_vs_rebuild(path: Path, n_added: int = 100) -> dict[str, Any]:
    """Seconds to extend the new-item index by ``n_added`` items against building it again."""
    import numpy as np
    import torch

    from shoprec.artifact import Artifact
    from shoprec.recommend.retrieve import ItemIndex, Retrieval, new_positions

    torch.set_num_threads(1)
    art = Artifact.load(path)
    r = Retrieval.of_artifact(art, build=False)
    new = new_positions(art.items, art.seen)
    index = r.new_item_index(new)
    added = r.item_vectors[np.random.default_rng(0).choice(len(new), n_added, replace=False)]
    load0 = loadavg()
    start = time.perf_counter()
    extended = index.extended(added)
    extend_s = time.perf_counter() - start
    start = time.perf_counter()
    ItemIndex(np.concatenate([r.item_vectors[new], added]))
    rebuild_s = time.perf_counter() - start
    assert len(extended) == len(new) + n_added
    return {
        "added": n_added,
        "extend_seconds": extend_s,
        "rebuild_seconds": rebuild_s,
        "load_before": load0,
        "load_after": loadavg(),
    }


def report(result: dict[str, Any]) -> str:
    rows = result["starts"]
    base = rows["before"]
    lines = [
        "| start-up | wall s (mean of runs) | runs | peak RSS MiB | new-item index | load avg |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        secs = [r["seconds"] for r in runs]
        loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
        lines.append(
            f"| {name} | {sum(secs) / len(secs):.1f} | "
            + ", ".join(f"{s:.1f}" for s in secs)
            + f" | {max(r['peak_rss_mib'] for r in runs):.0f} | {runs[0]['index']} | "
            f"{min(loads):.1f}-{max(loads):.1f} |"
        )
    mean = {k: sum(r["seconds"] for r in v) / len(v) for k, v in rows.items()}
    ext = result["extend"]
    info = result["artifact"]
    return "\n".join(
        [
            f"Shop: {info['shop']} (simulated): {base[0]['items']:,} items, "
            f"{base[0]['new_items']:,} of them without training events (the new-item "
            f"index covers those). Artifact: pairs/MMoE trained in {info['train_seconds']:.0f} s, "
            f"retrieval files (two-tower one epoch, item index, new-item index, "
            f"co-occurrences) built in {info['retrieval_seconds']:.0f} s.",
            "",
            *lines,
            "",
            f"Start-up after / before: **{mean['before'] / mean['after']:.1f}x faster** "
            f"({mean['before']:.1f} s -> {mean['after']:.1f} s).",
            f"Products added at run time: extending the new-item index by {ext['added']} items "
            f"took {ext['extend_seconds']:.2f} s against {ext['rebuild_seconds']:.1f} s to "
            f"build it again (load {ext['load_before']:.1f}-{ext['load_after']:.1f}).",
            *(
                [
                    "",
                    "`shoprec serve ARTIFACT --workers 2 --threads 1`, from the command to an "
                    "answer from both workers (`/health`, told apart by `X-Shoprec-Worker`; "
                    "this includes starting Python, the checks of every artifact file and the "
                    "parent's loading of the retrieval files): "
                    + "; ".join(
                        f"{name} {r['seconds']:.1f} s (load {r['load_before']:.1f}-"
                        f"{r['load_after']:.1f}, {r['answered']} workers answered)"
                        for name, r in result.get("serve", {}).items()
                    )
                    + ".",
                ]
                if result.get("serve")
                else []
            ),
            "",
            NOTES,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--before-src", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--part", choices=["all", "train", "retrieval"], default="all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    path, info = artifact(args.items, args.rebuild, args.part)
    if args.part != "all":
        return
    starts: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="shoprec_startup_") as tmp:
        if args.before_src is not None:
            starts["before"] = [
                start_once(path, args.before_src, Path(tmp) / "before") for _ in range(args.repeats)
            ]
        starts["after"] = [
            start_once(path, ROOT / "src", Path(tmp) / "after") for _ in range(args.repeats)
        ]
        old = without_saved_index(path)
        cache = Path(tmp) / "cold"
        starts["after, no saved index: first start (builds, saves)"] = [
            start_once(old, ROOT / "src", cache)
        ]
        starts["after, no saved index: next start (reads)"] = [start_once(old, ROOT / "src", cache)]
        shutil.rmtree(old, ignore_errors=True)
        serve: dict[str, dict[str, Any]] = {}
        if args.before_src is not None:
            serve["before"] = serve_start(path, args.before_src, 2, Path(tmp) / "sb")
        serve["after"] = serve_start(path, ROOT / "src", 2, Path(tmp) / "sa")
    result = {
        "artifact": info,
        "starts": starts,
        "serve": serve,
        "extend": extend_vs_rebuild(path),
    }
    (RUNS / "results.json").write_text(json.dumps(result, indent=2))
    text = report(result)
    print(text)
    if args.write and "before" in starts:
        write_section("startup", "## Recommender start-up: the saved new-item index\n\n"
                      + stamp() + "\n" + text + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
