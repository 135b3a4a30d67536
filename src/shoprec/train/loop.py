"""The one training loop, for every model.

It never asks which model it has: a model gives ``forward``, ``task_losses`` and ``predict``;
loss balancing is a strategy object (:mod:`shoprec.train.weighting`) that turns per-task
losses into gradients. The loop adds batching from tensors, early stopping on a validation
metric with the best weights restored, a Rich progress display, seeding, and checkpoints it
can resume from.

Example:
    >>> result = fit(model, train_data, valid_data, TrainConfig(epochs=5))  # doctest: +SKIP
    >>> result.best_score, result.history[-1]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from shoprec.data.batches import TensorData
from shoprec.evaluate import metrics
from shoprec.train.weighting import FixedWeights, LossWeighting

log = logging.getLogger(__name__)

#: Validation hook: given the model, return named scores (higher is better for ``monitor``).
Evaluator = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults suit a few hundred thousand rows on a laptop CPU."""

    epochs: int = 10  # upper bound; early stopping usually ends sooner
    batch_size: int = 1024
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0
    patience: int = 2  # epochs without improvement before stopping
    monitor: str = "mean"  # a key of the validation scores, or "mean" over the tasks' main ones
    min_delta: float = 1e-4  # smaller gains do not count as improvement
    seed: int = 0
    eval_batch_size: int = 16384
    grad_clip: float | None = None  # max global grad norm, None = off
    checkpoint_dir: str | None = None  # where to write resumable checkpoints
    progress: bool = True  # show a Rich progress bar
    threads: int | None = None  # torch intra-op threads; None = leave as is


@dataclass
class FitResult:
    """What :func:`fit` returns: the best validation scores and the per-epoch history."""

    best_epoch: int
    best_score: float
    best_scores: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0  # time in training steps of this call (validation excluded)
    samples_per_second: float = 0.0  # training samples per second of train_seconds
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic kernels do not need every new tensor pre-filled with NaN (a debugging aid
    # that the line above turns on); the fill costs several percent of a CPU training step.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 16384) -> dict[str, Tensor]:
    """Run ``model.predict`` over all rows in batches and concatenate per task."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {}
    for batch in data.batches(batch_size):
        for name, value in model.predict(batch).items():
            parts.setdefault(name, []).append(value)
    model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}


def task_scores(model: nn.Module, data: TensorData, batch_size: int = 16384) -> dict[str, float]:
    """The standard per-task validation metrics: AUC (binary), accuracy (multi-class),
    negative RMSE (regression, so that higher is better). Keys are ``<task>/<metric>``."""
    preds = predict(model, data, batch_size)
    scores: dict[str, float] = {}
    for task in model.tasks:
        label = data.columns[task.label or task.name].numpy()
        pred = preds[task.name].numpy()
        mask = _task_mask(task, data)
        if mask is not None:
            label, pred = label[mask], pred[mask]
        if len(label) == 0:
            continue
        if task.kind == "binary":
            if 0 < label.mean() < 1:
                scores[f"{task.name}/auc"] = metrics.auc(label, pred)
            scores[f"{task.name}/logloss"] = metrics.logloss(label, pred)
        elif task.kind == "multiclass":
            scores[f"{task.name}/accuracy"] = metrics.accuracy(label, pred)
        else:
            scores[f"{task.name}/neg_rmse"] = -metrics.rmse(label, pred)
    return scores


def _task_mask(task: Any, data: TensorData) -> np.ndarray | None:
    key = getattr(task, "weight_key", None)
    if key and key in data.columns:
        return data.columns[key].numpy() > 0
    return None


def main_score(scores: dict[str, float]) -> float:
    """Mean of each task's main metric (auc, accuracy or neg_rmse), ignoring log-losses."""
    main = [v for k, v in scores.items() if k.split("/")[-1] in {"auc", "accuracy", "neg_rmse"}]
    return float(np.mean(main)) if main else float("nan")


def fit(
    model: nn.Module,
    train: TensorData,
    valid: TensorData | None = None,
    config: TrainConfig | None = None,
    *,
    weighting: LossWeighting | None = None,
    evaluator: Evaluator | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> FitResult:
    """Train ``model`` on ``train``, select the best epoch on ``valid``, restore its weights.

    Args:
        model: any shoprec model (``forward``, ``task_losses``, ``predict``, ``tasks``).
        train: training columns (features and labels) as tensors.
        valid: validation columns; without them (and without ``evaluator``) every epoch
            runs and the last weights are kept.
        config: training settings.
        weighting: task-loss balancing strategy; fixed equal weights by default.
        evaluator: custom validation scores (e.g. ranking metrics); replaces the per-task
            scores on ``valid`` when given.
        resume: continue from ``config.checkpoint_dir`` if it holds a checkpoint.
        console: where progress goes (stderr by default).

    Returns:
        A :class:`FitResult`; the model holds the best weights.
    """
    cfg = config or TrainConfig()
    weighting = weighting or FixedWeights()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    # Frozen parameters (requires_grad False, e.g. after transfer.cross_domain.freeze) are not
    # handed to the optimizer at all, so neither Adam nor weight decay can move them.
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": trainable, "weight_decay": cfg.weight_decay}]
    if list(weighting.parameters()):  # loss weights must not decay towards zero
        groups.append({"params": list(weighting.parameters()), "weight_decay": 0.0})
    params = [p for g in groups for p in g["params"]]
    # One fused kernel for all parameters instead of a loop of small ops per parameter.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, fused=fused or None)
    generator = torch.Generator().manual_seed(cfg.seed)
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    last_shared = model.last_shared_layer()

    state = _State()
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if resume and ckpt is not None and (ckpt / "trainer.json").exists():
        state = _load_checkpoint(ckpt, model, optimizer, weighting, generator)
        log.info("resumed from %s after epoch %d", ckpt, state.epoch)

    console = console or Console(stderr=True)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    seen = 0
    train_time = 0.0  # seconds spent in training steps only (validation excluded)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not cfg.progress,
        transient=False,
    ) as progress:
        bar = progress.add_task("train", total=steps_per_epoch, info="")
        while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
            epoch = state.epoch + 1
            model.train()
            progress.reset(bar, total=steps_per_epoch, description=f"epoch {epoch}", info="")
            running = 0.0
            tick = time.perf_counter()
            for step, batch in enumerate(
                train.batches(cfg.batch_size, shuffle=True, generator=generator), 1
            ):
                optimizer.zero_grad(set_to_none=True)
                outputs = model(batch)
                losses = model.task_losses(outputs, batch)
                total = weighting.backward(
                    losses, shared_params=shared, last_shared_params=last_shared
                )
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                seen += next(iter(batch.values())).shape[0]
                running += float(total)
                if step % 20 == 0 or step == steps_per_epoch:
                    progress.update(bar, completed=step, info=f"loss {running / step:.4f}")
            train_time += time.perf_counter() - tick
            scores = _validate(model, valid, evaluator, cfg)
            score = scores.get(cfg.monitor, main_score(scores)) if scores else float("nan")
            row = {
                "epoch": epoch,
                "train_loss": running / max(steps_per_epoch, 1),
                **scores,
                "weights": weighting.weights(),
            }
            state.history.append(row)
            improved = not scores or score > state.best_score + cfg.min_delta
            if improved:
                state.best_score, state.best_epoch, state.best_scores = score, epoch, scores
                state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                state.bad_epochs = 0
            else:
                state.bad_epochs += 1
            state.epoch = epoch
            shown = "  ".join(f"{k} {v:.4f}" for k, v in scores.items() if "logloss" not in k)
            progress.update(
                bar, info=f"loss {row['train_loss']:.4f}  {shown}" + ("  *" if improved else "")
            )
            line = f"epoch {epoch}: train loss {row['train_loss']:.4f}  {shown}"
            if cfg.progress:
                progress.console.print(
                    line + ("  [green](best)[/]" if improved else ""), highlight=False
                )
            else:
                log.info("%s%s", line, "  (best)" if improved else "")
            if ckpt is not None:
                _save_checkpoint(ckpt, model, optimizer, weighting, generator, state)
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    return FitResult(
        best_epoch=state.best_epoch,
        best_score=state.best_score,
        best_scores=state.best_scores,
        history=state.history,
        train_seconds=train_time,
        samples_per_second=seen / train_time if train_time > 0 else 0.0,
        stopped_early=state.bad_epochs >= cfg.patience and state.epoch < cfg.epochs,
    )


def _validate(
    model: nn.Module, valid: TensorData | None, evaluator: Evaluator | None, cfg: TrainConfig
) -> dict[str, float]:
    model.eval()
    if evaluator is not None:
        scores = evaluator(model)
    elif valid is not None and len(valid):
        scores = task_scores(model, valid, cfg.eval_batch_size)
    else:
        scores = {}
    model.train()
    return scores


@dataclass
class _State:
    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -math.inf
    best_scores: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_weights: dict[str, Tensor] | None = None


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    weighting: LossWeighting,
    generator: torch.Generator,
    state: _State,
) -> None:
    """Write model, best weights, optimizer and RNG state; atomically replace the old one."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / ".tmp"
    tmp.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    if state.best_weights is not None:
        save_file(
            {k: v.contiguous() for k, v in state.best_weights.items()}, tmp / "best.safetensors"
        )
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "weighting": weighting.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "optimizer.pt",
    )
    meta = asdict(state)
    meta.pop("best_weights")
    (tmp / "trainer.json").write_text(json.dumps(meta, default=float))
    for f in tmp.iterdir():
        f.replace(path / f.name)
    tmp.rmdir()


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    weighting: LossWeighting,
    generator: torch.Generator,
) -> _State:
    model.load_state_dict(load_file(path / "model.safetensors"))
    extra = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    weighting.load_state_dict(extra["weighting"])
    generator.set_state(extra["generator"])
    torch.set_rng_state(extra["torch_rng"])
    meta = json.loads((path / "trainer.json").read_text())
    state = _State(**meta)
    if (path / "best.safetensors").exists():
        state.best_weights = load_file(path / "best.safetensors")
    return state
