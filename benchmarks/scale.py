"""Scale benchmark: time and peak memory of simulate, prepare and one epoch against events,
and training samples/s of one process against two (torchrun, DistributedDataParallel).

Usage: ``python -m benchmarks.scale [--quick] [--sizes 1000000 5000000 ...] [--ddp-events N]``

Protocol:

* Shops simulated by ``shoprec data simulate`` (:func:`shoprec.data.simulate.write_shop`,
  chunks of 1M events) at growing sizes, users and items growing with them (table below).
* Each stage runs in a fresh process (``python -m benchmarks.scale --stage ...``) so its peak
  resident set (``VmHWM``) is its own: **simulate** writes the folder; the second process
  **prepares** (loads the folder through the front door's loader, splits it by time, 14
  test days and 7 valid, and builds the pairs recipe's training rows of
  ``configs/sim_mmoe.yaml``: view / cart / buy, 4 negatives; its peak is the high-water
  mark read right after) and then trains MMoE for one **epoch** (batch 2048, one torch
  thread, no validation; time of the training steps only, peak of the whole process).
  The RSS of a process that has only imported torch and shoprec is reported beside them.
* 1 vs 2 processes: the epoch stage on one size under ``torchrun --standalone
  --nproc_per_node P`` with ``OMP_NUM_THREADS=1`` for P = 1 and 2: the same global batch
  (2048 rows, 1024 per process with two), so the two runs do the same work; samples/s are
  training rows over the training-step time of rank 0 (all ranks step together).
* The machine's cores, its 1-minute load average before and after each run are recorded:
  the machine is shared, so a load above the cores used means other jobs slowed ours.

Writes the "Scale" section of benchmarks/RESULTS.md and ``benchmarks/scale.png`` (peak
memory and time against events).

``--part ann`` (large id spaces, issue 11 item 4) measures instead, in one process:

* **retrieval at 1M items** (``--ann-items``) for item vectors of dim 32 and 64, random but
  clustered (:func:`shoprec.recommend.retrieve.clustered_vectors`: 1,000 clusters), through
  the index :class:`~shoprec.recommend.retrieve.ItemIndex` chooses for that size (HNSW; with
  ``--ann-kinds hnsw ivf`` also the inverted file it uses below
  :data:`~shoprec.recommend.retrieve.HNSW_MIN_ITEMS`):
  build time (faiss's threads: all cores), index bytes (serialised), recall@100 against exact
  search (faiss ``IndexFlatIP``) over 1,000 queries from the same clusters, p50 / p99 latency
  of one query at a time (batch 1, one thread); exact search itself beside them;
* **vocabularies of 10M user ids and 1M item ids** (Zipf-like event counts): the encoder's fit
  time, known ids and bytes per id (vocabulary + float32 embedding rows at dim 32) without
  a floor and with ``min_count=2`` plus 100k hash buckets.

Writes the "scale_ann" block of RESULTS.md (just after the Scale section) and
``benchmarks/scale_ann.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PNG = Path(__file__).resolve().parent / "scale.png"
CONFIG = ROOT / "configs" / "sim_mmoe.yaml"

#: events -> (users, items): the shops of the issue (100k / 1M users and items at the top).
SHOPS = {
    200_000: (4_000, 2_000),
    1_000_000: (20_000, 10_000),
    5_000_000: (100_000, 100_000),
    20_000_000: (1_000_000, 100_000),
    50_000_000: (1_000_000, 100_000),  # 1M items: the simulator's stock phase passed 10 GiB
}


def _shop(events: int) -> tuple[int, int]:
    """Users and items of the simulated shop of ``events`` events."""
    return SHOPS.get(events, (max(2_000, events // 50), max(1_000, events // 100)))


def _rss_mib() -> float:
    from benchmarks._results import peak_rss_mib_now

    return peak_rss_mib_now()


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------- stages (children)


def _config(folder: Path, batch: int) -> Any:
    import yaml

    from shoprec.config import load_config

    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"] = {"dataset": str(folder)}
    raw["train"] = {**raw["train"], "epochs": 1, "batch_size": batch, "progress": False}
    raw["train"]["threads"] = 1
    sparse = int(os.environ.get("SHOPREC_SCALE_SPARSE_ROWS", "0"))
    if sparse:  # tables of this many rows and more: sparse gradients + SparseAdam
        raw["train"]["sparse_rows"] = sparse
    raw["output"] = str(folder / "run")
    path = folder / f"scale-{os.environ.get('RANK', '0')}.yaml"  # one per torchrun rank
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def stage(
    name: str, folder: Path, events: int, batch: int, stream: str = "shards", max_shards: int = 0
) -> dict[str, Any]:
    """Run one stage in this process; return its numbers."""
    import torch

    from shoprec import recipes
    from shoprec.train import distributed
    from shoprec.train.loop import fit

    torch.set_num_threads(1)
    base = _rss_mib()
    t0 = time.perf_counter()
    if name == "simulate":
        from shoprec.data.simulate import write_shop

        users, items = _shop(events)
        write_shop(folder, n_events=events, n_users=users, n_items=items, seed=0)
        return {"seconds": time.perf_counter() - t0, "peak_mib": _rss_mib(), "base_mib": base}
    cfg = _config(folder, batch)
    recipe = recipes.get(cfg.recipe.name)(cfg)
    if stream == "shards":  # events scanned lazily, rows written as Parquet shards
        data = recipe.prepare_files(folder)
        n_events = _count_events(folder)
    else:  # the in-memory path: every event and every training row in memory
        import shoprec.experiment as ex

        ds = ex.load_dataset(cfg.data)
        split = ex.make_split(ds, cfg.split, recipe.target)
        data = recipe.prepare(ds, split)
        n_events = ds.interactions.df.height
        del ds, split
    out: dict[str, Any] = {
        "events": n_events,
        "train_rows": len(data.train),
        "stream": stream,
        "prepare_seconds": time.perf_counter() - t0,
        "prepare_peak_mib": _rss_mib(),  # the high-water mark so far: preparing's peak
    }
    if name == "epoch":
        torch.manual_seed(0)
        model = recipe.build_model(data)
        train = data.train
        if max_shards and hasattr(train, "head") and train.n_shards > max_shards:
            train = train.head(max_shards)  # time part of the epoch, extrapolate the rest
        cpu0 = time.process_time()
        result = fit(model, train, None, cfg.train.train_config(progress=False))
        cpu = time.process_time() - cpu0  # this process's CPU seconds in fit
        ctx = distributed.setup("cpu")
        (cpu_all,) = distributed.all_reduce_sum([cpu], ctx)  # over every rank
        out.update(
            cpu_seconds_per_1k_samples=1000 * cpu_all / max(len(train), 1),
            epoch_rows=len(train),
            epoch_seconds=result.train_seconds * len(data.train) / max(len(train), 1),
            measured_seconds=result.train_seconds,
            samples_per_second=result.samples_per_second,
            processes=ctx.world_size,
            params=sum(p.numel() for p in model.parameters()),
        )
        distributed.shutdown()
        if ctx.rank > 0:
            return {}
    out.update(seconds=time.perf_counter() - t0, peak_mib=_rss_mib(), base_mib=base)
    return out


def _count_events(folder: Path) -> int:
    import polars as pl

    from shoprec.data.partitioned import scan_events

    lf = scan_events(folder / "interactions.parquet")
    return int(lf.select(pl.len()).collect(engine="streaming").item())


# --------------------------------------------------------------------------- driver


SPARSE_ROWS = 100_000  # the scale runs' train.sparse_rows (--sparse-rows)


def _child(args: list[str], nproc: int = 0, timeout: float = 7200) -> dict[str, Any]:
    """Run a stage in a fresh process (under torchrun when nproc > 0); its JSON line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", str(nproc), "-m", "benchmarks.scale", *args]
    else:
        cmd = [sys.executable, "-m", "benchmarks.scale", *args]
    load0 = _loadavg()
    wall = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1])
    result.update(load_before=load0, load_after=_loadavg(), wall=time.perf_counter() - wall)
    return result


def _cores() -> str:
    name = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {name}"


def run(
    sizes: list[int],
    ddp_events: int,
    batch: int,
    work: Path,
    *,
    stream: str = "shards",
    max_shards: int = 0,
    reuse: bool = False,
    ddp_shards: int = 0,
) -> dict[str, Any]:
    rows = []
    opts = ["--stream", stream, "--batch", str(batch)]
    for n in sizes:
        folder = work / f"shop-{n}"
        saved = folder / "simulate.json"
        common = ["--folder", str(folder), "--events", str(n), *opts]
        if reuse and saved.exists():  # simulated earlier by this script (its numbers kept)
            sim = json.loads(saved.read_text())
            print(f"[scale] {n:,} events: simulated earlier ({sim['seconds']:.1f} s)", flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            print(f"[scale] {n:,} events: simulate", flush=True)
            sim = _child(["--stage", "simulate", *common])
            saved.write_text(json.dumps(sim))
        print(f"[scale] {n:,} events: prepare + epoch ({sim['seconds']:.1f} s)", flush=True)
        shards = ["--max-shards", str(max_shards)] if max_shards else []
        ep = _child(["--stage", "epoch", *common, *shards])
        prep = {"prepare_seconds": ep["prepare_seconds"], "peak_mib": ep["prepare_peak_mib"]}
        prep["base_mib"] = ep["base_mib"]
        print(f"[scale] {n:,} events: {ep['samples_per_second']:,.0f} samples/s", flush=True)
        users, items = _shop(n)
        rows.append(
            dict(target_events=n, users=users, items=items, simulate=sim, prepare=prep, epoch=ep)
        )
        if n != ddp_events and not reuse:
            shutil.rmtree(folder, ignore_errors=True)
    ddp: dict[int, Any] = {}
    if ddp_events:
        folder = work / f"shop-{ddp_events}"
        if not (folder / "interactions.parquet").exists():
            _child(["--stage", "simulate", "--folder", str(folder), "--events", str(ddp_events)])
        common = ["--stage", "epoch", "--folder", str(folder), "--events", str(ddp_events)]
        common += [*opts, *(["--max-shards", str(ddp_shards)] if ddp_shards else [])]
        for p in (1, 2):
            print(f"[scale] {ddp_events:,} events: epoch with {p} process(es)", flush=True)
            ddp[p] = _child(common, nproc=p)
    return {"rows": rows, "ddp": ddp, "ddp_events": ddp_events, "batch": batch}


def _plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = [r["epoch"]["events"] / 1e6 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    for key, label in (
        ("simulate", "simulate"),
        ("prepare", "prepare"),
        ("epoch", "prepare + epoch"),
    ):
        a.plot(ev, [r[key]["peak_mib"] / 1024 for r in rows], "o-", label=label)
    a.axhline(8, color="grey", ls="--", lw=1, label="target 8 GB")
    a.set(xlabel="events (millions)", ylabel="peak RSS (GiB)", title="peak memory")
    a.legend(fontsize=7)
    b.plot(ev, [r["simulate"]["seconds"] for r in rows], "o-", label="simulate")
    b.plot(ev, [r["prepare"]["prepare_seconds"] for r in rows], "o-", label="prepare")
    b.plot(ev, [r["epoch"]["epoch_seconds"] for r in rows], "o-", label="one epoch (1 thread)")
    b.set(xlabel="events (millions)", ylabel="seconds", title="time")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PNG)
    plt.close(fig)


def _markdown(res: dict[str, Any], command: str, cores: str, seconds: float) -> str:
    from benchmarks._results import stamp

    rows, ddp = res["rows"], res["ddp"]
    cpu = res.get("cpu_seconds", float("nan"))
    head = stamp(command).rstrip().splitlines()
    if res.get("commit"):  # rendered again from scale.json: the run's date and code
        head = [f"- date: {res['date']}" if h.startswith("- date:") else h for h in head]
        head = [f"- code: commit {res['commit']}" if h.startswith("- code:") else h for h in head]
    stream = rows[0]["epoch"].get("stream", "memory") if rows else "memory"
    how = (
        "events scanned lazily and streamed into buckets of users, training rows written as "
        "Parquet shards of 1M rows and trained one shard at a time (`train.stream: shards`, "
        "`PairsRecipe.prepare_files`)"
        if stream == "shards"
        else "every event and training row in memory (`train.stream: memory`)"
    )
    lines = [
        "## Scale: events against time and memory; 1 vs 2 training processes",
        "",
        *head,
        f"- cores: {cores}; whole run {seconds:.0f} s wall, {cpu:.0f} s CPU in its processes",
        f"- preparing: {how}",
        f"- training: configs/sim_mmoe.yaml (MMoE, batch {res['batch']}, one torch thread)"
        + (
            f", embedding tables of >= {res['sparse_rows']:,} rows with sparse gradients and "
            "SparseAdam (`train.sparse_rows`)"
            if res.get("sparse_rows")
            else ", dense gradients"
        ),
        "- each stage a fresh process, peak RSS = its VmHWM; a process that only imported "
        f"torch and shoprec holds {rows[0]['prepare']['base_mib']:.0f} MiB of it"
        if rows
        else "",
        "",
        "| events | users | items | train rows | simulate s | simulate peak MiB | prepare s | "
        "prepare peak MiB | epoch s | samples/s | prepare + epoch peak MiB | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    partial = False
    for r in rows:
        s, p, e = r["simulate"], r["prepare"], r["epoch"]
        part = e.get("epoch_rows", e["train_rows"]) < e["train_rows"]
        partial |= part
        lines.append(
            f"| {e['events']:,} | {r['users'] or '-':,} | {r['items'] or '-':,} | "
            f"{e['train_rows']:,} | {s['seconds']:.1f} | {s['peak_mib']:.0f} | "
            f"{p['prepare_seconds']:.1f} | {p['peak_mib']:.0f} | {e['epoch_seconds']:.1f}"
            f"{' *' if part else ''} | {e['samples_per_second']:,.0f} | {e['peak_mib']:.0f} | "
            f"{e['load_before']:.1f} -> {e['load_after']:.1f} |"
        )
    if partial:
        lines += [
            "",
            "\\* epoch time extrapolated: the first training shards were trained (one "
            "thread) and timed, the epoch is rows / that rate; the peak is of that run (one "
            "shard in memory at a time, the whole model and optimizer state)",
        ]
    if res.get("notes"):
        lines += ["", *[f"- {note}" for note in res["notes"]]]
    ratios: list[tuple[int, float, float]] = []  # (global batch, wall ratio, CPU ratio)
    ddp_runs = res.get("ddp_runs") or ([{"batch": res["batch"], "ddp": ddp}] if ddp else [])
    for run in ddp_runs:
        one, two = run["ddp"][1], run["ddp"][2]
        ratio = two["samples_per_second"] / one["samples_per_second"]
        cpu = one.get("cpu_seconds_per_1k_samples", float("nan")) / two.get(
            "cpu_seconds_per_1k_samples", float("nan")
        )
        ratios.append((run["batch"], ratio, cpu))
        lines += [
            "",
            f"1 vs 2 processes (torchrun, gloo, DistributedDataParallel, one thread each, "
            f"global batch {run['batch']}) on the {one['events']:,}-event shop "
            f"({one.get('epoch_rows', one['train_rows']):,} training rows), one epoch:",
            "",
            "| processes | samples/s | epoch s | CPU s per 1k samples (all ranks) | "
            "peak MiB (rank 0) | load avg before -> after |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n, r in ((1, one), (2, two)):
            lines.append(
                f"| {n} | {r['samples_per_second']:,.0f} | "
                f"{r.get('measured_seconds', r['epoch_seconds']):.1f} | "
                f"{r.get('cpu_seconds_per_1k_samples', float('nan')):.3f} | "
                f"{r['peak_mib']:.0f} | {r['load_before']:.1f} -> {r['load_after']:.1f} |"
            )
        lines += [
            "",
            f"Ratio 2 / 1 processes: **{ratio:.2f}x** of samples/s. Two processes spend "
            f"{1 / cpu:.2f}x the CPU per sample of one (all their threads counted), so on two "
            f"idle cores they would reach about {2 * cpu:.2f}x (an estimate from CPU time: the "
            "wall-clock ratio depends on the share of the cores other jobs leave).",
            "",
        ]
    lines += ["Targets:", ""]
    if res.get("quick_run"):
        q = res["quick_run"]
        ok = "met" if q["seconds"] < 300 else "missed"
        lines.append(
            f"- `--quick` under 5 minutes: {q['seconds']:.0f} s wall ({q['cpu_seconds']:.0f} s "
            f"CPU) at load average {q['load']:.1f} on {os.cpu_count()} cores -> **{ok}** "
            f"({q['note']})"
        )
    if rows:
        big = max(rows, key=lambda r: r["epoch"]["events"])
        ref = next((r for r in rows if r["target_events"] == 1_000_000), rows[0])
        e_big, e_ref = big["epoch"], ref["epoch"]
        millions = e_big["events"] / 1e6
        peak_gb = e_big["peak_mib"] * 2**20 / 1e9
        if big["target_events"] >= 50_000_000:
            ok = "met" if peak_gb < 8 else "missed"
            lines.append(
                f"- 50M events prepared and one epoch with peak RSS under 8 GB: "
                f"{peak_gb:.2f} GB ({e_big['peak_mib'] / 1024:.2f} GiB; prepare alone "
                f"{big['prepare']['peak_mib'] / 1024:.2f} GiB) at {millions:.1f}M events -> "
                f"**{ok}**"
            )
        else:
            lines.append(
                f"- 50M events under 8 GB: **not run** here; the largest size run, "
                f"{millions:.1f}M events, peaked at {peak_gb:.2f} GB"
            )
        sps = e_big["samples_per_second"] / e_ref["samples_per_second"]
        lines.append(
            f"- training samples/s at {millions:.1f}M events within 20% of "
            f"{e_ref['events'] / 1e6:.1f}M events: {e_big['samples_per_second']:,.0f} vs "
            f"{e_ref['samples_per_second']:,.0f} ({sps:.2f}x) -> "
            f"**{'met' if sps >= 0.8 else 'missed'}**"
        )
    for (batch, ratio, cpu), run in zip(ratios, ddp_runs, strict=True):
        load = run["ddp"][2]["load_before"]
        busy = "; other jobs shared the cores" if load > 1 else ""
        lines.append(
            f"- 2 processes >= 1.6x of 1 (global batch {batch}): {ratio:.2f}x -> "
            f"**{'met' if ratio >= 1.6 else 'missed'}** (load average {load:.1f} before the "
            f"2-process run on {os.cpu_count()} cores{busy}; about {2 * cpu:.2f}x on two idle "
            "cores, estimated from the CPU per sample)"
        )
    lines += ["", "![peak memory and time against events](scale.png)"]
    return "\n".join(line for i, line in enumerate(lines) if line or i == 0 or lines[i - 1])


def _latency_ms(index: Any, queries: Any, k: int) -> tuple[float, float]:
    """p50 and p99 of one query at a time (the caller fixes the threads)."""
    import numpy as np

    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        times.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.asarray(times) * 1000, [50, 99])
    return float(p50), float(p99)


def ann_part(
    n_items: int, dims: list[int], n_queries: int, k: int = 100, kinds: tuple[str, ...] = ("hnsw",)
) -> dict[str, Any]:
    """Build, size, recall@k against exact and batch-1 latency of the item indexes."""
    import faiss

    from shoprec.recommend import retrieve
    from shoprec.recommend.retrieve import ItemIndex, clustered_vectors, recall_at_k

    rows = []
    threads = faiss.omp_get_max_threads()
    for dim in dims:
        items = clustered_vectors(n_items, dim, seed=0)
        queries = clustered_vectors(n_queries, dim, seed=1, centres_seed=0)
        faiss.omp_set_num_threads(threads)
        exact = faiss.IndexFlatIP(dim)
        exact.add(items)
        truth = exact.search(queries, k)[1]
        faiss.omp_set_num_threads(1)
        p50, p99 = _latency_ms(exact, queries[:100], k)
        rows.append(
            dict(dim=dim, kind="flat (exact)", build_s=0.0, index_mib=items.nbytes / 2**20,
                 recall=1.0, p50_ms=p50, p99_ms=p99, note="100 queries timed")
        )  # fmt: skip
        print(f"[ann] dim {dim}: exact p50 {p50:.1f} ms", flush=True)
        for kind in kinds:
            faiss.omp_set_num_threads(threads)
            rss0 = _rss_now_mib()
            t0 = time.perf_counter()
            idx = ItemIndex(items, kind=kind)
            build = time.perf_counter() - t0
            rss = _rss_now_mib() - rss0
            faiss.omp_set_num_threads(1)
            settings = [None] if kind == "ivf" else [None, 400]
            for ef in settings:
                if ef is not None:
                    idx.ef_search = ef
                found = idx.search(queries, k)[1]
                p50, p99 = _latency_ms(idx, queries, k)
                row = dict(
                    dim=dim, kind=kind, describe=idx.describe(), build_s=build,
                    index_mib=idx.nbytes() / 2**20, rss_growth_mib=rss,
                    recall=recall_at_k(found, truth), p50_ms=p50, p99_ms=p99,
                    note=("default" if ef is None else f"efSearch {ef}")
                    + (" (auto at this size)" if retrieve.choose_index_kind(n_items) == kind
                       and ef is None else ""),
                )  # fmt: skip
                rows.append(row)
                print(f"[ann] {row}", flush=True)
            del idx
    return {"n_items": n_items, "n_queries": n_queries, "k": k, "threads": threads, "ann": rows}


def _rss_now_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ids_part(dim: int = 32) -> list[dict[str, Any]]:
    """Encoder vocabularies of 10M user ids and 1M item ids, with and without a floor."""
    import numpy as np
    import polars as pl

    from shoprec.data.encode import Encoder

    rows = []
    rng = np.random.default_rng(0)
    for col, n_ids, n_events in (("user", 10_000_000, 30_000_000), ("item", 1_000_000, 10_000_000)):
        draw = (n_ids * rng.random(n_events) ** 2).astype(np.int64)  # skewed: popular ids first
        frame = pl.DataFrame({col: pl.Series(draw).cast(pl.String)})
        del draw
        for min_count, buckets in ((1, 0), (2, 100_000)):
            t0 = time.perf_counter()
            enc = Encoder(categorical=[col], min_count=min_count, hash_buckets=buckets).fit(frame)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            enc.transform(frame.head(1_000_000))
            tr_s = time.perf_counter() - t0
            mem = enc.memory_bytes(dim)[col]
            rows.append(
                dict(column=col, ids_seen=int(frame[col].n_unique()), events=n_events,
                     min_count=min_count, hash_buckets=buckets, fit_s=fit_s,
                     transform_1m_s=tr_s, dim=dim, **mem)
            )  # fmt: skip
            print(f"[ids] {rows[-1]}", flush=True)
            del enc
        del frame
    return rows


def _ann_markdown(res: dict[str, Any], command: str) -> str:
    from benchmarks._results import stamp

    n, k = res.get("n_items", 0), res.get("k", 100)
    lines = [
        f"### Scale: large id spaces - retrieval over {n:,} items, vocabularies of 10M ids",
        "",
        *stamp(command).rstrip().splitlines(),
        f"- cores: {_cores()}; load average {res['load_before']:.1f} before, "
        f"{res['load_after']:.1f} after (the machine is shared)",
    ]
    if res["ann"]:
        lines += [
            f"- {n:,} random but clustered unit vectors (1,000 clusters), {res['n_queries']:,} "
            f"queries from the same clusters; recall@{k} against exact search (faiss "
            f"IndexFlatIP); latency: one query at a time, one thread, k={k}; build with "
            f"{res['threads']} faiss thread(s); index MiB = the serialised index (vectors "
            "included)",
            "",
            f"| dim | index | build s | index MiB | RSS growth MiB | recall@{k} | p50 ms | "
            "p99 ms | setting |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|",
        ]
    for r in res["ann"]:
        lines.append(
            f"| {r['dim']} | {r.get('describe', r['kind'])} | {r['build_s']:.1f} | "
            f"{r['index_mib']:.0f} | {r.get('rss_growth_mib', float('nan')):.0f} | "
            f"{r['recall']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['note']} |"
        )
    auto = [r for r in res["ann"] if "auto" in r["note"]]
    if auto:
        lines += ["", f"Target recall@100 >= 0.95 against exact at {n:,} items (the index "
                  "chosen for the size, default settings):", ""]  # fmt: skip
    for r in auto:
        ok = "met" if r["recall"] >= 0.95 else "missed"
        lines.append(f"- dim {r['dim']}: {r['recall']:.3f} -> **{ok}** (p99 {r['p99_ms']:.2f} ms)")
    if res.get("ids"):
        lines += [
            "",
            "Vocabularies (`Encoder`, ids as strings, Zipf-like counts; bytes per known id = "
            "the vocabulary in this process - strings, tuple, lookup Series - plus float32 "
            f"embedding rows at dim {res['ids'][0]['dim']}, buckets included):",
            "",
            "| column | events | ids seen | min_count | hash buckets | known ids | rows | "
            "fit s | transform 1M s | vocab B/id | embedding B/id | total MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["ids"]:
            total = (r["vocab_bytes"] + r["embedding_bytes"]) / 2**20
            lines.append(
                f"| {r['column']} | {r['events']:,} | {r['ids_seen']:,} | {r['min_count']} | "
                f"{r['hash_buckets']:,} | {r['known']:,} | {r['rows']:,} | {r['fit_s']:.1f} | "
                f"{r['transform_1m_s']:.2f} | {r['vocab_bytes_per_id']:.0f} | "
                f"{r['embedding_bytes_per_id']:.0f} | {total:,.0f} |"
            )
    if res.get("notes"):
        lines += ["", *[f"- {note}" for note in res["notes"]]]
    return "\n".join(lines)


def run_ann(a: argparse.Namespace) -> None:
    """``--part ann``: measure, print, write the scale_ann block."""
    command = (".venv/bin/python -m benchmarks.scale " + " ".join(sys.argv[1:])).strip()
    saved = Path(__file__).resolve().parent / "scale_ann.json"
    if a.report_only:
        res = json.loads(saved.read_text())
        command = res["command"]
    else:
        res = {"load_before": _loadavg(), "ann": []}
        if not a.no_ann:
            kinds = tuple(a.ann_kinds)
            res.update(ann_part(a.ann_items, a.ann_dims, a.ann_queries, kinds=kinds))
        if not a.no_ids:
            res["ids"] = ids_part()
        res.update(load_after=_loadavg(), command=command)
    md = _ann_markdown(res, command)
    print(md)
    if not a.no_write:
        from benchmarks._results import write_section

        write_section("scale_ann", md)
        saved.write_text(json.dumps(res, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="0.1M and 0.2M events (< 5 minutes)")
    ap.add_argument("--sizes", type=int, nargs="+", help="events per shop")
    ap.add_argument("--ddp-events", type=int, help="shop for 1 vs 2 processes")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite the section from scale.json"
    )
    ap.add_argument("--part", choices=["events", "ann"], default="events",
                    help="events: time and memory against events (default); ann: large id "
                    "spaces - retrieval over 1M items and 10M-id vocabularies")  # fmt: skip
    ap.add_argument("--ann-items", type=int, default=1_000_000, help="items for --part ann")
    ap.add_argument("--ann-dims", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--ann-queries", type=int, default=1000)
    ap.add_argument("--ann-kinds", nargs="+", choices=["hnsw", "ivf"], default=["hnsw"])
    ap.add_argument("--no-ids", action="store_true", help="--part ann without vocabularies")
    ap.add_argument("--no-ann", action="store_true", help="--part ann: vocabularies only")
    ap.add_argument(
        "--stream",
        choices=["shards", "memory"],
        default="shards",
        help="prepare and train through Parquet shards (default) or in memory",
    )
    ap.add_argument(
        "--max-shards",
        type=int,
        default=0,
        help="time one epoch's first N training shards and extrapolate the epoch",
    )
    ap.add_argument("--ddp-shards", type=int, default=0, help="--max-shards of 1 vs 2 processes")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep simulated shops in --work and reuse them (their simulate.json)",
    )
    ap.add_argument(
        "--sparse-rows",
        type=int,
        default=SPARSE_ROWS,
        help="train.sparse_rows of the runs (0: dense gradients everywhere)",
    )
    ap.add_argument("--save", type=Path, help="also write this run's numbers to this JSON file")
    ap.add_argument("--note", action="append", help="a line under the table (with --merge)")
    ap.add_argument("--ddp-only", action="store_true", help="only 1 vs 2 processes")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="write the section from runs saved with --save (rows of all, in order)",
    )
    ap.add_argument("--stage", choices=["simulate", "prepare", "epoch"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--events", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage:
        out = stage(a.stage, a.folder, a.events, a.batch, a.stream, a.max_shards)
        if out:
            print(json.dumps(out), flush=True)
        return
    if a.part == "ann":
        run_ann(a)
        return
    saved = Path(__file__).resolve().parent / "scale.json"
    if a.merge:  # runs made separately (e.g. the largest size alone), one section
        runs = [json.loads(Path(f).read_text()) for f in a.merge]
        res = {**runs[-1], "rows": [], "ddp": {}, "ddp_runs": [], "notes": list(a.note or [])}
        for r in runs:
            if r.get("quick"):  # the --quick run: its time is a target, its sizes are not rows
                res["quick_run"] = {
                    "seconds": r["seconds"],
                    "cpu_seconds": r["cpu_seconds"],
                    "load": r.get("load_before", float("nan")),
                    "note": f"`{r['command']}`, {r['date']}",
                }
                continue
            res["rows"] += r["rows"]
            if r["ddp"]:
                res["ddp"] = r["ddp"]
                res["ddp_runs"].append({"batch": r["batch"], "ddp": r["ddp"]})
            res["notes"] += r.get("notes", [])
        res["rows"].sort(key=lambda r: r["target_events"])
        kept = [r for r in runs if not r.get("quick")]
        res["seconds"] = sum(r["seconds"] for r in kept)
        res["cpu_seconds"] = sum(r["cpu_seconds"] for r in kept)
        res["command"] = "`; `".join(r["command"] for r in kept)
        res["commit"] = ", ".join(dict.fromkeys(r["commit"] for r in kept))
        res["date"] = ", ".join(r["date"] for r in kept)
        saved = a.save or saved
        saved.write_text(json.dumps(res, indent=1))
        a.report_only = True
    if a.report_only:
        from benchmarks._results import write_section

        res = json.loads(saved.read_text())
        res["ddp"] = {int(k): v for k, v in res["ddp"].items()}
        for entry in res.get("ddp_runs", []):
            entry["ddp"] = {int(k): v for k, v in entry["ddp"].items()}
        md = _markdown(res, res["command"], res["cores"], res["seconds"])
        print(md)
        if not a.no_write:
            _plot(res["rows"])
            write_section("scale", md)
        return
    os.environ["SHOPREC_SCALE_SPARSE_ROWS"] = str(a.sparse_rows)  # the stages read it
    sizes = a.sizes or ([100_000, 200_000] if a.quick else [1_000_000, 5_000_000])
    ddp_events = a.ddp_events if a.ddp_events is not None else sizes[0]
    if a.ddp_only:  # 1 vs 2 processes alone (e.g. at another --batch), for --merge
        sizes = []
    work = a.work or Path(tempfile.mkdtemp(prefix="shoprec-scale-"))
    load_before = _loadavg()
    start = time.perf_counter()
    try:
        res = run(
            sizes,
            ddp_events,
            a.batch,
            work,
            stream=a.stream,
            max_shards=a.max_shards,
            reuse=a.reuse,
            ddp_shards=a.ddp_shards,
        )
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = (".venv/bin/python -m benchmarks.scale " + " ".join(sys.argv[1:])).strip()
    from benchmarks._results import stamp

    code = [h for h in stamp("-").splitlines() if h.startswith("- code: commit ")]
    res.update(
        commit=code[0].removeprefix("- code: commit ") if code else "unknown",
        date=time.strftime("%Y-%m-%d %H:%M"),
        quick=a.quick,
        load_before=load_before,
        load_after=_loadavg(),
        sparse_rows=a.sparse_rows,
        seconds=seconds,
        cpu_seconds=kids.ru_utime + kids.ru_stime,
        command=command,
        cores=_cores(),
    )
    md = _markdown(res, command, res["cores"], seconds)
    print(md)
    if a.save:
        a.save.write_text(json.dumps(res, indent=1))
    if not a.no_write:
        from benchmarks._results import write_section

        _plot(res["rows"])
        write_section("scale", md)
        saved.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
