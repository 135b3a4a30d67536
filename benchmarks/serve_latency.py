"""Serving benchmark: latency and throughput of ``GET /recommend/{user}?k=10`` over HTTP.

Usage: ``python -m benchmarks.serve_latency [--quick] [--rebuild] [--concurrency 1 2 4 8]
[--workers 1 2] [--quiet-load 2.0]``

Protocol:

* Two artifacts, trained here once (and reused from ``runs/serve_latency/`` afterwards; the
  benchmark is about serving, so the training is small and fast): the ``pairs`` recipe
  (MMoE, buy and return, buy ranks) on UCI Online Retail through the front door
  (:func:`shoprec.experiment.train_experiment`; time split, last 30 days test, 30 days
  before valid, 2 epochs), and the same recipe (view, cart, buy) on a simulated shop with a
  100,000-item catalog (``simulate_shop(n_items=100_000, n_users=20_000,
  n_events=300_000)``). Each gets its two-tower model, item index and co-occurrences from
  :func:`~shoprec.recommend.build_retrieval` (built from the artifact's item table and
  training events only).
* Retrieval recall@100: for 1,000 known shoppers (seeded draw), the 100 items the served
  index returns for their two-tower vector against the exact top 100 by inner product over
  the same item vectors (NumPy, float32). 1.0 means the index loses nothing.
* The server is a subprocess: uvicorn on 127.0.0.1 serving :func:`shoprec.serve.create_app`
  with the default :class:`~shoprec.recommend.RecommenderConfig` (which ranks at least 500
  candidates with the artifact's scorer), one torch thread per worker, no access log,
  httptools and uvloop, in its own session (as a service runs). One and two uvicorn
  workers are measured, each at concurrency 1, 2, 4 and 8.
* The load generator is this process: a small asyncio HTTP/1.1 client (keep-alive, one
  connection per concurrent stream) at a fixed concurrency, each request for a known
  shopper drawn at random (seeded). A warm-up (500 requests) is not counted; then it sends
  at most ``--requests`` requests or runs at most ``--seconds``, whichever ends first.
  Latency is measured by the client, from writing the request to reading the last byte.
  Errors are non-200 answers, broken connections, and lists with fewer than 10 items.
* The client and the server share the machine's 2 cores, so the client's own CPU time is
  reported, and the server's (all its processes). The 1-minute load average is read
  before each measurement, and the CPU that other processes used during it is measured
  (``/proc/stat`` busy time less the server's and the client's). ``--quiet-load`` waits
  for a quieter machine first.

Writes the ``serve_latency`` section of benchmarks/RESULTS.md (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import numpy as np

from benchmarks._results import stamp, write_section

log = logging.getLogger("benchmarks.serve_latency")

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "serve_latency"
HOST = "127.0.0.1"
K = 10
#: Ranking model sizes of both artifacts.
MODEL = {
    "name": "mmoe",
    "embedding_dim": 16,
    "config": {"n_experts": 4, "expert_dims": [64], "tower_dims": [32]},
}
TRAIN = {
    "epochs": 2,
    "batch_size": 4096,
    "lr": 0.003,
    "seed": 0,
    "patience": 1,
    "progress": False,
    "threads": 1,
}
#: The experiment config sections of each catalog (with MODEL and TRAIN).
CATALOGS: dict[str, dict[str, Any]] = {
    "online_retail": {
        "data": {"dataset": "online_retail"},
        "split": {"kind": "time", "test_days": 30, "valid_days": 30},
        "recipe": {"name": "pairs", "n_negatives": 4},
        "tasks": ["buy", "return"],
        "evaluate": {"target": "buy", "bootstrap": 0, "max_users": 2000},
    },
    "sim_100k": {
        "data": {
            "dataset": "simulated",
            "simulate": {"n_items": 100_000, "n_users": 20_000, "n_events": 300_000, "seed": 0},
        },
        "split": {"kind": "time", "test_days": 14, "valid_days": 7},
        "recipe": {"name": "pairs", "n_negatives": 4},
        "tasks": ["view", "cart", "buy"],
        "evaluate": {"bootstrap": 0, "max_users": 2000},
    },
}
TARGET_P99_MS = 20.0
TARGET_RPS = 300.0
TARGET_CANDIDATES = 500
_CANDIDATES = re.compile(rb'"candidates":(\d+)')
_ITEM = re.compile(rb'"rank":')


# ------------------------------------------------------------------------ measurements
def percentile(values: np.ndarray | list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (an observed value): the smallest value with at
    least ``q`` percent of the values at or below it.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.0
        >>> percentile(list(range(1, 101)), 99)
        99
    """
    v = np.sort(np.asarray(values))
    if len(v) == 0:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    rank = int(np.ceil(q / 100 * len(v)))
    return v[max(rank, 1) - 1].item()


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of each row's exact top ``k`` that ``found`` (its top ``k``) contains.

    Example:
        >>> recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [4, 5, 6]]), 3)
        0.8333333333333334
    """
    found, exact = np.asarray(found)[:, :k], np.asarray(exact)[:, :k]
    hits = [len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / k)


def exact_top(queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 64) -> np.ndarray:
    """``(Q, k)`` indices of the largest inner products, best first (exhaustive; ``chunk``
    queries at a time, so 1M items need ``chunk`` x 4 MB, not Q x 4 MB)."""
    vectors = vectors.astype(np.float32)
    out = []
    for i in range(0, len(queries), chunk):
        sims = queries[i : i + chunk].astype(np.float32) @ vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        out.append(np.take_along_axis(top, order, 1))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


# ----------------------------------------------------------------------------- artifacts
def artifact(name: str, rebuild: bool = False) -> Path:
    """The artifact of catalog ``name`` (trained, with retrieval files), built if missing."""
    import torch

    from shoprec.artifact import is_artifact
    from shoprec.config import ExperimentConfig
    from shoprec.experiment import train_experiment
    from shoprec.models.two_tower import TwoTowerConfig
    from shoprec.recommend import build_retrieval, has_retrieval

    out = RUNS / name
    if not rebuild and is_artifact(out) and has_retrieval(out):
        return out
    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = ExperimentConfig.from_dict(
        {"name": f"serve_{name}", **CATALOGS[name], "model": MODEL, "train": TRAIN}
    )
    train_experiment(cfg, out)
    build_retrieval(out, TwoTowerConfig(epochs=2, batch_size=2048))
    log.info("%s artifact built in %.0f s", name, time.perf_counter() - start)
    return out


def retrieval_recall(path: Path, n_users: int = 1000, k: int = 100) -> dict[str, Any]:
    """Recall@k of the served item index against exact search, and facts of the artifact."""
    import torch

    from shoprec.recommend import Recommender

    torch.set_num_threads(1)
    rec = Recommender.from_artifact(path, build=False)
    rng = np.random.default_rng(0)
    users = rng.choice(len(rec.known_users), min(n_users, len(rec.known_users)), replace=False)
    queries = rec.merchant.user_vectors()[users]
    start = time.perf_counter()
    _, found = rec.retrieval.index.search(queries, k)
    index_ms = (time.perf_counter() - start) / len(users) * 1000
    exact = exact_top(queries, rec.retrieval.item_vectors, k)
    sample = [rec.known_users[i] for i in users]
    return {
        "recall": recall_at_k(found, exact, k),
        "index": rec.retrieval.index.describe(),
        "index_ms": index_ms,
        "items": rec.n_items,
        "users": len(rec.known_users),
        "new_items": int(rec.catalog.is_new.sum()),
        "tasks": rec.tasks,
        "fusion": rec.fusion.formula(),
        "sample_users": sample,
    }


# -------------------------------------------------------------------------------- server
def make_app() -> Any:
    """The app a uvicorn worker serves (artifact and database from the environment)."""
    import torch

    from shoprec.serve import ServeConfig, create_app

    torch.set_num_threads(int(os.environ.get("SHOPREC_BENCH_THREADS", "1")))
    logging.getLogger("shoprec").setLevel(logging.WARNING)
    return create_app(
        ServeConfig(
            os.environ["SHOPREC_BENCH_ARTIFACT"],
            db=os.environ["SHOPREC_BENCH_DB"],
            api_key="bench",
        )
    )


def _serve(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "benchmarks.serve_latency:make_app",
        factory=True,
        host=HOST,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        http=os.environ.get("SHOPREC_BENCH_HTTP", "auto"),  # httptools when installed
        loop=os.environ.get("SHOPREC_BENCH_LOOP", "auto"),  # uvloop when installed
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / tick


def _machine_cpu() -> tuple[float, float]:
    """Busy and stolen CPU seconds of the whole machine since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def wait_for_quiet(max_load: float, max_seconds: float) -> float:
    """Wait until the 1-minute load average is at most ``max_load`` (or ``max_seconds``
    have passed); returns the load average then."""
    deadline = time.monotonic() + max_seconds
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


@dataclass
class Server:
    """A uvicorn subprocess serving one artifact."""

    artifact: Path
    workers: int
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen | None = None
    db: Path | None = None
    start_timeout: float = 300.0  # seconds to wait for /health

    def __enter__(self) -> Server:
        self.db = Path(tempfile.mkdtemp(prefix="shoprec_bench_")) / "events.sqlite"
        env = {
            **os.environ,
            "SHOPREC_BENCH_ARTIFACT": str(self.artifact),
            "SHOPREC_BENCH_DB": str(self.db),
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, "-m", "benchmarks.serve_latency", "--serve", str(self.port)]
        cmd += ["--workers", str(self.workers)]
        return self._start(cmd, env)

    def _start(self, cmd: list[str], env: dict[str, str]) -> Self:
        """Run ``cmd`` and wait until its ``/health`` answers (``start_timeout`` at most)."""
        # Its own session, as a service would run: with autogroup scheduling the kernel then
        # shares the CPU between it and the load generator as two jobs, not one.
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the server did not start in {self.start_timeout:.0f} s")

    def pids(self) -> list[int]:
        assert self.proc is not None
        return _tree(self.proc.pid)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.db is not None:  # the store, its WAL and lock, a worker metrics folder
            shutil.rmtree(self.db.parent, ignore_errors=True)


# ----------------------------------------------------------------------------- load
@dataclass
class LoadResult:
    latencies: np.ndarray  # seconds, one per answered request
    errors: int
    candidates: np.ndarray  # per answered request
    seconds: float
    client_cpu: float


async def _load(
    port: int,
    paths: list[bytes],
    concurrency: int,
    n_requests: int,
    seconds: float,
    check: bool = True,
) -> LoadResult:
    """Send ``paths`` (cycled) over ``concurrency`` keep-alive connections until
    ``n_requests`` are sent or ``seconds`` have passed. With ``check``, an answer must be a
    recommendation list of ``K`` items to count as a success."""
    lat: list[float] = []
    cands: list[int] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def stream() -> None:
        nonlocal sent, errors
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while sent < n_requests and time.perf_counter() < deadline:
                path = paths[sent % len(paths)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                    body = await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, AttributeError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
                    continue
                dt = time.perf_counter() - t0
                if head[9:12] != b"200":
                    errors += 1
                    continue
                if check:
                    m = _CANDIDATES.search(body)
                    if m is None or len(_ITEM.findall(body)) < K:
                        errors += 1
                        continue
                    cands.append(int(m.group(1)))
                lat.append(dt)
        finally:
            writer.close()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(stream() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return LoadResult(np.array(lat), errors, np.array(cands, dtype=np.int64), wall, cpu)


def load(
    port: int,
    paths: list[bytes],
    concurrency: int,
    n_requests: int,
    seconds: float,
    check: bool = True,
) -> LoadResult:
    """Run :func:`_load` on a fresh event loop."""
    return asyncio.run(_load(port, paths, concurrency, n_requests, seconds, check))


# ------------------------------------------------------------------------------- main
def measure(
    path: Path,
    users: list[str],
    workers: int,
    concurrencies: list[int],
    n_requests: int,
    seconds: float,
    warmup: int,
) -> list[dict[str, Any]]:
    """Start a server on ``path`` and measure each concurrency; one row per concurrency."""
    rng = np.random.default_rng(1)
    paths = [f"/recommend/{quote(u, safe='')}?k={K}".encode() for u in rng.choice(users, 20_000)]
    rows = []
    with Server(path, workers) as server:
        load(server.port, paths[::-1], max(concurrencies), warmup, 120)
        for conc in concurrencies:
            time.sleep(1.0)
            load1 = os.getloadavg()[0]
            pids = server.pids()
            cpu0, (busy0, steal0) = _cpu_seconds(pids), _machine_cpu()
            res = load(server.port, paths, conc, n_requests, seconds)
            server_cpu = _cpu_seconds(pids) - cpu0
            busy, steal = (b - a for a, b in zip((busy0, steal0), _machine_cpu(), strict=True))
            n = len(res.latencies)
            row = {
                "workers": workers,
                "concurrency": conc,
                "requests": n,
                "errors": res.errors,
                "seconds": res.seconds,
                "rps": n / res.seconds,
                "p50_ms": percentile(res.latencies, 50) * 1000 if n else float("nan"),
                "p99_ms": percentile(res.latencies, 99) * 1000 if n else float("nan"),
                "mean_ms": float(res.latencies.mean() * 1000) if n else float("nan"),
                "min_candidates": int(res.candidates.min()) if n else 0,
                "mean_candidates": float(res.candidates.mean()) if n else 0.0,
                "client_cpu_s": res.client_cpu,
                "client_cpu_share": res.client_cpu / res.seconds,
                "server_cpu_s": server_cpu,
                "server_cpu_ms_per_request": server_cpu / max(n, 1) * 1000,
                "server_rss_mib": _rss_mib(server.pids()),
                "load1_before": load1,
                # CPU that other processes used meanwhile, in cores (busy time of the whole
                # machine minus the server's and this process's), and time stolen by the host
                "others_cores": max(busy - server_cpu - res.client_cpu, 0.0) / res.seconds,
                "steal_cores": steal / res.seconds,
            }
            log.info("%s", json.dumps({k: v for k, v in row.items()}, default=float))
            rows.append(row)
    return rows


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(results: dict[str, Any], command: str) -> str:
    """The RESULTS.md section."""
    lines = [
        "## Serving latency: GET /recommend/{user}?k=10 over HTTP",
        "",
        stamp(command),
        "Protocol: see the docstring of `benchmarks/serve_latency.py`. In short: uvicorn "
        "subprocess on 127.0.0.1 (default recommender config, 1 torch thread per worker, no "
        "access log), an asyncio HTTP/1.1 keep-alive load generator in another process at a "
        "fixed concurrency, known shoppers drawn at random, warm-up not counted, latency "
        "measured by the client. Client and server share the same 2 cores. "
        + results["shared_note"],
        "",
    ]
    for name, res in results["catalogs"].items():
        info = res["info"]
        lines += [
            f"### {name}: {info['items']:,} items, {info['users']:,} known shoppers",
            "",
            f"Measured {res.get('measured', 'with the rest of this section')}.",
            "",
            f"MMoE ({', '.join(info['tasks'])}), fusion `{info['fusion']}`; "
            f"{info['new_items']:,} items without training events. Item index: "
            f"{info['index']}; retrieval recall@100 against exact inner-product search over "
            f"the same item vectors (1,000 shoppers): **{info['recall']:.4f}** "
            f"({info['index_ms']:.2f} ms per query in a batch).",
            "",
            "| workers | concurrency | requests | errors | req/s | p50 ms | p99 ms | mean ms "
            "| candidates ranked (min / mean) | server CPU ms/req | client CPU share "
            "| server RSS MiB | load avg 1 min before | other jobs' CPU (cores) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            lines.append(
                f"| {r['workers']} | {r['concurrency']} | {r['requests']:,} | {r['errors']} "
                f"| {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_ms']:.1f} "
                f"| {r['min_candidates']} / {r['mean_candidates']:.0f} "
                f"| {r['server_cpu_ms_per_request']:.2f} | {r['client_cpu_share']:.0%} "
                f"| {r['server_rss_mib']:.0f} | {r['load1_before']:.2f} "
                f"| {r['others_cores']:.2f} |"
            )
        lines.append("")
    lines += [
        "### Targets",
        "",
        f"Targets: p99 < {TARGET_P99_MS:.0f} ms and >= {TARGET_RPS:.0f} req/s in the same run, "
        f"0 errors, >= {TARGET_CANDIDATES} candidates ranked by the multi-task model.",
        "",
    ]
    for name, res in results["catalogs"].items():
        rows = res["rows"]
        both = [r for r in rows if _all_targets(r)]
        fast = min(rows, key=lambda r: r["p99_ms"])
        busy = max(rows, key=lambda r: r["rps"])
        lines.append(
            f"- {name}: all targets at once {_met(bool(both))}"
            + (f" (e.g. {both[0]['workers']} worker(s), concurrency {both[0]['concurrency']})"
               if both else "")
            + f". Lowest p99 {fast['p99_ms']:.1f} ms ({fast['workers']} worker(s), "
            f"concurrency {fast['concurrency']}, {fast['rps']:.0f} req/s): p99 target "
            f"{_met(fast['p99_ms'] < TARGET_P99_MS)}. Most req/s {busy['rps']:.0f} "
            f"({busy['workers']} worker(s), concurrency {busy['concurrency']}, p99 "
            f"{busy['p99_ms']:.1f} ms): throughput target {_met(busy['rps'] >= TARGET_RPS)}. "
            f"Errors: {sum(r['errors'] for r in rows)} in all runs "
            f"{_met(all(r['errors'] == 0 for r in rows))}. Candidates ranked by MMoE: at least "
            f"{min(r['min_candidates'] for r in rows)} in every request "
            f"{_met(all(r['min_candidates'] >= TARGET_CANDIDATES for r in rows))}."
        )  # fmt: skip
    lines += ["", *results.get("notes", [])]
    return "\n".join(lines) + "\n"


def _all_targets(r: dict[str, Any]) -> bool:
    return (
        r["p99_ms"] < TARGET_P99_MS
        and r["rps"] >= TARGET_RPS
        and r["errors"] == 0
        and r["min_candidates"] >= TARGET_CANDIDATES
    )


def notes(results: dict[str, Any]) -> list[str]:
    """What the tables imply, for the reader (derived numbers are marked as such)."""
    out = ["Notes:", ""]
    for name, res in results["catalogs"].items():
        rows = res["rows"]
        cpu = min(r["server_cpu_ms_per_request"] for r in rows)
        client = min(r["client_cpu_s"] / max(r["requests"], 1) * 1000 for r in rows)
        out.append(
            f"- {name}: the server spent {cpu:.2f} ms of CPU per request at best (all "
            f"processes; the client {client:.2f} ms). *Derived, not measured*: with a core to "
            f"itself one worker could answer at most {1000 / cpu:.0f} req/s, and two workers "
            f"with both cores (less the client's share) at most {2000 / (cpu + client):.0f}."
        )
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        autogroup = False
    if autogroup:
        out.append(
            "- This kernel schedules by autogroup (`kernel.sched_autogroup_enabled = 1`): CPU "
            "time is shared between sessions first, so other sessions' jobs running at nice 10 "
            "still take their full share from a benchmark at nice 0. The 'other jobs' CPU' "
            "column is what they took during each run."
        )
    out.append(
        "- Latency grows with concurrency once the server is saturated (queueing: about "
        "concurrency / throughput); concurrency 1 shows the latency of one request alone."
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs; no RESULTS.md")
    parser.add_argument("--rebuild", action="store_true", help="retrain the artifacts")
    parser.add_argument("--catalogs", nargs="+", default=list(CATALOGS), choices=list(CATALOGS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=10_000, help="most requests per run")
    parser.add_argument("--seconds", type=float, default=25.0, help="most seconds per run")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=None,
        help="before each catalog, wait until the 1-min load average is at most this",
    )
    parser.add_argument("--quiet-wait", type=float, default=600, help="most seconds to wait")
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="keep the last results of the catalogs not named in --catalogs",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: run a server
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.workers[0])
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.quick:
        args.requests, args.seconds, args.warmup = 1000, 5.0, 200
    results: dict[str, Any] = {"catalogs": {}}
    saved = RUNS / "results.json"
    if args.keep_others and saved.exists():  # rerun some catalogs, keep the others' rows
        old = json.loads(saved.read_text())["catalogs"]
        results["catalogs"] = {k: v for k, v in old.items() if k not in args.catalogs}
    for name in args.catalogs:
        path = artifact(name, args.rebuild)
        info = retrieval_recall(path)
        users = info.pop("sample_users")
        log.info("%s: %s", name, info)
        rows = []
        if args.quiet_load is not None:
            log.info("load average now %.2f", wait_for_quiet(args.quiet_load, args.quiet_wait))
        for workers in args.workers:
            rows += measure(
                path, users, workers, args.concurrency, args.requests, args.seconds, args.warmup
            )
        when = time.strftime("%Y-%m-%d %H:%M")
        results["catalogs"][name] = {"info": info, "rows": rows, "measured": when}
    results["catalogs"] = {k: results["catalogs"][k] for k in CATALOGS if k in results["catalogs"]}
    rows = [r for c in results["catalogs"].values() for r in c["rows"]]
    loads = [r["load1_before"] for r in rows]
    others = [r["others_cores"] for r in rows]
    results["shared_note"] = (
        f"**The machine was shared**: other jobs (model training by other sessions) used "
        f"{min(others):.2f} to {max(others):.2f} of the 2 cores during the measurements, and "
        f"the 1-minute load average before them was {min(loads):.2f} to {max(loads):.2f} "
        "(it includes this benchmark's previous run)."
        if max(others) > 0.1
        else f"No other job used the machine meanwhile (at most {max(others):.2f} cores); "
        f"load average before the runs {min(loads):.2f} to {max(loads):.2f}."
    )
    results["notes"] = notes(results)
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "results.json").write_text(json.dumps(results, indent=2, default=float))
    command = " ".join([".venv/bin/python -m benchmarks.serve_latency", *sys.argv[1:]])
    text = report(results, command)
    print(text)
    if not args.quick:
        write_section("serve_latency", text)


if __name__ == "__main__":
    main()
