"""The one training loop, for every model.

It never asks which model it has: a model gives ``forward``, ``task_losses`` and ``predict``;
loss balancing is a strategy object (:mod:`shoprec.train.weighting`) that turns per-task
losses into gradients. The loop adds batching from tensors (or from Parquet shards read one
at a time, :mod:`shoprec.data.shards`, for data larger than memory), sparse gradients for
large embedding tables (``train.sparse_rows``), early stopping on a validation
metric with the best weights restored, a Rich progress display, seeding, and checkpoints it
can resume from. Under torchrun it trains with DistributedDataParallel, each process on its
share of every global batch (:mod:`shoprec.train.distributed`), on ``train.device``.

Checkpoints are written once per epoch into a new folder (``epoch-0003/``: model, best
weights, optimizer, loss weighting, every random state, the loop's counters), synced, and
published by atomically replacing ``latest.json``; a crash at any moment leaves the previous
complete checkpoint. ``fit(..., resume=True)`` continues from it and ends with the same
weights, bit for bit, as a run that was never stopped. :func:`checkpointing` makes every
``fit`` inside a block (a recipe may call it several times) checkpoint into its own
``fit-<n>/`` folder and resume from it: what ``shoprec train`` uses.

Example:
    >>> result = fit(model, train_data, valid_data, TrainConfig(epochs=5))  # doctest: +SKIP
    >>> result.best_score, result.history[-1]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from shoprec import atomic
from shoprec.data.batches import TensorData
from shoprec.data.shards import ShardedData
from shoprec.errors import ShoprecError
from shoprec.evaluate import metrics
from shoprec.train import distributed
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
    checkpoint_dir: str | None = None  # where to write resumable checkpoints (every epoch)
    progress: bool = True  # show a Rich progress bar
    threads: int | None = None  # torch intra-op threads; None = leave as is
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when there is one
    amp: bool = False  # bfloat16 autocast of forward and losses on CUDA (ignored on CPU)
    # Training rows in memory (one tensor per column) or in Parquet shards read one at a time
    # (data larger than memory); auto: shards when a recipe expects more rows than
    # stream_rows. Recipes that build rows choose; the loop trains on either.
    stream: Literal["auto", "memory", "shards"] = "auto"
    stream_rows: int = 20_000_000  # auto's threshold (about 1.6 GB of pairs-recipe rows)
    shard_rows: int = 1_000_000  # rows per Parquet shard: what training holds at a time
    # Embedding tables of at least this many rows get sparse gradients and torch's SparseAdam
    # (only the rows a batch touches are read and moved, their moments too: "lazy" Adam);
    # the rest plain Adam. For millions of ids, where a dense Adam step over every row costs
    # more than the batch itself. None: every table dense. Not with train.grad_clip,
    # weight_decay, or GradNorm / PCGrad (per-task gradients).
    sparse_rows: int | None = None


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
def predict(
    model: nn.Module, data: TensorData | ShardedData, batch_size: int = 16384
) -> dict[str, Tensor]:
    """Run ``model.predict`` over all rows in batches and concatenate per task."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[Tensor]] = {}
    for batch in data.batches(batch_size):
        if device.type != "cpu":
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for name, value in model.predict(batch).items():
            parts.setdefault(name, []).append(value.cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}


def task_scores(
    model: nn.Module, data: TensorData | ShardedData, batch_size: int = 16384
) -> dict[str, float]:
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


def _task_mask(task: Any, data: TensorData | ShardedData) -> np.ndarray | None:
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
    train: TensorData | ShardedData,
    valid: TensorData | ShardedData | None = None,
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
        train: training columns (features and labels) as tensors, or Parquet shards read
            one at a time (:class:`~shoprec.data.shards.ShardedData`).
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
    # One process, or one of torchrun's (train.distributed): its rank and device.
    ctx = distributed.setup(cfg.device)
    distributed.check_weighting(weighting, ctx)
    weighting.mean_over_ranks = distributed.mean_over_ranks(ctx)  # type: ignore[method-assign]
    seed_everything(cfg.seed)
    if ctx.rank > 0:  # dropout masks differ per rank; the shuffling generator below does not
        torch.manual_seed(cfg.seed + 7919 * ctx.rank)
    model.to(ctx.device)
    weighting.to(ctx.device)
    amp = cfg.amp and ctx.device.type == "cuda"
    if cfg.amp and not amp:
        log.warning("train.amp is on but training runs on %s: full precision", ctx.device)
    # Frozen parameters (requires_grad False, e.g. after transfer.cross_domain.freeze) are not
    # handed to the optimizer at all, so neither Adam nor weight decay can move them.
    sparse = _sparse_embeddings(model, cfg, weighting)  # weights given sparse gradients
    trainable = [
        p for p in model.parameters() if p.requires_grad and all(p is not q for q in sparse)
    ]
    groups = [{"params": trainable, "weight_decay": cfg.weight_decay}]
    if list(weighting.parameters()):  # loss weights must not decay towards zero
        groups.append({"params": list(weighting.parameters()), "weight_decay": 0.0})
    params = [p for g in groups for p in g["params"]]
    # One fused kernel for all parameters instead of a loop of small ops per parameter.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    optimizer: torch.optim.Optimizer | _Optimizers = torch.optim.Adam(
        groups, lr=cfg.lr, fused=fused or None
    )
    if sparse:
        optimizer = _Optimizers(optimizer, torch.optim.SparseAdam(sparse, lr=cfg.lr))
    generator = torch.Generator().manual_seed(cfg.seed)
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    last_shared = model.last_shared_layer()

    state = _State()
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    session = _SESSION.get()
    if session is not None:  # inside checkpointing(): this call's own folder
        session.calls += 1
        ckpt = session.directory / f"fit-{session.calls}"
        resume = resume or session.resume
    signature = _signature(model, train, cfg)
    found = _latest(ckpt) if resume and ckpt is not None else None
    if found is not None:
        saved = json.loads((found / "trainer.json").read_text()).get("signature")
        if saved not in (None, signature):
            log.warning(
                "the checkpoint in %s is of another model, data or settings: not resumed", ckpt
            )
        else:
            state = _load_checkpoint(found, model, optimizer, weighting, generator)
            log.info("resumed from %s after epoch %d of %d", found, state.epoch, cfg.epochs)
            if ctx.rank > 0:
                torch.manual_seed(cfg.seed + 7919 * ctx.rank + state.epoch)

    # DDP (several processes) or the plain objective: batch -> task losses. batch_size is the
    # global batch; each of the world_size processes takes every world_size-th of its rows.
    # Strategies that take per-task gradients themselves bypass DDP's hooks: the model is
    # then not wrapped and the loop averages all gradients over the ranks after backward.
    manual = ctx.distributed and weighting.per_task_gradients
    objective = distributed.objective(model, ctx, ddp=not manual)
    if ctx.distributed and cfg.batch_size % ctx.world_size:
        log.warning(
            "train.batch_size %d is not a multiple of %d processes: rank batches differ by a row",
            cfg.batch_size,
            ctx.world_size,
        )
    console = console or Console(stderr=True)
    steps_per_epoch = distributed.steps_per_epoch(len(train), cfg.batch_size, ctx)
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
        disable=not (cfg.progress and ctx.is_main),
        transient=False,
    ) as progress:
        bar = progress.add_task("train", total=steps_per_epoch, info="")
        while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
            epoch = state.epoch + 1
            model.train()
            progress.reset(bar, total=steps_per_epoch, description=f"epoch {epoch}", info="")
            running = 0.0
            tick = time.perf_counter()
            for step, (batch, rows) in enumerate(_epoch(train, cfg, ctx, generator), 1):
                optimizer.zero_grad(set_to_none=True)
                if ctx.device.type != "cpu":  # moved once per batch
                    batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
                    losses = objective(batch)
                if ctx.distributed:  # DDP's average of rank means = the global batch mean
                    local = next(iter(batch.values())).shape[0]
                    scale = distributed.loss_scale(local, rows, ctx)
                    losses = {k: v.float() * scale for k, v in losses.items()}
                elif amp:
                    losses = {k: v.float() for k, v in losses.items()}
                total = weighting.backward(
                    losses, shared_params=shared, last_shared_params=last_shared
                )
                synced = [] if manual else [*trainable, *sparse]  # DDP averaged those
                distributed.average_gradients(
                    [p for p in params if all(p is not q for q in synced)], ctx
                )
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if sparse:
                    _sparse_grads(sparse)
                optimizer.step()
                seen += rows
                running += float(total) / ctx.world_size
                if step % 20 == 0 or step == steps_per_epoch:
                    progress.update(bar, completed=step, info=f"loss {running / step:.4f}")
            train_time += time.perf_counter() - tick
            (running,) = distributed.all_reduce_sum([running], ctx)  # the global batch losses
            # Rank 0 validates (the weights are the same everywhere) and tells the others.
            scores = _validate(model, valid, evaluator, cfg) if ctx.is_main else None
            scores = distributed.broadcast(scores, ctx)
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
            if cfg.progress and ctx.is_main:
                progress.console.print(
                    line + ("  [green](best)[/]" if improved else ""), highlight=False
                )
            elif ctx.is_main:
                log.info("%s%s", line, "  (best)" if improved else "")
            if ckpt is not None and ctx.is_main:
                _save_checkpoint(ckpt, model, optimizer, weighting, generator, state, signature)
            distributed.barrier(ctx)
    del weighting.mean_over_ranks  # back to the class's identity: no process group kept
    for module in model.modules():  # dense gradients again for whoever trains it next
        if isinstance(module, nn.Embedding) and any(module.weight is q for q in sparse):
            module.sparse = False
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    if ctx.device.type != "cpu":  # recipes, scorers and artifacts take the model on the CPU
        model.to("cpu")
        weighting.to("cpu")
    return FitResult(
        best_epoch=state.best_epoch,
        best_score=state.best_score,
        best_scores=state.best_scores,
        history=state.history,
        train_seconds=train_time,
        samples_per_second=seen / train_time if train_time > 0 else 0.0,
        stopped_early=state.bad_epochs >= cfg.patience and state.epoch < cfg.epochs,
    )


class TrainConfigError(ShoprecError):
    """Training settings that cannot work together."""


def _sparse_embeddings(model: nn.Module, cfg: TrainConfig, weighting: LossWeighting) -> list:
    """With ``train.sparse_rows``: switch the model's trainable embedding tables of at least
    that many rows to sparse gradients; their weights (for SparseAdam). Nothing otherwise."""
    if cfg.sparse_rows is None:
        return []
    clash = [
        name
        for name, on in (
            ("train.grad_clip", bool(cfg.grad_clip)),
            ("train.weight_decay", cfg.weight_decay > 0),
            (f"weighting {type(weighting).__name__}", weighting.per_task_gradients),
        )
        if on
    ]
    if clash:
        raise TrainConfigError(
            f"train.sparse_rows cannot train with {clash[0]}: sparse gradients of the "
            "embedding tables have no global norm to clip, no weight decay (SparseAdam) and "
            "no flat per-task gradient to balance. Remove train.sparse_rows, or that setting."
        )
    weights = []
    for module in model.modules():
        if (
            isinstance(module, nn.Embedding)
            and module.weight.requires_grad
            and module.num_embeddings >= cfg.sparse_rows
        ):
            module.sparse = True
            weights.append(module.weight)
    log.info(
        "sparse gradients and SparseAdam for %d embedding table(s) of >= %d rows",
        len(weights),
        cfg.sparse_rows,
    )
    return weights


def _sparse_grads(weights: list[Tensor]) -> None:
    """A table the model also read around its embedding module (e.g. a folded product) has
    a dense gradient: made row-sparse for SparseAdam (one process; under DDP such a table
    fails in DDP's reducer, which expects the sparse gradient its module declares)."""
    for w in weights:
        if w.grad is not None and not w.grad.is_sparse:
            w.grad = w.grad.to_sparse(1)


class _Optimizers:
    """Several optimizers stepped, zeroed and checkpointed as one (Adam for dense
    parameters, SparseAdam for embedding tables with sparse gradients)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


def _epoch(
    train: TensorData | ShardedData,
    cfg: TrainConfig,
    ctx: distributed.Context,
    generator: torch.Generator,
) -> Iterator[tuple[dict[str, Tensor], int]]:
    """One epoch of shuffled batches for this process, each with its global batch's rows."""
    if isinstance(train, ShardedData):  # one shard in memory at a time, same batch rules
        yield from train.epoch(cfg.batch_size, ctx.rank, ctx.world_size, generator)
        return
    if not ctx.distributed:
        for batch in train.batches(cfg.batch_size, shuffle=True, generator=generator):
            yield batch, next(iter(batch.values())).shape[0]
        return
    for index, rows in distributed.global_batches(len(train), cfg.batch_size, ctx, generator):
        yield train.take(index), rows


def _validate(
    model: nn.Module,
    valid: TensorData | ShardedData | None,
    evaluator: Evaluator | None,
    cfg: TrainConfig,
) -> dict[str, float]:
    model.eval()
    if evaluator is not None:
        # A recipe's evaluator builds its batches on the CPU: it gets a CPU copy of the model.
        on_cpu = next(model.parameters()).device.type == "cpu"
        scores = evaluator(model if on_cpu else copy.deepcopy(model).to("cpu").eval())
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


LATEST = "latest.json"  # names the newest complete checkpoint folder of a fit


def _signature(model: nn.Module, train: TensorData | ShardedData, cfg: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: parameter names and shapes, the number
    of training rows and the settings that change the weights."""
    skip = {"checkpoint_dir", "progress", "threads", "device"}  # not what the weights become
    keep = {f.name for f in fields(TrainConfig)} - skip
    what = {
        "params": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "rows": len(train),
        "config": {k: v for k, v in asdict(cfg).items() if k in keep},
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _latest(path: Path) -> Path | None:
    """The newest complete checkpoint folder under ``path`` (or ``path`` itself, in the
    layout of older versions), or None."""
    pointer = path / LATEST
    if pointer.exists():
        folder = path / json.loads(pointer.read_text())["folder"]
        return folder if (folder / "trainer.json").exists() else None
    return path if (path / "trainer.json").exists() else None


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | _Optimizers,
    weighting: LossWeighting,
    generator: torch.Generator,
    state: _State,
    signature: str,
) -> None:
    """Write model, best weights, optimizer and every random state into a new folder, sync
    it, then point ``latest.json`` at it (atomic replace) and remove older ones."""
    path.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{state.epoch:04d}"
    tmp = path / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
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
    np_state = np.random.get_state()
    meta["signature"] = signature
    meta["rng"] = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *[float(x) for x in np_state[2:]]],
    }
    (tmp / "trainer.json").write_text(json.dumps(meta, default=float))
    atomic.replace_dir(tmp, path / name)
    atomic.write_text(path / LATEST, json.dumps({"folder": name, "epoch": state.epoch}))
    for old in path.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ("model.safetensors", "best.safetensors", "optimizer.pt", "trainer.json"):
        (path / stale).unlink(missing_ok=True)  # the single-folder layout of older versions


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | _Optimizers,
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
    meta.pop("signature", None)
    rng = meta.pop("rng", None)
    if rng is not None:
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        keys = np.array(keys, dtype=np.uint32)
        np.random.set_state((kind, keys, int(pos), int(has_gauss), cached))
    state = _State(**meta)
    if (path / "best.safetensors").exists():
        state.best_weights = load_file(path / "best.safetensors")
    return state


# ------------------------------------------------------------------ resumable runs


class CheckpointError(ShoprecError):
    """A run asked to resume that has no checkpoint to resume from."""


@dataclass
class _Session:
    directory: Path
    resume: bool
    calls: int = 0


_SESSION: ContextVar[_Session | None] = ContextVar("shoprec_checkpointing", default=None)
RUN_FILE = "run.json"


@contextmanager
def checkpointing(
    directory: str | Path,
    key: str,
    *,
    resume: bool | None = None,
    keep: bool = False,
    follower: bool = False,
) -> Iterator[bool]:
    """Checkpoint every :func:`fit` inside the block and resume a killed run of the same job.

    The ``n``-th ``fit`` call in the block checkpoints into ``directory/fit-<n>/`` after
    each epoch; on resume, fits that had finished are restored from their last checkpoint
    (no training) and the interrupted one continues after its last complete epoch, so the
    block computes what an uninterrupted run computes, bit for bit (same code, data and
    thread count).

    Args:
        directory: the run's checkpoint folder.
        key: what identifies the job (e.g. a hash of its config); a checkpoint written under
            another key is never resumed.
        resume: True: resume (:class:`CheckpointError` when there is nothing of this job to
            resume); False: start over (old checkpoints removed); None: resume when a
            checkpoint of this job exists, with a log line saying so.
        keep: on success, keep the checkpoints (marked complete, so that the next run starts
            over) instead of removing them.
        follower: True in the processes other than rank 0 of a distributed run: they resume
            exactly when ``resume`` says (rank 0's decision) and read or write no file here
            (rank 0 alone prepares, writes and removes the folder).

    Yields:
        Whether the block resumes a previous run.
    """
    directory = Path(directory)
    if follower:
        token = _SESSION.set(_Session(directory, bool(resume)))
        try:
            yield bool(resume)
        finally:
            _SESSION.reset(token)
        return
    run_file = directory / RUN_FILE
    meta = json.loads(run_file.read_text()) if run_file.exists() else None
    has_fits = any(_latest(p) is not None for p in directory.glob("fit-*"))
    same = meta is not None and meta.get("key") == key and not meta.get("complete") and has_fits
    if resume is True and not same:
        why = (
            "none was written"
            if meta is None or not has_fits
            else "that run finished"
            if meta.get("complete")
            else "it was written by another config"
        )
        raise CheckpointError(
            f"nothing to resume in {directory}: {why}; run without --resume to start over"
        )
    resuming = same and resume is not False
    if resuming:
        log.info("resuming the interrupted run from its checkpoints in %s", directory)
    else:
        if meta is not None or has_fits:
            reason = (
                "as asked"
                if resume is False
                else "it finished"
                if meta is not None and meta.get("complete")
                else "they are of another config"
                if meta is None or meta.get("key") != key
                else "no epoch had finished"
            )
            log.info("starting over: old checkpoints in %s removed (%s)", directory, reason)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_file, json.dumps({"key": key, "complete": False}))
        log.info("checkpoints of this run go to %s (resumed if it is killed)", directory)
    token = _SESSION.set(_Session(directory, resuming))
    try:
        yield resuming
    finally:
        _SESSION.reset(token)
    if keep:
        atomic.write_text(run_file, json.dumps({"key": key, "complete": True}))
    else:
        shutil.rmtree(directory, ignore_errors=True)
