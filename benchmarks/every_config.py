"""Every config from the command line: each YAML in configs/ and benchmarks/configs/ is
trained, evaluated and asked for recommendations through the installed ``shoprec`` command,
each step in a fresh process, exactly as a user would run it::

    shoprec train CONFIG --output TMP/NAME --no-search --set train.epochs=1 --set ...
    shoprec evaluate TMP/NAME --json
    shoprec recommend TMP/NAME --user U -k 10 --json     (U: the user with most training events)

The overrides keep each config to a few minutes on a shared 2-core machine (one epoch, one
thread, no bootstrap, plus the per-config ones in ``QUICK``); the table says which were used.
This is a check that every config runs end to end, not a benchmark of its full settings: the
metric column is what one epoch gives, read from the test split once by ``train``, and
``evaluate`` must give the same value again from the artifact alone.

For each step it records the exit status, wall time and the child's peak resident set
(``ru_maxrss`` of the finished child from ``os.wait4``; this driver imports nothing heavy, so the
size a child inherits at fork is a few MiB).

Usage::

    .venv/bin/python -m benchmarks.every_config              # every config (about an hour)
    .venv/bin/python -m benchmarks.every_config --quick      # one config per recipe
    .venv/bin/python -m benchmarks.every_config --only sim_mmoe tmall_mmoe

Results are merged into ``runs/every_config/results.json`` (a later run replaces the rows of
the configs it ran), and the section "Every config from the CLI" of benchmarks/RESULTS.md is
written from all of them (``--no-write`` to skip). Exit status 1 when any step failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("configs", "benchmarks/configs")
OUT = ROOT / "runs" / "every_config"

#: Every config: one epoch (an upper bound: early stopping may end sooner), one torch thread
#: (the machine is shared), no bootstrap intervals.
COMMON = ("train.epochs=1", "train.threads=1", "evaluate.bootstrap=0")

#: More overrides for the configs that would still take long with COMMON alone (by file stem).
#: Amazon Sport <-> Cloth: the test ranks ~70k items for ~10k shoppers several times over
#: (slices, exposure, popularity): a seeded sample of 2,000 shoppers.
_AMAZON_SAMPLE = ("evaluate.max_users=2000",)
QUICK: dict[str, tuple[str, ...]] = {
    "amazon_cdr_history": _AMAZON_SAMPLE,
    "amazon_cdr_history_joint": _AMAZON_SAMPLE,
    "amazon_cdr_model": _AMAZON_SAMPLE,
    "amazon_cdr_neighbours": _AMAZON_SAMPLE,
}

#: ``--quick``: one config per recipe, the fastest of each.
QUICK_SET = (
    "sim_mmoe",  # pairs
    "tmall_mmoe",  # multibehavior
    "online_retail_mmoe",  # windows
    "retail_new_items",  # content
    "amazon_transfer_sport",  # cross_domain (neighbours)
    "census_mmoe",  # tabular
    "sim_demand",  # demand
)


@dataclass
class Step:
    """One command's outcome."""

    status: str = "not run"  # ok | failed (exit N) | timeout | skipped (why)
    seconds: float | None = None
    peak_mib: float | None = None
    load: float | None = None  # mean 1-minute load average while it ran (other jobs' too)
    tail: str = ""  # the last lines of its output when it failed


@dataclass
class Row:
    """One config's run."""

    config: str
    recipe: str = ""
    overrides: list[str] = field(default_factory=list)
    train: Step = field(default_factory=Step)
    evaluate: Step = field(default_factory=Step)
    recommend: Step = field(default_factory=Step)
    metric: str = ""  # the config's main test metric, e.g. "buy/hr@10 0.1234"
    evaluate_metric: str = ""  # the same metric recomputed by shoprec evaluate
    user: str | None = None
    n_recommended: int | None = None
    commit: str = ""
    finished: str = ""


def configs() -> list[Path]:
    """Every shipped config, in a stable order."""
    return [p for folder in FOLDERS for p in sorted((ROOT / folder).glob("*.yaml"))]


def run(cmd: list[str], timeout: float, env: dict[str, str]) -> tuple[Step, str]:
    """Run ``cmd`` in a fresh process; its status, wall time, peak RSS and standard output."""
    start = time.perf_counter()
    log, errors = OUT / "last_command.out", OUT / "last_command.err"
    with open(log, "w") as fh, open(errors, "w") as eh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=eh, cwd=ROOT, env=env, start_new_session=True
        )
        status = None
        loads = [os.getloadavg()[0]]
        while True:
            if len(loads) < (time.perf_counter() - start) / 5:  # one sample per 5 s
                loads.append(os.getloadavg()[0])
            pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
                proc.returncode = status  # reaped here, not by Popen
                break
            if time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: torchrun children too
                pid, raw, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                break
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    output = log.read_text(errors="replace")
    both = output + errors.read_text(errors="replace")
    step = Step(
        seconds=round(seconds, 1),
        peak_mib=round(usage.ru_maxrss / 1024, 0),
        load=round(sum(loads) / len(loads), 1),
    )
    if status is None:
        step.status = f"timeout ({timeout:.0f} s)"
    elif status == 0:
        step.status = "ok"
    else:
        step.status = f"failed (exit {status})"
    if step.status != "ok":
        step.tail = "\n".join(both.strip().splitlines()[-15:])
    return step, output


def main_metric(test: dict[str, Any]) -> tuple[str, float] | None:
    """The test metric a config is judged by: HR@k at the first cut-off of a ranking
    protocol, else the first AUC (rows) or the WAPE of the forecast units (demand)."""
    metrics = test.get("metrics") or {}
    hr = sorted((k for k in metrics if k.startswith("hr@")), key=lambda k: int(k[3:]))
    if hr:
        return f"{test.get('target', '')}/{hr[0]}".lstrip("/"), float(metrics[hr[0]])
    point = {k: v for k, v in (test.get("pointwise") or {}).items() if isinstance(v, int | float)}
    auc = [k for k in point if k.endswith("/auc")] or [k for k in point if k == "wape"]
    key = auc[0] if auc else next(iter(point), None)
    return (key, float(point[key])) if key else None


def fmt_metric(found: tuple[str, float] | None) -> str:
    return "" if found is None else f"{found[0]} {found[1]:.4f}"


def pick_user(artifact: Path, env: dict[str, str]) -> str | None:
    """The user with the most training events in the artifact (in a child process, so this
    driver stays small and the children's peak memory is their own)."""
    code = (
        "import sys, polars as pl; s = pl.read_parquet(sys.argv[1]);"
        "c = s.group_by('user').len().sort(['len', 'user'], descending=[True, False]);"
        "print(c['user'][0] if c.height else '')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(artifact / "seen.parquet")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    user = done.stdout.strip()
    return user or None


def run_config(path: Path, timeout: float, env: dict[str, str], shoprec: list[str]) -> Row:
    """Train, evaluate and recommend one config."""
    import yaml

    rel = str(path.relative_to(ROOT))
    if not path.exists():  # deleted while the run went on
        return Row(config=rel, train=Step(status="skipped (no such file)"))
    raw = yaml.safe_load(path.read_text()) or {}
    recipe = raw.get("recipe", {})
    row = Row(config=rel, recipe=recipe.get("name", "pairs") if isinstance(recipe, dict) else "")
    row.overrides = [*COMMON, *QUICK.get(path.stem, ())]
    art = OUT / "artifacts" / path.parent.relative_to(ROOT) / path.stem
    shutil.rmtree(art, ignore_errors=True)
    shutil.rmtree(art.with_name(art.name + ".checkpoints"), ignore_errors=True)
    cmd = [*shoprec, "train", rel, "--output", str(art), "--no-search", "--restart"]
    cmd += [a for o in row.overrides for a in ("--set", o)]
    print(f"== {rel}: {' '.join(cmd[len(shoprec) :])}", flush=True)
    row.train, _ = run(cmd, timeout, env)
    print(f"   train {row.train.status} in {row.train.seconds} s", flush=True)
    if row.train.status != "ok":
        print(row.train.tail, flush=True)
        row.evaluate.status = row.recommend.status = "skipped (train failed)"
        return row
    metrics = json.loads((art / "metrics.json").read_text())
    row.metric = fmt_metric(main_metric(metrics.get("test") or {}))

    row.evaluate, output = run([*shoprec, "evaluate", str(art), "--json"], timeout, env)
    if row.evaluate.status == "ok":
        try:
            again = json.loads(output[output.index("{") :])
            row.evaluate_metric = fmt_metric(main_metric(again))
        except ValueError:
            row.evaluate.status = "failed (no JSON)"
    print(f"   evaluate {row.evaluate.status}: {row.evaluate_metric}", flush=True)

    manifest = json.loads((art / "manifest.json").read_text())
    if not manifest.get("items"):
        row.recommend.status = "skipped (scores rows, not items)"
        return row
    row.user = pick_user(art, env)
    if row.user is None:
        row.recommend.status = "skipped (no training events)"
        return row
    cmd = [*shoprec, "recommend", str(art), "--user", row.user, "-k", "10", "--json"]
    row.recommend, output = run(cmd, timeout, env)
    if row.recommend.status == "ok":
        try:
            row.n_recommended = len(json.loads(output[output.index("[") :]))
        except ValueError:
            row.recommend.status = "failed (no JSON)"
    print(f"   recommend {row.recommend.status}: {row.n_recommended} items", flush=True)
    return row


STEPS = ("train", "evaluate", "recommend")
#: Recipes whose test rows are scored once by train and kept in the artifact (evaluate shows
#: them again; it has no item ranking to redo).
POINTWISE = ("tabular", "demand")


def load_rows() -> dict[str, dict[str, Any]]:
    path = OUT / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "configs", "benchmarks/configs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return done.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")


def _cell(step: dict[str, Any]) -> str:
    if step["status"] != "ok":
        return step["status"]
    load = f" (load {step['load']:.0f})" if step.get("load") is not None else ""
    return f"ok {step['seconds']:.0f} s{load}, {step['peak_mib']:.0f} MiB"


def section(rows: dict[str, dict[str, Any]], command: str, load: str) -> str:
    """The RESULTS.md section from every recorded row."""
    from benchmarks._results import machine

    ordered = [rows[k] for k in sorted(rows, key=lambda k: (not k.startswith("configs/"), k))]
    ok = sum(
        r["train"]["status"] == "ok"
        and r["evaluate"]["status"] == "ok"
        and r["recommend"]["status"].split()[0] in ("ok", "skipped")
        for r in ordered
    )
    commits = sorted({r["commit"] for r in ordered})
    dates = sorted(r["finished"] for r in ordered)
    lines = [
        "## Every config from the CLI",
        "",
        "Each YAML in configs/ and benchmarks/configs/ trained, evaluated and asked for ten "
        "items through the installed command, each step a fresh process "
        "(`benchmarks/every_config.py`):",
        "",
        "```",
        "shoprec train CONFIG --output TMP --no-search --restart --set train.epochs=1 "
        "--set train.threads=1 --set evaluate.bootstrap=0 [--set ...]",
        "shoprec evaluate TMP --json",
        "shoprec recommend TMP --user U -k 10 --json   # U: the user with most training events",
        "```",
        "",
        "A check that every config runs from the front door, not a benchmark: one epoch (an "
        "upper bound; early stopping can end sooner), one torch thread, no bootstrap and no "
        "search, so the metric is what that short run reaches on the test split, read once "
        "by `train`; `shoprec evaluate` rebuilds the split from the artifact alone and must "
        "give the same value (column *evaluate*; *stored*: the tabular and demand recipes "
        "score test rows, not item rankings, and evaluate shows the scores train kept). "
        "The full settings and the peers are in each "
        "benchmark's own section. Time and peak RSS are per step (wall clock, `ru_maxrss` of "
        "the finished child); *load* is the mean 1-minute load average while the step ran: "
        "the 2 cores were shared with other engineers' jobs, so the times are inflated by "
        "about that factor over 1 and are no speed measurement. `recommend` includes building "
        "the retrieval files on first use where the artifact has none (a two-tower model is "
        "trained then: most of the time of the slow ones). Title vectors come from the "
        "shared cache (`$SHOPREC_CACHE` or ~/.cache/shoprec) when an earlier run made them.",
        "",
        f"- command: `{command}`",
        f"- date: {dates[0][:16]} .. {dates[-1][:16]} UTC" if dates else "- date: -",
        f"- machine: {machine()}; {load}",
        f"- code: commit {', '.join(commits)}",
        f"- result: {ok} of {len(ordered)} configs ran train, evaluate and recommend",
        "",
        "| config | recipe | extra overrides | train | test metric (train) | evaluate | "
        "evaluate's metric | recommend (k=10) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ordered:
        extra = [o for o in r["overrides"] if o not in COMMON]
        rec = r["recommend"]
        rec_cell = _cell(rec) + (f", {r['n_recommended']} items" if rec["status"] == "ok" else "")
        agree = "" if not r["evaluate_metric"] else " (same)"
        if r["evaluate_metric"] and r["metric"] != r["evaluate_metric"]:
            agree = " (differs)"
        if r["evaluate_metric"] and r["recipe"] in POINTWISE:
            agree = " (stored)"
        lines.append(
            f"| {r['config']} | {r['recipe']} | {'<br>'.join(extra) or '-'} | "
            f"{_cell(r['train'])} | {r['metric'] or '-'} | {_cell(r['evaluate'])} | "
            f"{r['evaluate_metric'] or '-'}{agree} | {rec_cell} |"
        )
    failed = [r for r in ordered if any(r[s]["tail"] for s in ("train", "evaluate", "recommend"))]
    for r in failed:
        for s in ("train", "evaluate", "recommend"):
            if r[s]["tail"]:
                last = r[s]["tail"].strip().splitlines()[-1]
                lines.append(f"\n- {r['config']} {s}: `{last[:300]}`")
    return "\n".join(lines) + "\n"


def main() -> int:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("::")[0])
    parser.add_argument("--quick", action="store_true", help="one config per recipe")
    parser.add_argument("--only", nargs="*", help="config file stems (e.g. sim_mmoe tmall)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per step")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    parser.add_argument("--write-only", action="store_true", help="run nothing, only write")
    parser.add_argument("--keep", action="store_true", help="keep the artifacts")
    parser.add_argument("--out", type=Path, default=OUT, help="artifacts, logs, results.json")
    parser.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="other runs' results.json to add"
    )
    args = parser.parse_args()
    OUT = args.out.resolve()
    chosen = configs()
    if args.only:
        unknown = set(args.only) - {p.stem for p in chosen}
        if unknown:
            parser.error(f"no config named {sorted(unknown)}; have {[p.stem for p in chosen]}")
        chosen = [p for p in chosen if p.stem in args.only]
    elif args.quick:
        chosen = [p for p in chosen if p.stem in QUICK_SET]
    if args.write_only:
        chosen = []
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    shoprec = [str(Path(sys.executable).with_name("shoprec"))]
    if not Path(shoprec[0]).exists():
        shoprec = [sys.executable, "-m", "shoprec"]
    code = commit()
    failures = 0
    for path in chosen:
        row = run_config(path, args.timeout, env, shoprec)
        row.commit = code
        row.finished = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
        rows = load_rows()  # read again: replace this config's row only
        rows[row.config] = asdict(row)
        (OUT / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        failures += any(
            s.status.split()[0] not in ("ok", "skipped")
            for s in (row.train, row.evaluate, row.recommend)
        )
        if not args.keep:
            art = OUT / "artifacts" / path.parent.relative_to(ROOT) / path.stem
            shutil.rmtree(art, ignore_errors=True)
    rows = load_rows()
    for other in args.merge:
        rows.update(json.loads(other.read_text()))
    if not args.no_write:
        from benchmarks._results import write_section

        names = [str(p.relative_to(ROOT)) for p in configs()]
        missing = [n for n in names if n not in rows]
        rows = {k: v for k, v in rows.items() if k in names}  # deleted configs go
        loads = [r[s]["load"] for r in rows.values() for s in STEPS if r[s].get("load")]
        load = (
            f"1-minute load average {min(loads):.0f} to {max(loads):.0f} during the steps "
            f"(mean {sum(loads) / len(loads):.1f}) on {os.cpu_count()} cores"
            if loads
            else "load average not recorded"
        )
        text = section(rows, ".venv/bin/python -m benchmarks.every_config", load)
        if missing:
            text += f"\nNot run yet: {', '.join(missing)}.\n"
        write_section("every_config", text)
    print(f"{failures} of {len(chosen)} configs failed a step", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
