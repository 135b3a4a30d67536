"""Census-income (KDD) benchmark: shoprec's models beside torch-rechub's and DeepCTR-Torch's.

Run::

    .venv/bin/python -m benchmarks.census [--seeds 0 1 2] [--quick] [--threads 1]

What it does, per seed ``S`` of ``--seeds``:

1. loads ``../shared/data/census_income`` and splits and encodes it as ``shoprec train
   configs/census_mmoe.yaml`` does, with the split seed set to ``S``: the ``tabular``
   recipe's ``prepare`` (:mod:`shoprec.recipes.tabular`: a seeded 80/10/10 split, the same
   as ``census_income.load(split_seed=S)``, and an :class:`~shoprec.data.encode.Encoder`
   fitted on the train rows only), and writes the encoded split to one npz (the format of
   :mod:`benchmarks.peers_census`). Tasks: income > 50K and never married; marital status is
   not a feature; the census ``instance_weight`` is not used by anyone;
2. runs every (library, model) on that npz, each in its own process (so peak RSS and thread
   settings are per run): ours through :mod:`benchmarks.ours_census` with one config of
   ``configs/census_*.yaml`` each (the recipe's model, loop and test scores, as ``shoprec
   train`` runs them), the peers through :mod:`benchmarks.peers_census` with
   their dimensions read from ``configs/census_mmoe.yaml`` and ``configs/census_ple.yaml``
   (embedding 16, MMoE 8 experts of [64], PLE one level of 4 experts per task + 4 shared,
   towers [32], batch 1024, Adam 1e-3, at most 20 epochs, early stopping on the mean
   validation AUC with patience 2, best weights restored, test read once). Our models'
   own options (BatchNorm in the towers, the embeddings' init std) are set in their YAMLs,
   chosen on the validation AUC; they change no dimension.

Then a separate timing phase runs the MMoEs alone (ours, ours without the folded first layer,
torch-rechub's, DeepCTR-Torch's) for ``--timing-epochs`` epochs each, in ``--timing-rounds``
interleaved rounds (the order rotates each round), all with the same ``--threads``, and takes
medians of the training throughput, by wall clock and by process CPU time (this machine may be
shared; the load average is recorded before every run).

Finally it writes the ``census`` section of ``benchmarks/RESULTS.md`` (not with ``--quick``
or ``--no-write``) and a ``summary.json`` beside the per-run JSONs in ``--out-dir``.

ESMM and AITM are not run: both model a conversion funnel (a later step can only happen
after an earlier one: ESMM trains ``p(click and buy) = pCTR * pCVR``, AITM penalises a later
step scored above an earlier one), while income > 50K and never married are two independent
labels of the same person, with no order between them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import stamp, write_section

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
TASKS = ("income", "never_married")
TASK_TITLES = {"income": "income > 50K", "never_married": "never married"}

#: Our rows: label -> YAML config. MMoE first (its config sets the peers' MMoE dims).
OURS: dict[str, str] = {
    "mmoe": "census_mmoe.yaml",
    "ple": "census_ple.yaml",
    "shared_bottom": "census_shared_bottom.yaml",
    "single_task": "census_single_task.yaml",
    "mmoe + uncertainty": "census_mmoe_uncertainty.yaml",
    "mmoe + gradnorm": "census_mmoe_gradnorm.yaml",
    "mmoe + pcgrad": "census_mmoe_pcgrad.yaml",
}
PEERS: list[tuple[str, str]] = [
    ("torch_rechub", "mmoe"),
    ("torch_rechub", "ple"),
    ("deepctr", "mmoe"),
    ("deepctr", "ple"),
]
LIB_TITLES = {
    "shoprec": "shoprec (ours)",
    "torch_rechub": "torch-rechub",
    "deepctr": "DeepCTR-Torch",
}


# --------------------------------------------------------------------------- data


def load_ours(name: str, **values: Any) -> Any:
    """One of our configs (``configs/census_*.yaml``), typed; ``values`` are dotted settings
    to replace, e.g. ``{"split.seed": 1}``."""
    from shoprec.config import load_config

    cfg = load_config(CONFIGS / name)
    return cfg.with_values(values) if values else cfg


def _data_settings(cfg: Any) -> dict[str, Any]:
    """What decides the encoded arrays: data, split, recipe options, tasks, embedding size."""
    d = cfg.to_dict()
    return {k: d.get(k) for k in ("data", "split", "recipe", "tasks")}


def prepare(seed: int, out_dir: Path, rows: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Load, split with ``seed`` and encode on train only, by the ``tabular`` recipe of
    ``census_mmoe.yaml`` (the path ``shoprec train`` takes); write the npz the runners read.

    Every config of :data:`OURS` must read the data alike (checked), since all runs share
    these arrays. ``rows`` keeps only the first rows before the split (a smoke test).
    """
    import dataclasses

    from shoprec import recipes
    from shoprec.experiment import load_dataset

    cfg = load_ours(OURS["mmoe"], **{"split.seed": seed})
    for name in OURS.values():
        if _data_settings(load_ours(name, **{"split.seed": seed})) != _data_settings(cfg):
            raise SystemExit(f"{name} reads the data unlike {OURS['mmoe']}; they share arrays")
    recipe = recipes.get(cfg.recipe.name)(cfg)
    ds = load_dataset(cfg.data, tabular=True)
    if rows is not None:
        ds = dataclasses.replace(ds, frame=ds.frame.head(rows))
    data = recipe.prepare(ds, None)
    tasks = [t.name for t in data.tasks]
    if tuple(tasks) != TASKS:
        raise SystemExit(f"the configs' tasks are {tasks}; the peer harness expects {TASKS}")
    labels = [str(t.label) for t in data.tasks]
    cat, num = data.categorical, data.numeric
    arrays: dict[str, np.ndarray] = {}
    for s in ("train", "valid", "test"):
        cols = {k: v.numpy() for k, v in data.part(s).columns.items()}
        arrays[f"cat_{s}"] = np.stack([cols[c] for c in cat], axis=1).astype(np.int64)
        arrays[f"num_{s}"] = np.stack([cols[c] for c in num], axis=1).astype(np.float32)
        arrays[f"y_{s}"] = np.stack([cols[y] for y in labels], axis=1).astype(np.float32)
    arrays["vocab_sizes"] = np.array([f.vocab_size for f in data.features if f.name in cat])
    arrays["cat_names"] = np.array(cat)
    arrays["num_names"] = np.array(num)
    arrays["label_names"] = np.array(labels)
    path = out_dir / f"census_seed{seed}.npz"
    np.savez(path, **arrays)
    frame = ds.frame
    meta = {
        "rows": frame.height,
        "n": dict(data.info["rows"]),
        "positive_rates": {
            t: float(frame[label].mean())  # type: ignore[arg-type]
            for t, label in zip(TASKS, labels, strict=True)
        },
        "n_categorical": len(cat),
        "n_numeric": len(num),
        "vocab_total": int(arrays["vocab_sizes"].sum()),
        "split": data.info["split"],
    }
    return path, meta


# --------------------------------------------------------------------------- runs


def peer_flags() -> list[str]:
    """The peers' flags, read from our MMoE and PLE configs so both sides match."""
    mmoe, ple = load_ours(OURS["mmoe"]), load_ours(OURS["ple"])
    for cfg in (mmoe, ple):
        for key in ("expert_dims", "tower_dims"):
            if len(cfg.model.config[key]) != 1:
                raise SystemExit(f"the peer harness takes one-layer {key}; config has more")
        same = cfg.model.embedding_dim == mmoe.model.embedding_dim
        if cfg.train.train_config() != mmoe.train.train_config() or not same:
            raise SystemExit("census_mmoe.yaml and census_ple.yaml must train alike")
        if cfg.train.train_config().weight_decay != 0.0:
            raise SystemExit("the peers run without weight decay; so must we")
    m, p, t = mmoe.model.config, ple.model.config, mmoe.train.train_config()
    if list(m["expert_dims"]) != list(p["expert_dims"]) or list(m["tower_dims"]) != list(
        p["tower_dims"]
    ):
        raise SystemExit("MMoE and PLE configs must share expert and tower widths")
    return [
        "--epochs", str(t.epochs),
        "--batch-size", str(t.batch_size),
        "--lr", str(t.lr),
        "--patience", str(t.patience),
        "--emb-dim", str(mmoe.model.embedding_dim),
        "--experts", str(m["n_experts"]),
        "--expert-dim", str(m["expert_dims"][0]),
        "--tower-dim", str(m["tower_dims"][0]),
        "--ple-levels", str(p["n_levels"]),
        "--ple-task-experts", str(p["n_task_experts"]),
        "--ple-shared-experts", str(p["n_shared_experts"]),
    ]  # fmt: skip


def run(
    lib: str,
    model: str,
    npz: Path,
    seed: int,
    out: Path,
    threads: int,
    epochs: int | None = None,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """One run in its own process; returns its JSON with the load average before it."""
    if lib == "shoprec":
        cmd = ["-m", "benchmarks.ours_census", "--config", str(CONFIGS / OURS[model])]
        if epochs is not None:
            cmd += ["--epochs", str(epochs), "--patience", str(epochs)]
    else:
        cmd = ["-m", "benchmarks.peers_census", "--lib", lib, "--model", model, *peer_flags()]
        if epochs is not None:
            cmd += ["--epochs", str(epochs), "--patience", str(epochs)]  # later flags win
    cmd += ["--data", str(npz), "--seed", str(seed), "--out", str(out), "--threads", str(threads)]
    cmd += extra or []
    load_before = list(os.getloadavg())
    log = out.with_suffix(".log")
    with open(log, "w") as fh:
        code = subprocess.call(
            [sys.executable, *cmd], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT
        )
    if code != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{lib} {model} seed {seed} failed (exit {code}):\n{tail}")
    result = json.loads(out.read_text())
    result["load_avg_before"] = load_before
    print(f"  {log.read_text().strip().splitlines()[-1]}", flush=True)
    return result


# --------------------------------------------------------------------------- summary


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def fmt_auc(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.4f} ± {s:.4f}" if len(values) > 1 else f"{m:.4f}"


def summarise(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    rows = {}
    for (lib, model), results in runs.items():
        rows[f"{lib}/{model}"] = {
            "lib": lib,
            "model": model,
            "seeds": [r["seed"] for r in results],
            "test_auc": {t: [r["test_auc"][t] for r in results] for t in TASKS},
            "test_auc_mean": {t: mean_std([r["test_auc"][t] for r in results])[0] for t in TASKS},
            "test_auc_std": {t: mean_std([r["test_auc"][t] for r in results])[1] for t in TASKS},
            "valid_auc_mean": float(np.mean([r["valid_auc"]["mean"] for r in results])),
            "samples_per_s_median": statistics.median(r["samples_per_s"] for r in results),
            "cpu_samples_per_s_median": statistics.median(r["cpu_samples_per_s"] for r in results),
            "peak_rss_mib_median": statistics.median(r["peak_rss_mib"] for r in results),
            "peak_rss_mib_max": max(r["peak_rss_mib"] for r in results),
            "rss_method": "VmHWM",
            "epochs_run": [r["epochs_run"] for r in results],
            "best_epoch": [r["best_epoch"] for r in results],
            "n_params": results[0]["config"]["n_params"],
            "best_weights_restored": all(r["best_weights_restored"] for r in results),
            # ours: the YAML's model config (options such as batchnorm, embedding_init_std)
            "model_config": results[0]["config"]
            .get("experiment", {})
            .get("model", {})
            .get("config"),
        }
    return rows


def options_line(rows: dict[str, Any]) -> str | None:
    """One bullet naming each of our models' BatchNorm and embedding-init options (None for a
    summary written before rows carried their model config)."""
    parts = []
    for model in OURS:
        row = rows.get(f"shoprec/{model}")
        cfg = row.get("model_config") if row else None
        if cfg is None:
            continue
        where = "MLPs" if model in ("shared_bottom", "single_task") else "towers"
        bn = f"BatchNorm in the {where}" if cfg.get("batchnorm") else "no BatchNorm"
        std = float(cfg.get("embedding_init_std", 0.05))
        parts.append(f"{model}: {bn}, embeddings N(0, {std:g})")
    if not parts:
        return None
    return (
        "- shoprec's per-model options (`batchnorm`, `embedding_init_std` in "
        "`configs/census_*.yaml`; chosen on the mean validation AUC over seeds 0 1 2, never "
        "on test; the YAML comments give the validation numbers): " + "; ".join(parts) + "."
    )


def timing_phase(
    npz: Path, seed: int, out_dir: Path, rounds: int, epochs: int, threads: int, peers: bool
) -> dict[str, Any]:
    jobs: list[tuple[str, str, str, list[str]]] = [
        ("shoprec mmoe", "shoprec", "mmoe", []),
        ("shoprec mmoe, plain first layer (no fold)", "shoprec", "mmoe", ["--no-fold"]),
    ]
    if peers:
        jobs += [("torch-rechub mmoe", "torch_rechub", "mmoe", []),
                 ("DeepCTR-Torch mmoe", "deepctr", "mmoe", [])]  # fmt: skip
    measured: dict[str, list[dict[str, Any]]] = {j[0]: [] for j in jobs}
    for r in range(rounds):
        order = jobs[r % len(jobs) :] + jobs[: r % len(jobs)]
        print(f"timing round {r + 1}/{rounds}: {[j[0] for j in order]}", flush=True)
        for label, lib, model, extra in order:
            tag = "_nofold" if "--no-fold" in extra else ""
            out = out_dir / f"timing_{lib}_{model}{tag}_r{r}.json"
            res = run(lib, model, npz, seed, out, threads, epochs=epochs, extra=extra)
            measured[label].append(
                {
                    "samples_per_s": res["samples_per_s"],
                    "cpu_samples_per_s": res["cpu_samples_per_s"],
                    "epoch_train_seconds": res["epoch_train_seconds"],
                    "load_avg_before": res["load_avg_before"],
                    "load_avg_end": res["load_avg_end"],
                    "peak_rss_mib": res["peak_rss_mib"],
                }
            )
    summary = {}
    for label, ms in measured.items():
        summary[label] = {
            "samples_per_s_median": statistics.median(m["samples_per_s"] for m in ms),
            "cpu_samples_per_s_median": statistics.median(m["cpu_samples_per_s"] for m in ms),
            "samples_per_s_all": [m["samples_per_s"] for m in ms],
            "cpu_samples_per_s_all": [m["cpu_samples_per_s"] for m in ms],
            "load_avg_1min": [m["load_avg_before"][0] for m in ms],
            "peak_rss_mib_median": statistics.median(m["peak_rss_mib"] for m in ms),
            "runs": ms,
        }
    return summary


def run_stamp(args: argparse.Namespace) -> str:
    """Command, date, machine and commit (and whether the tree had uncommitted changes)."""
    seeds = " ".join(str(s) for s in args.seeds)
    text = stamp(f".venv/bin/python -m benchmarks.census --seeds {seeds} --threads {args.threads}")
    dirty = subprocess.run(
        [
            "git",
            "status",
            "--porcelain",
            "--",
            "src",
            "benchmarks",
            "configs",
            ":!benchmarks/RESULTS.md",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    ).stdout.strip()
    if dirty:
        text = text.rstrip() + " plus uncommitted changes in the working tree\n"
    return text


def _rss(row: dict[str, Any]) -> str:
    return f"{row['peak_rss_mib_median']:.0f}" if row.get("rss_method") == "VmHWM" else "—"


def _max_epochs() -> int:
    """The epoch cap every run shares (the MMoE config's; the driver checks PLE's agrees)."""
    return int(load_ours(OURS["mmoe"]).train.train_config().epochs)


def markdown(
    args: argparse.Namespace,
    meta: dict[int, dict[str, Any]],
    rows: dict[str, Any],
    timing: dict[str, Any] | None,
    verdicts: list[str],
    wall_minutes: float,
    stamp_text: str,
) -> str:
    seeds = " ".join(str(s) for s in args.seeds)
    m0 = meta[args.seeds[0]]
    lines = [
        "## Census-income (KDD): income > 50K and never married",
        "",
        stamp_text.rstrip(),
        f"- total run time: {wall_minutes:.0f} min; torch threads: {args.threads} in every "
        "process (ours and peers); each run is its own process, one at a time",
        f"- data: `../shared/data/census_income` ({m0['rows']:,} rows, the original test file), "
        f"seeded 80/10/10 split per seed ({m0['n']['train']:,} / {m0['n']['valid']:,} / "
        f"{m0['n']['test']:,}); positive rates {m0['positive_rates']['income']:.3f} (income) "
        f"and {m0['positive_rates']['never_married']:.3f} (never married); "
        f"{m0['n_categorical']} categorical + {m0['n_numeric']} numeric features, marital "
        "status not among them; shoprec's Encoder fitted on train only, the same encoded "
        "arrays fed to every library. The census `instance_weight` is **not** used (no "
        "library weights the loss or the AUC with it).",
        "- every model: embedding 16, batch 1024, Adam lr 1e-3 without weight decay, at most "
        f"{_max_epochs()} epochs, early stopping on the mean validation AUC of the two tasks "
        "(patience 2, any gain counts), best weights restored, test AUC read once. MMoE: 8 "
        "experts of [64], towers [32]. PLE: one CGC level, 4 experts per task + 4 shared, "
        "experts [64], towers [32] (DeepCTR-Torch 0.3.0's PLE needs as many shared as "
        "per-task experts). "
        "Shared-bottom: bottom [64], towers [32]; single-task: one [64, 32] network per task. "
        "Configs: `configs/census_*.yaml`; peers' flags are read from the MMoE/PLE ones.",
        "- ESMM and AITM are not run: both model a funnel whose later step can only follow the "
        "earlier one (ESMM fits p(click and buy) = pCTR x pCVR; AITM penalises a later step "
        "scored above an earlier one). Income > 50K and never married are two unordered "
        "labels of one person, so neither model's structure applies.",
    ]
    options = options_line(rows)
    if options:
        lines.append(options)
    lines += [
        "",
        f"### Test AUC over seeds {seeds} (mean ± sample std)",
        "",
        "| model | library | income AUC | never-married AUC | samples/s | peak RSS MiB | "
        "epochs (best/run) | params |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    order = [("shoprec", m) for m in OURS] + PEERS
    for lib, model in order:
        row = rows.get(f"{lib}/{model}")
        if row is None:
            continue
        epochs = ", ".join(
            f"{b}/{e}" for b, e in zip(row["best_epoch"], row["epochs_run"], strict=True)
        )
        lines.append(
            f"| {model} | {LIB_TITLES[lib]} | {fmt_auc(row['test_auc']['income'])} | "
            f"{fmt_auc(row['test_auc']['never_married'])} | "
            f"{row['samples_per_s_median']:,.0f} | {_rss(row)} | "
            f"{epochs} | {row['n_params']:,} |"
        )
    lines += [
        "",
        "samples/s here: median over the seeds of the accuracy runs' training throughput (all "
        "epochs, wall clock, validation excluded); noisy on a shared machine, see the timing "
        "phase for the MMoE comparison. Peak RSS: the run's maximum resident set (`VmHWM`, "
        "median over seeds), imports, data and model included.",
    ]
    if any(r.get("rss_method") != "VmHWM" for r in rows.values()):
        lines += [
            "",
            "Accuracy runs of an earlier pass (`--accuracy-from`): their peak RSS was read "
            "with `ru_maxrss`, which Linux carries from the launching process across fork + "
            "exec, so it only showed the driver's size and is left out (—); the timing phase "
            "below measures memory.",
        ]
    if timing:
        lines += [
            "",
            f"### Timing phase: MMoE training throughput ({args.timing_rounds} interleaved "
            f"rounds x {args.timing_epochs} epochs, seed {args.seeds[0]} split, "
            f"{args.threads} thread(s) each)",
            "",
            "| run | samples/s (wall, median) | samples/s of CPU time (median) | wall, per round | "
            "1-min load avg before each | peak RSS MiB (median) |",
            "|---|---:|---:|---|---|---:|",
        ]
        for label, t in timing.items():
            per = ", ".join(f"{v:,.0f}" for v in t["samples_per_s_all"])
            load = ", ".join(f"{v:.1f}" for v in t["load_avg_1min"])
            lines.append(
                f"| {label} | {t['samples_per_s_median']:,.0f} | "
                f"{t['cpu_samples_per_s_median']:,.0f} | {per} | {load} | "
                f"{t.get('peak_rss_mib_median', float('nan')):.0f} |"
            )
        lines += [
            "",
            "Wall-clock samples/s are training passes only (no validation, no set-up), as "
            "each runner reports them; 'CPU time' divides the same samples by the process's "
            "CPU seconds over the same passes, which other jobs on the machine disturb much "
            "less than the wall clock.",
        ]
    lines += ["", "### Targets", "", *[f"- {v}" for v in verdicts]]
    lines += ["", "### Notes", "", *[f"- {n}" for n in NOTES]]
    return "\n".join(lines) + "\n"


def verdicts_for(rows: dict[str, Any], timing: dict[str, Any] | None) -> list[str]:
    out = []
    ours = {k: r for k, r in rows.items() if r["lib"] == "shoprec"}
    peers = {k: r for k, r in rows.items() if r["lib"] != "shoprec"}
    if ours and peers:
        for t in TASKS:
            bo = max(ours.values(), key=lambda r: r["test_auc_mean"][t])
            bp = max(peers.values(), key=lambda r: r["test_auc_mean"][t])
            o, p = bo["test_auc_mean"][t], bp["test_auc_mean"][t]
            met = "**met**" if o >= p else "**not met**"
            spread = max(bo["test_auc_std"][t], bp["test_auc_std"][t])
            noise = (
                f", well inside the seed-to-seed spread (± {spread:.4f}): a tie, not a lead"
                if abs(o - p) < spread
                else ""
            )
            out.append(
                f"our best >= best peer on {TASK_TITLES[t]}: {met}: ours {o:.5f} "
                f"(± {bo['test_auc_std'][t]:.4f}, {bo['model']}) vs {p:.5f} "
                f"(± {bp['test_auc_std'][t]:.4f}, {LIB_TITLES[bp['lib']]} {bp['model']}); "
                f"difference {o - p:+.5f}{noise}"
            )
    if timing and "torch-rechub mmoe" in timing:
        ours_t = timing["shoprec mmoe"]
        for label, need in (("torch-rechub mmoe", 5.0), ("DeepCTR-Torch mmoe", 3.0)):
            peer = timing[label]
            wall = ours_t["samples_per_s_median"] / peer["samples_per_s_median"]
            cpu = ours_t["cpu_samples_per_s_median"] / peer["cpu_samples_per_s_median"]
            met = "**met**" if wall >= need else "**not met**"
            out.append(
                f"our MMoE >= {need:.0f}x {label.split()[0]}'s MMoE samples/s: {met}: "
                f"{wall:.2f}x by wall clock ({ours_t['samples_per_s_median']:,.0f} vs "
                f"{peer['samples_per_s_median']:,.0f}), {cpu:.2f}x by CPU time "
                f"({ours_t['cpu_samples_per_s_median']:,.0f} vs "
                f"{peer['cpu_samples_per_s_median']:,.0f})"
            )
        plain = timing.get("shoprec mmoe, plain first layer (no fold)")
        if plain:
            out.append(
                "where the speed comes from: the same MMoE with the plain first layer (no "
                f"fold) runs {plain['samples_per_s_median']:,.0f} samples/s (wall), "
                f"{plain['cpu_samples_per_s_median']:,.0f} (CPU time)"
            )
    if timing and "torch-rechub mmoe" in timing:
        o = timing["shoprec mmoe"]["peak_rss_mib_median"]
        for label in ("torch-rechub mmoe", "DeepCTR-Torch mmoe"):
            p = timing[label]["peak_rss_mib_median"]
            met = "**met**" if o < p else "**not met**"
            out.append(
                f"lower peak memory than {label.split()[0]} (MMoE vs MMoE): {met}: "
                f"{o:.0f} MiB vs {p:.0f} MiB (median peak RSS of the timing runs, VmHWM)"
            )
    return out


NOTES = [
    "Where our speed comes from: shoprec's MMoE computes its experts' first layer and its "
    "gates as one product, and `InputLayer.linear` folds the embedding tables into it: each "
    "feature's table is multiplied by its rows of the weight once per step, then every sample "
    "sums 32 looked-up rows instead of multiplying a (1024, 519) input. The function, the "
    "parameters and the gradients are the same as the plain layer (equal up to float "
    "rounding; `tests/test_bench_census_smoke.py` checks it), and it pays off because the "
    "32 vocabularies hold only 549 ids in all. The timing table shows the same model with "
    "the plain first layer. Our PLE, shared-bottom and single-task models do not fold (yet).",
    "torch-rechub puts BatchNorm1d after every hidden Linear (experts, gates, towers; not "
    "switchable); DeepCTR-Torch uses none (`dnn_use_bn=False`, its default); shoprec has it "
    "as an option of the towers (of the MLPs in shared-bottom and single-task), never in "
    "experts or gates, set per model as listed above. DeepCTR-Torch sums its loss over the "
    "batch; torch-rechub and shoprec average it. Initialisations: both peers draw embeddings "
    "from N(0, 1e-4) (DeepCTR-Torch also its DNN weights); shoprec's default is N(0, 0.05), "
    "`embedding_init_std` per model as listed above.",
    "Peak RSS counts everything each process imports: the peers load pandas and "
    "scikit-learn, shoprec loads Polars and `torch.use_deterministic_algorithms` (which "
    "imports torch._inductor, about 70 MiB).",
    "Both tasks are scored by plain (unweighted) ROC AUC on the test rows; the census "
    "sampling weight (`instance_weight`) is ignored in training and in scoring by every "
    "library.",
]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    p.add_argument("--quick", action="store_true", help="seed 0, 2 epochs, one timing round")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    p.add_argument("--models", nargs="+", choices=list(OURS), default=list(OURS))
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--timing-rounds", type=int, default=None, help="default 5 (quick: 1)")
    p.add_argument("--timing-epochs", type=int, default=None, help="default 2 (quick: 1)")
    p.add_argument("--rows", type=int, default=None, help="use only the first N rows")
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "census"))
    p.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    p.add_argument("--render", metavar="SUMMARY", help="only re-render a summary.json's section")
    p.add_argument(
        "--accuracy-from",
        metavar="SUMMARY",
        help="reuse the accuracy runs of an earlier summary.json; run only the timing phase",
    )
    args = p.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.timing_rounds = args.timing_rounds or (1 if args.quick else 5)
    args.timing_epochs = args.timing_epochs or (1 if args.quick else 2)
    return args


def render(path: str, write: bool) -> int:
    """Re-render the section of a finished run from its summary.json (same stamp)."""
    summary = json.loads(Path(path).read_text())
    args = argparse.Namespace(**summary["args"])
    meta = {int(k): v for k, v in summary["meta"].items()}
    rows, timing = summary["rows"], summary["timing"]
    text = markdown(
        args, meta, rows, timing, verdicts_for(rows, timing), summary["minutes"], summary["stamp"]
    )
    print(text)
    if write:
        print(f"wrote {write_section('census', text)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render, write=not args.no_write)
    start = time.perf_counter()
    stamp_text = run_stamp(args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = 2 if args.quick else None
    jobs = [("shoprec", m) for m in args.models] + ([] if args.no_peers else PEERS)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {j: [] for j in jobs}
    meta: dict[int, dict[str, Any]] = {}
    npz: dict[int, Path] = {}
    earlier = json.loads(Path(args.accuracy_from).read_text()) if args.accuracy_from else None
    for seed in args.seeds:
        npz[seed], meta[seed] = prepare(seed, out_dir, args.rows)
        print(f"seed {seed}: {meta[seed]['n']} -> {npz[seed]}", flush=True)
        for lib, model in [] if earlier else jobs:
            name = f"{lib}_{model.replace(' + ', '_')}_seed{seed}.json"
            runs[(lib, model)].append(
                run(lib, model, npz[seed], seed, out_dir / name, args.threads, epochs)
            )
    if earlier:
        if earlier["args"]["seeds"] != args.seeds:
            raise SystemExit(f"{args.accuracy_from} ran seeds {earlier['args']['seeds']}")
        rows = earlier["rows"]
        stamp_text = (
            stamp_text.rstrip()
            + "\n- accuracy runs reused from an earlier run of the same command "
            + "(`--accuracy-from`; its stamp):\n"
            + "  "
            + earlier["stamp"].strip().replace("\n", "\n  ")
            + "\n"
        )
    else:
        rows = summarise(runs)
    timing = None
    if not args.no_timing:
        timing = timing_phase(
            npz[args.seeds[0]],
            args.seeds[0],
            out_dir,
            args.timing_rounds,
            args.timing_epochs,
            args.threads,
            peers=not args.no_peers,
        )
    verdicts = verdicts_for(rows, timing)
    minutes = (time.perf_counter() - start) / 60
    text = markdown(args, meta, rows, timing, verdicts, minutes, stamp_text)
    summary = {
        "args": vars(args),
        "stamp": stamp_text,
        "minutes": minutes,
        "meta": meta,
        "rows": rows,
        "timing": timing,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(text)
    if not (args.quick or args.no_write or args.rows):
        print(f"wrote {write_section('census', text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
