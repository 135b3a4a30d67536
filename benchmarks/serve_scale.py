"""Serving at scale: ``GET /recommend/{user}?k=10`` over a 1,000,000-item catalog, at a fixed
offered rate, with ``shoprec serve --workers 1`` and ``--workers 2``.

Usage: ``python -m benchmarks.serve_scale [--quick] [--rebuild] [--rate 300] [--seconds 20]
[--workers 1 2]``

Protocol:

* One artifact, trained here once (reused from ``runs/serve_scale/`` afterwards): the
  ``pairs`` recipe (MMoE, view / cart / buy, buy ranks; the model and training settings of
  ``benchmarks/serve_latency.py``) on a simulated shop with 1,000,000 items
  (``simulate_shop(n_items=1_000_000, ...)``, sizes in :data:`SHOP`), one epoch, validation
  on the sampled protocol (1 positive + 99 drawn items: ranking 1M items per shopper is the
  serving question, not this one). Its retrieval files come from
  :func:`~shoprec.recommend.build_retrieval`; the item index is chosen by size
  (:func:`~shoprec.recommend.retrieve.choose_index_kind`: an HNSW graph at 1M items), and
  its recall@100 against exact inner-product search is measured here (1,000 shoppers).
* The server is ``shoprec serve ARTIFACT --workers N`` (the CLI a shop runs: uvicorn, one
  torch thread per worker, every worker reading live events from the shared SQLite store),
  a subprocess in its own session, started and stopped by
  :class:`benchmarks.serve_latency.Server`.
* The load is open-loop at a fixed offered rate (``--rate`` requests per second): request
  ``i`` is due at ``t0 + i / rate`` whether or not earlier ones were answered, sent over a
  pool of keep-alive connections (a new one when all are busy, up to ``--connections``);
  latency is measured from when the request was due, so a server that falls behind shows
  it in its latency (no coordinated omission). Each request is for a known shopper drawn at
  random (seeded); a warm-up (not counted) goes first. Errors are non-200 answers, broken
  connections, requests that could not be sent (all connections busy) and lists of fewer
  than 10 items.
* Client and server share the machine: the 1-minute load average before each run, the
  server's and the client's CPU, and the CPU other processes used meanwhile are reported.

Writes the ``serve_scale`` section of benchmarks/RESULTS.md (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from benchmarks._results import stamp, write_section
from benchmarks.serve_latency import (
    HOST,
    MODEL,
    TARGET_CANDIDATES,
    TARGET_P99_MS,
    TARGET_RPS,
    TRAIN,
    K,
    Server,
    _cpu_seconds,
    _machine_cpu,
    _rss_mib,
    exact_top,
    percentile,
    recall_at_k,
)

log = logging.getLogger("benchmarks.serve_scale")

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "serve_scale"
#: The simulated shop: a 1M-item catalog (most items have few or no events, as in a shop).
SHOP = {"n_items": 1_000_000, "n_users": 50_000, "n_events": 600_000, "seed": 0}
QUICK_SHOP = {"n_items": 20_000, "n_users": 2_000, "n_events": 30_000, "seed": 0}
_CANDIDATES = re.compile(rb'"candidates":(\d+)')
_ITEM = re.compile(rb'"rank":')
_WORKER = re.compile(rb"(?i)x-shoprec-worker: *(\d+)")


def artifact(quick: bool = False, rebuild: bool = False) -> Path:
    """The 1M-item artifact (``quick``: a 20k-item one), trained with retrieval files."""
    import torch

    from shoprec.artifact import is_artifact
    from shoprec.config import ExperimentConfig
    from shoprec.experiment import train_experiment
    from shoprec.models.two_tower import TwoTowerConfig
    from shoprec.recommend import build_retrieval, has_retrieval

    out = RUNS / ("quick" if quick else "sim_1m")
    if not rebuild and is_artifact(out) and has_retrieval(out):
        return out
    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = ExperimentConfig.from_dict(
        {
            "name": "serve_scale",
            "data": {"dataset": "simulated", "simulate": QUICK_SHOP if quick else SHOP},
            "split": {"kind": "time", "test_days": 14, "valid_days": 7},
            "recipe": {"name": "pairs", "n_negatives": 4},
            "tasks": ["view", "cart", "buy"],
            "model": MODEL,
            "train": {**TRAIN, "epochs": 1},
            "evaluate": {
                "protocol": "sampled",
                "bootstrap": 0,
                "max_users": 1000,
                "slices": False,
                "exposure": False,
                "baselines": False,
            },
        }
    )
    train_experiment(cfg, out, evaluate_test=False)
    log.info("trained in %.0f s", time.perf_counter() - start)
    build_retrieval(out, TwoTowerConfig(epochs=1, batch_size=2048))
    log.info("artifact with retrieval files built in %.0f s", time.perf_counter() - start)
    return out


def retrieval_info(path: Path, n_users: int = 1000, k: int = 100) -> dict[str, Any]:
    """What :func:`benchmarks.serve_latency.retrieval_recall` reports (recall@k of the served
    index against exact search for ``n_users`` known shoppers, the artifact's facts), from
    the retrieval files alone, without building a :class:`~shoprec.recommend.Recommender`
    (whose first start over an artifact without a saved new-item index builds one: minutes
    at 1M items; later starts read it)."""
    import polars as pl
    import torch

    from shoprec.artifact import Artifact
    from shoprec.recommend import Retrieval
    from shoprec.recommend.types import RecommenderConfig

    torch.set_num_threads(1)
    art = Artifact.load(path)
    retrieval = Retrieval.of_artifact(art, build=False)
    known = art.seen["user"].cast(pl.String).unique().sort().to_list()
    rng = np.random.default_rng(0)
    sample = [known[i] for i in rng.choice(len(known), min(n_users, len(known)), replace=False)]
    queries = retrieval.user_vectors(sample)
    start = time.perf_counter()
    _, found = retrieval.index.search(queries, k)
    index_ms = (time.perf_counter() - start) / len(sample) * 1000
    exact = exact_top(queries, retrieval.item_vectors, k)
    warm = art.seen["item"].cast(pl.String).unique()
    fusion = RecommenderConfig.of_artifact(art).fusion or art.scorer.target
    return {
        "recall": recall_at_k(found, exact, k),
        "index": retrieval.index.describe(),
        "index_ms": index_ms,
        "items": art.items.height,
        "users": len(known),
        "new_items": art.items.height
        - int(art.items["item"].cast(pl.String).is_in(warm.implode()).sum()),
        "tasks": list(art.scorer.tasks),
        "fusion": fusion,
        "sample_users": sample,
    }


@dataclass
class CliServer(Server):
    """:class:`benchmarks.serve_latency.Server` running the CLI a shop runs:
    ``shoprec serve ARTIFACT --workers N`` (its own session, a fresh event store)."""

    def __enter__(self) -> CliServer:
        import tempfile

        self.db = Path(tempfile.mkdtemp(prefix="shoprec_scale_")) / "events.sqlite"
        cmd = [sys.executable, "-m", "shoprec", "serve", str(self.artifact)]
        cmd += ["--workers", str(self.workers), "--port", str(self.port), "--api-key", "bench"]
        cmd += ["--db", str(self.db), "--threads", "1"]
        return self._start(cmd, {**os.environ, "OMP_NUM_THREADS": "1"})


@dataclass
class OpenLoop:
    """What an open-loop run saw."""

    latencies: list[float]  # seconds from when each answered request was due
    errors: int
    not_sent: int  # due while every connection was busy
    candidates: list[int]
    workers: dict[str, int]  # 200 answers per X-Shoprec-Worker
    statuses: dict[int, int]  # answers per HTTP status
    seconds: float
    client_cpu: float


async def _open_loop(
    port: int, paths: list[bytes], rate: float, seconds: float, connections: int
) -> OpenLoop:
    """Send ``paths`` (cycled) at ``rate`` per second for ``seconds``: request ``i`` is due
    at ``t0 + i / rate``; it goes out on an idle keep-alive connection (a new one if none is
    idle, at most ``connections``), or counts as not sent."""
    out = OpenLoop([], 0, 0, [], {}, {}, 0.0, 0.0)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    open_n = 0
    tasks: set[asyncio.Task] = set()

    async def one(path: bytes, due: float) -> None:
        nonlocal open_n
        reused = bool(idle)
        if idle:
            reader, writer = idle.pop()
        elif open_n < connections:
            open_n += 1
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                open_n -= 1
                out.errors += 1
                return
        else:
            out.not_sent += 1
            return
        while True:
            try:
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                body = await reader.readexactly(length)
                break
            except (OSError, asyncio.IncompleteReadError, AttributeError) as e:
                writer.close()
                nothing = isinstance(e, asyncio.IncompleteReadError) and not e.partial
                if reused and nothing:  # the server closed it idle (keep-alive timeout): a
                    reused = False  # GET is retried on a new connection, as HTTP clients do
                    try:
                        reader, writer = await asyncio.open_connection(HOST, port)
                        continue
                    except OSError:
                        pass
                out.errors += 1
                open_n -= 1
                return
        dt = time.perf_counter() - due
        idle.append((reader, writer))
        status = int(head[9:12])
        out.statuses[status] = out.statuses.get(status, 0) + 1
        m = _CANDIDATES.search(body)
        if status != 200 or m is None or len(_ITEM.findall(body)) < K:
            out.errors += 1
            return
        worker = _WORKER.search(head)
        name = worker.group(1).decode() if worker else "?"
        out.workers[name] = out.workers.get(name, 0) + 1
        out.candidates.append(int(m.group(1)))
        out.latencies.append(dt)

    cpu0, t0 = time.process_time(), time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = t0 + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(paths[i % len(paths)], due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    out.seconds = time.perf_counter() - t0
    out.client_cpu = time.process_time() - cpu0
    for _, writer in idle:
        writer.close()
    return out


def measure(
    path: Path,
    users: list[str],
    workers: int,
    rates: list[float],
    seconds: float,
    warmup: float,
    connections: int,
    start_timeout: float = 1800.0,
) -> list[dict[str, Any]]:
    """Start ``shoprec serve --workers N`` on ``path``, warm it up, then one open-loop
    measurement per offered rate; one row each."""
    rng = np.random.default_rng(1)
    paths = [f"/recommend/{quote(u, safe='')}?k={K}".encode() for u in rng.choice(users, 50_000)]
    start = time.perf_counter()
    rows = []
    with CliServer(path, workers, start_timeout=start_timeout) as server:
        started = time.perf_counter() - start
        asyncio.run(_open_loop(server.port, paths[::-1], min(rates) / 2, warmup, connections))
        for rate in rates:
            time.sleep(2.0)
            load1 = os.getloadavg()
            pids = server.pids()
            cpu0, (busy0, _) = _cpu_seconds(pids), _machine_cpu()
            res = asyncio.run(_open_loop(server.port, paths, rate, seconds, connections))
            server_cpu = _cpu_seconds(pids) - cpu0
            busy = _machine_cpu()[0] - busy0
            rss = _rss_mib(server.pids())
            rows.append(_row(res, workers, rate, seconds, server_cpu, busy, rss, started, load1))
    return rows


def _row(
    res: OpenLoop,
    workers: int,
    rate: float,
    seconds: float,
    server_cpu: float,
    busy: float,
    rss: float,
    started: float,
    load1: tuple[float, float, float],
) -> dict[str, Any]:
    lat = np.array(res.latencies) * 1000
    n = len(lat)
    sent = int(rate * seconds)
    row = {
        "workers": workers,
        "offered_rps": rate,
        "sent": sent - res.not_sent,
        "not_sent": res.not_sent,
        "answered_ok": n,
        "errors": res.errors + res.not_sent,
        "seconds": res.seconds,
        "rps": n / res.seconds,
        "p50_ms": percentile(lat, 50) if n else float("nan"),
        "p99_ms": percentile(lat, 99) if n else float("nan"),
        "max_ms": float(lat.max()) if n else float("nan"),
        "min_candidates": int(min(res.candidates)) if n else 0,
        "mean_candidates": float(np.mean(res.candidates)) if n else 0.0,
        "answers_per_worker": sorted(res.workers.values(), reverse=True),
        "statuses": {str(k): v for k, v in sorted(res.statuses.items())},
        "server_cpu_ms_per_request": server_cpu / max(n, 1) * 1000,
        "client_cpu_share": res.client_cpu / res.seconds,
        "others_cores": max(busy - server_cpu - res.client_cpu, 0.0) / res.seconds,
        "server_rss_mib": rss,
        "start_seconds": started,
        "load_before": list(load1),
        "load_after": list(os.getloadavg()),
    }
    log.info("%s", json.dumps(row, default=float))
    return row


def _statuses(r: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(res: dict[str, Any], command: str) -> str:
    """The RESULTS.md section."""
    info = res["info"]
    lines = [
        "## Serving at 1M items: GET /recommend/{user}?k=10 at a fixed offered rate, "
        "`shoprec serve --workers 1` and `2`",
        "",
        stamp(command),
        f"Measured {res.get('measured', 'with this section')}.",
        "",
        "Protocol: see the docstring of `benchmarks/serve_scale.py`. In short: the CLI "
        "(`shoprec serve ARTIFACT --workers N`, default limits: 4 requests at once per worker, "
        "32 queued, 503 after 50 ms in the queue) on 127.0.0.1; an open-loop asyncio client in "
        "another process sends requests at the offered rate whether or not earlier ones were "
        "answered, latency from when each was due; known shoppers drawn at random. Client and "
        f"server share this machine's {os.cpu_count()} cores with other sessions' jobs.",
        "",
        f"Artifact: MMoE ({', '.join(info['tasks'])}), fusion `{info['fusion']}`, "
        f"**{info['items']:,} items**, {info['users']:,} known shoppers, "
        f"{info['new_items']:,} items without training events; item index {info['index']}; "
        f"retrieval recall@100 against exact inner-product search (1,000 shoppers): "
        f"**{info['recall']:.4f}** ({info['index_ms']:.2f} ms per query in a batch).",
        "",
        "| workers | offered req/s | answered 200 req/s | errors (not sent; statuses) | p50 ms "
        "| p99 ms | max ms | candidates ranked (min / mean) | 200s per worker "
        "| server CPU ms/req | server RSS MiB | load avg 1/5/15 before | other jobs' cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in res["rows"]:
        lb = " / ".join(f"{x:.1f}" for x in r["load_before"])
        lines.append(
            f"| {r['workers']} | {r['offered_rps']:.0f} | {r['rps']:.0f} "
            f"| {r['errors']} ({r['not_sent']}; {_statuses(r)}) | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} "
            f"| {r['max_ms']:.0f} | {r['min_candidates']} / {r['mean_candidates']:.0f} "
            f"| {' + '.join(map(str, r['answers_per_worker']))} "
            f"| {r['server_cpu_ms_per_request']:.1f} | {r['server_rss_mib']:.0f} | {lb} "
            f"| {r['others_cores']:.2f} |"
        )
    lines += [
        "",
        f"Target: p99 < {TARGET_P99_MS:.0f} ms at >= {TARGET_RPS:.0f} req/s, 0 errors, "
        f">= {TARGET_CANDIDATES} candidates ranked by the multi-task model.",
        "",
    ]
    for r in [r for r in res["rows"] if r["offered_rps"] >= TARGET_RPS]:
        ok = (
            r["p99_ms"] < TARGET_P99_MS
            and r["rps"] >= TARGET_RPS * 0.99
            and r["errors"] == 0
            and r["min_candidates"] >= TARGET_CANDIDATES
        )
        lines.append(
            f"- {r['workers']} worker(s) at {r['offered_rps']:.0f} req/s offered: {_met(ok)} "
            f"(p99 {r['p99_ms']:.1f} ms, {r['rps']:.0f} answered req/s, {r['errors']} errors, "
            f"at least {r['min_candidates']} candidates ranked)."
        )
    low = [r for r in res["rows"] if r["offered_rps"] < TARGET_RPS]
    if low:
        lines.append(
            "- Below the target rate (context, no verdict): "
            + "; ".join(
                f"{r['workers']} worker(s) at {r['offered_rps']:.0f} req/s p50 "
                f"{r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} ms, {r['errors']} errors"
                for r in low
            )
            + "."
        )
    starts = {r["workers"]: r["start_seconds"] for r in res["rows"]}
    lines.append(
        "- Start-up, command to first answer of /health: "
        + ", ".join(f"{w} worker(s) {t:.0f} s" for w, t in sorted(starts.items()))
        + "."
    )
    lines += ["", *res.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 20k-item shop; no RESULTS.md")
    parser.add_argument("--rebuild", action="store_true", help="retrain the artifact")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rate", nargs="+", type=float, default=[300.0], help="offered req/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds (half rate)")
    parser.add_argument("--connections", type=int, default=64, help="most open connections")
    parser.add_argument("--note", action="append", default=[], help="a note for RESULTS.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write RESULTS.md again from the last results.json (with these --note lines)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.report_only:
        res = json.loads((RUNS / "results.json").read_text())
        res["notes"] = args.note or res.get("notes", [])
        (RUNS / "results.json").write_text(json.dumps(res, indent=2, default=float))
        write_section("serve_scale", report(res, res.get("command", "")))
        return
    if args.quick:
        args.seconds, args.warmup = 5.0, 2.0
    path = artifact(args.quick, args.rebuild)
    info = retrieval_info(path)
    users = info.pop("sample_users")
    log.info("%s", info)
    rows = [
        row
        for w in args.workers
        for row in measure(path, users, w, args.rate, args.seconds, args.warmup, args.connections)
    ]
    command = " ".join([".venv/bin/python -m benchmarks.serve_scale", *sys.argv[1:]])
    res = {"info": info, "rows": rows, "notes": args.note, "command": command}
    res["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / ("quick.json" if args.quick else "results.json")).write_text(
        json.dumps(res, indent=2, default=float)
    )
    text = report(res, command)
    print(text)
    if not args.quick:
        write_section("serve_scale", text)


if __name__ == "__main__":
    main()
