"""Our side of the census-income benchmark: one shoprec config, one seed, one process.

The twin of :mod:`benchmarks.peers_census`, with the same inputs and the same JSON, so that
peak RSS, threads and timing are measured the same way for every library::

    python -m benchmarks.ours_census --config configs/census_mmoe.yaml --data census.npz \\
        --seed 0 --out result.json [--threads 1 --epochs N --no-fold]

``--config`` is an experiment config that ``shoprec train`` runs as is (``recipe: tabular``),
read by :func:`shoprec.config.load_config` with the split seed and ``train.seed`` set to
``--seed`` (and ``--epochs`` / ``--patience`` to ``train.*``). ``--data`` is the npz the
driver wrote with that recipe's ``prepare`` (:func:`benchmarks.census.prepare`): the split
encoded once, by the Encoder fitted on train, that every library reads.

The run is the recipe's own path, the one ``shoprec train`` takes
(:class:`shoprec.recipes.tabular.TabularRecipe`): ``build_model`` (the configured model,
seeded), ``train`` (:func:`shoprec.train.loop.fit`: Adam, early stopping on the mean
validation AUC, best weights restored, the configured loss weighting) and ``test_scores`` on
test, once. ``train`` is given an ``evaluator`` that computes exactly the per-task validation
scores ``fit`` would compute itself (:func:`task_scores`) and notes the clock; the training
data notes it when ``fit`` asks for an epoch's batches, so each training pass is timed alone
(wall and CPU), from its first batch to its validation, as the peer harness does.

``--no-fold`` builds the model with the plain first layer (no folding of the embedding tables
into the first layer, see :meth:`shoprec.models.layers.InputLayer.linear`), to show what the
fold is worth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._results import peak_rss_mib_now
from shoprec import recipes
from shoprec.config import load_config
from shoprec.data.batches import TensorData
from shoprec.models import layers
from shoprec.recipes.tabular import TabularData, TabularRecipe
from shoprec.train.loop import main_score, task_scores

TASKS = ("income", "never_married")  # column order of y_*, as in peers_census


def load_npz(path: str, recipe: TabularRecipe) -> TabularData:
    """The driver's encoded split as the recipe's :class:`TabularData` (feature and label
    columns named as the data names them; specs from the recipe). Reads the npz without
    importing the peer harness, whose scikit-learn would count in our peak RSS."""
    z = np.load(path, allow_pickle=False)
    cat_names = [str(n) for n in z["cat_names"]]
    num_names = [str(n) for n in z["num_names"]]
    labels = [str(n) for n in z["label_names"]]
    vocab = dict(zip(cat_names, (int(v) for v in z["vocab_sizes"]), strict=True))
    tasks = recipe.task_specs(labels)
    if tuple(t.name for t in tasks) != TASKS or [t.label for t in tasks] != labels:
        raise SystemExit(f"the config's tasks {tasks} do not match the npz labels {labels}")
    parts: dict[str, TensorData] = {}
    for s in ("train", "valid", "test"):
        cat = z[f"cat_{s}"].astype(np.int64, copy=False)
        num = z[f"num_{s}"].astype(np.float32, copy=False)
        y = z[f"y_{s}"].astype(np.float32, copy=False)
        cols = {k: np.ascontiguousarray(cat[:, i]) for i, k in enumerate(cat_names)}
        cols.update({k: np.ascontiguousarray(num[:, i]) for i, k in enumerate(num_names)})
        cols.update({k: np.ascontiguousarray(y[:, i]) for i, k in enumerate(labels)})
        parts[s] = TensorData({k: torch.from_numpy(v) for k, v in cols.items()})
    features = recipe.feature_specs(vocab, num_names)
    return TabularData(features=features, tasks=tasks, **parts)


def aucs(scores: dict[str, float]) -> dict[str, float]:
    """``{"income/auc": a, ...}`` -> ``{"income": a, "never_married": b, "mean": ...}``."""
    out = {t: float(scores[f"{t}/auc"]) for t in TASKS}
    return {**out, "mean": float(np.mean(list(out.values())))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiment config (recipe: tabular)")
    p.add_argument("--data", required=True, help="npz with the encoded split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to write the result JSON")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--patience", type=int, default=None, help="override train.patience")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-fold", action="store_true", help="plain first layer (for timing)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {
        "split.seed": args.seed,
        "train.seed": args.seed,
        "train.progress": False,
    }
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.patience is not None:
        overrides["train.patience"] = args.patience
    exp = load_config(args.config).with_values(overrides)
    recipe = recipes.get(exp.recipe.name)(exp)
    if not isinstance(recipe, TabularRecipe):
        raise SystemExit(f"{args.config}: recipe '{exp.recipe.name}' is not tabular")
    data = load_npz(args.data, recipe)
    cfg = exp.train.train_config()
    t0 = time.perf_counter()

    if args.no_fold:
        layers.FOLD_MAX_VOCAB = 0  # InputLayer reads it when built: no group is folded
    model = recipe.build_model(data)  # seeded with train.seed (= --seed)
    train, valid, test = data.train, data.valid, data.test

    # A training pass runs from fit's first request for this epoch's batches to the
    # evaluator, which fit calls right after the pass: time exactly that span (wall and CPU).
    marks = {"wall": 0.0, "cpu": 0.0}
    epoch_wall: list[float] = []
    epoch_cpu: list[float] = []
    history: list[dict[str, float]] = []

    def timed_batches(*a: Any, **k: Any) -> Iterator[dict[str, torch.Tensor]]:
        marks.update(wall=time.perf_counter(), cpu=time.process_time())
        yield from TensorData.batches(train, *a, **k)

    def evaluator(m: torch.nn.Module) -> dict[str, float]:
        epoch_wall.append(time.perf_counter() - marks["wall"])
        epoch_cpu.append(time.process_time() - marks["cpu"])
        scores = task_scores(m, valid, cfg.eval_batch_size)
        history.append(aucs(scores))
        return scores

    train.batches = timed_batches  # type: ignore[method-assign]
    result = recipe.train(model, data, evaluator=evaluator)
    restored = aucs(task_scores(model, valid, cfg.eval_batch_size))
    test_auc = aucs(recipe.test_scores(model, data))  # read once, after fit
    test_auc.pop("mean")
    wall_seconds = time.perf_counter() - t0

    epochs_run = len(epoch_wall)
    best = history[result.best_epoch - 1]
    restored_ok = all(abs(restored[k] - best[k]) < 1e-6 for k in best)
    if not restored_ok:
        print(f"warning: restored model scores {restored}, best epoch {best}")
    assert abs(main_score(result.best_scores) - best["mean"]) < 1e-9
    train_seconds, cpu_seconds = float(sum(epoch_wall)), float(sum(epoch_cpu))
    peak_rss_mib = peak_rss_mib_now()
    emb_dim = exp.model.embedding_dim
    input_dim = emb_dim * len(data.categorical) + len(data.numeric)
    out = {
        "lib": "shoprec",
        "lib_version": version("shoprec"),
        "model": exp.model.name,
        "weighting": exp.weighting.name,
        "config": {
            **exp.model.config,
            "fold_first_layer": not args.no_fold,
            "emb_dim": emb_dim,
            "n_categorical": len(data.categorical),
            "n_numeric": len(data.numeric),
            "input_dim": input_dim,
            "n_params": sum(p.numel() for p in model.parameters()),
            "optimizer": "Adam",
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "batch_size": cfg.batch_size,
            "max_epochs": cfg.epochs,
            "patience": cfg.patience,
            "monitor": f"mean validation AUC of the two tasks (min_delta {cfg.min_delta:g})",
            "threads": args.threads,
            "n_train": len(train),
            "n_valid": len(valid),
            "n_test": len(test),
            "yaml": str(args.config),
            "experiment": exp.to_dict(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "seed": args.seed,
        "epochs_run": epochs_run,
        "best_epoch": result.best_epoch,
        "test_auc": test_auc,
        "valid_auc": best,
        "best_weights_restored": restored_ok,
        "valid_history": history,
        "samples_per_s": epochs_run * len(train) / train_seconds if train_seconds else 0.0,
        "train_seconds": train_seconds,
        "epoch_train_seconds": epoch_wall,
        "cpu_samples_per_s": epochs_run * len(train) / cpu_seconds if cpu_seconds else 0.0,
        "epoch_cpu_seconds": epoch_cpu,
        "load_avg_end": list(os.getloadavg()),
        "fit_samples_per_s": result.samples_per_second,  # the loop's own count, for a check
        "wall_seconds": wall_seconds,
        "peak_rss_mib": peak_rss_mib,
        "trainer_used": (
            "the tabular recipe (shoprec.recipes.tabular, as shoprec train runs the config): "
            "build_model, train (shoprec.train.loop.fit) with an evaluator equal to its "
            "default validation (task_scores on valid) that also times each training pass, "
            "test_scores once"
        ),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"shoprec {exp.model.name}/{out['weighting']} seed {args.seed}: test AUC "
        + " / ".join(f"{t} {test_auc[t]:.4f}" for t in TASKS)
        + f", best epoch {result.best_epoch}/{epochs_run}, {out['samples_per_s']:.0f} samples/s,"
        f" peak RSS {peak_rss_mib:.0f} MiB -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
