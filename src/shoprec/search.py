"""Tuning from a config: a grid or Optuna's TPE over named settings, chosen on validation.

A ``search:`` section names dotted settings and the values to try::

    search:
      method: grid                 # or tpe (Optuna's Tree-structured Parzen Estimator)
      space:
        train.lr: [0.001, 0.003, 0.01]
        model.embedding_dim: [8, 16]
        recipe.n_negatives: [2, 4]
      trials: 8                    # at most this many (grid: all combinations by default)
      minutes: 30                  # no new trial starts after this long
      metric: valid/buy/auc        # default: the recipe's own monitor

Each trial trains on the training part and is scored on the validation part only; the data
is loaded and split once for all trials. The best trial's model is the artifact, and the
test split is read once, at the end, for that model alone. The trials table (settings,
validation score, seconds) is saved in the artifact's ``metrics.json`` under ``search`` and
as ``trials.csv`` beside the artifact.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shoprec.config import ExperimentConfig, SearchSection
from shoprec.experiment import fit_experiment, load_dataset, make_split, save_experiment
from shoprec.recipes import get as get_recipe

log = logging.getLogger(__name__)


@dataclass
class Trial:
    """One tried combination of settings and its validation score."""

    number: int
    values: dict[str, Any]
    score: float
    seconds: float
    error: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            **{k: str(v) if isinstance(v, list | dict) else v for k, v in self.values.items()},
            "valid": self.score,
            "seconds": round(self.seconds, 2),
            "error": self.error or "",
        }


def _metric(run: Any, search: SearchSection) -> float:
    if search.metric is None:
        return run.valid_score
    key = search.metric.removeprefix("valid/")
    if key not in run.valid:
        raise ValueError(
            f"search.metric '{search.metric}' is not a validation score; there are "
            f"{sorted(run.valid)}"
        )
    return float(run.valid[key])


def _grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(space)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*space.values())]


def run_search(
    cfg: ExperimentConfig,
    output: str | Path | None = None,
    *,
    on_trial: Callable[[Trial], None] | None = None,
) -> tuple[Path, list[Trial]]:
    """Try the search space on validation, save the best trial's artifact with test scores.

    Args:
        cfg: an experiment whose ``search`` section is set.
        output: the artifact folder (default: the config's).
        on_trial: called after each trial (progress display).

    Returns:
        The artifact folder and the trials in the order they ran.

    Raises:
        ValueError: no search section, or every trial failed.
    """
    search = cfg.search
    if search is None:
        raise ValueError("the config has no search: section")
    base = cfg.model_copy(update={"search": None})
    target = get_recipe(cfg.recipe.name)(base).target
    ds = load_dataset(cfg.data)
    split = make_split(ds, cfg.split, target)
    trials: list[Trial] = []
    best: tuple[float, Any, ExperimentConfig] | None = None
    start = time.perf_counter()

    def objective(values: dict[str, Any]) -> float:
        nonlocal best
        t0 = time.perf_counter()
        trial_cfg = base.with_values(values)
        try:
            run, _, _ = fit_experiment(trial_cfg, dataset=ds, split=split)
            score = _metric(run, search)
            error = None
        except (ValueError, TypeError, RuntimeError) as e:
            run, score, error = None, float("nan"), str(e)
            log.warning("trial %s failed: %s", values, e)
        trial = Trial(len(trials), values, score, time.perf_counter() - t0, error)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        if run is not None and not math.isnan(score) and (best is None or score > best[0]):
            best = (score, run, trial_cfg)
        return score if not math.isnan(score) else float("-inf")

    def time_left() -> bool:
        return search.minutes is None or time.perf_counter() - start < 60 * search.minutes

    if search.method == "grid":
        combos = _grid(search.space)
        for values in combos[: search.trials or len(combos)]:
            if not time_left():
                break
            objective(values)
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=search.seed)
        )
        n = search.trials or 20
        for _ in range(n):
            if not time_left():
                break
            trial = study.ask()
            values = {
                k: trial.suggest_categorical(k, [_hashable(v) for v in vs])
                for k, vs in search.space.items()
            }
            study.tell(trial, objective({k: _unhash(v) for k, v in values.items()}))
    if best is None:
        errors = "; ".join(sorted({t.error or "" for t in trials}))
        raise ValueError(f"every search trial failed: {errors}")
    score, run, best_cfg = best
    table = [t.row() for t in trials]
    chosen = next(t for t in trials if t.score == score)
    out = save_experiment(
        best_cfg.model_copy(update={"name": cfg.name}),
        run,
        ds,
        split,
        output if output is not None else cfg.output_dir,
        extra={
            "search": {
                "method": search.method,
                "metric": search.metric or run.monitor,
                "best": {"trial": chosen.number, "values": chosen.values, "valid": score},
                "trials": table,
            }
        },
    )
    pl.DataFrame(table).write_csv(out / "trials.csv")
    return out, trials


def _hashable(value: Any) -> Any:
    """Optuna's categorical choices must be None, bool, int, float or str."""
    if isinstance(value, list | dict):
        import json

        return "json:" + json.dumps(value)
    return value


def _unhash(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("json:"):
        import json

        return json.loads(value[5:])
    return value
