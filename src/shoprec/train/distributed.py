"""Data-parallel training on ``torch.distributed``: what the one loop needs under torchrun.

The loop (:func:`shoprec.train.loop.fit`) stays one loop; when it runs in a process group
(``torchrun --nproc_per_node N -m shoprec train ...``, or ``shoprec train CONFIG --nproc N``,
which starts that command) it asks this module for:

* :func:`setup` — join the group torchrun describes in the environment (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, NCCL on
  CUDA, one device per local rank.
* :func:`global_batches` — ``train.batch_size`` is the global batch ``G``: every rank draws
  the same seeded permutation of all rows; step ``k`` uses rows ``[k * G, (k + 1) * G)`` of
  it and rank ``r`` of ``W`` takes every ``W``-th of those from ``r`` on (``G / W`` rows). So
  ``W`` processes of ``G / W`` rows each step on exactly the rows one process steps on with
  ``G``, the same config gives the same model on any number of processes (up to float
  rounding), and a run can resume with another world size.
* :func:`wrap` — :class:`~torch.nn.parallel.DistributedDataParallel` around the model's
  objective (forward and task losses), so DDP averages the gradients of exactly the
  parameters the losses reach.
* :func:`loss_scale` — each rank's losses are multiplied by ``n_r * W / N`` (``n_r`` its rows,
  ``N`` the global batch), so DDP's average of per-rank gradients is the gradient of the mean
  over the global batch even when the last batch does not split evenly. For task losses that
  are plain means over rows this is exact; a task with a weight key (a weighted mean) is
  averaged by rows across ranks, which differs from the single-process weighted mean by the
  ranks' weight sums (small for shuffled batches).
* :func:`all_reduce_sum`, :func:`broadcast`, :func:`average_gradients`, :func:`barrier` —
  metrics summed across ranks, rank 0's validation scores sent to all, the loss-weighting
  strategy's own parameters (outside the model) averaged like DDP averages the model's.

Rank 0 alone validates, writes checkpoints and the artifact; the others wait at the next
collective. Checkpoints hold no per-rank state, so any world size can resume them (on several
nodes the checkpoint folder must be on a file system all of them see).

GradNorm and PCGrad take per-task gradients with ``torch.autograd.grad``, which DDP's
gradient hooks do not support: for them the model is not wrapped in DDP, the loop averages
every gradient over the ranks after the backward pass (:func:`average_gradients`), and the
strategies average their per-task gradients (and GradNorm its loss ratios) through
:func:`mean_over_ranks` before using them, so every process computes the global batch's
weights and surgery and takes the same step.
A strategy that marks itself ``supports_distributed = False`` is refused by
:func:`check_weighting` with a clear error rather than letting the ranks drift apart.

Example (two processes on one machine, the same as ``shoprec train cfg.yaml --nproc 2``)::

    torchrun --standalone --nproc_per_node 2 -m shoprec train configs/sim_mmoe.yaml
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)

#: Accepted values of ``train.device``.
DEVICES = ("auto", "cpu", "cuda")
_CPU = torch.device("cpu")


class DistributedError(ShoprecError):
    """A setting that cannot work in (or start) a distributed run."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU

    @property
    def distributed(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the one that validates and writes)."""
        return self.rank == 0


def launched() -> bool:
    """True when this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``train.device``: ``auto`` is CUDA when there is one, else CPU.

    Args:
        name: ``auto``, ``cpu`` or ``cuda``.
        local_rank: this process's rank on its node (its GPU index under torchrun).

    Raises:
        DistributedError: ``cuda`` asked for on a machine without a CUDA device.
    """
    if name not in DEVICES:
        raise DistributedError(f"train.device is {name!r}; choose one of {list(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedError(
            "train.device is 'cuda' but torch sees no CUDA device on this machine (torch "
            f"{torch.__version__}); set train.device to 'auto' or 'cpu'."
        )
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str = "auto") -> Context:
    """Join torchrun's process group if there is one (once per process) and pick the device.

    Without torchrun's environment (or with ``WORLD_SIZE=1``) this is a single process on the
    resolved device; nothing is initialised.

    Args:
        device: ``train.device``.

    Returns:
        This process's :class:`Context`.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if not dist.is_available() or (not dist.is_initialized() and not launched()):
        return Context(device=dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # Rank 0 alone validates and writes the artifact while the others wait at the next
        # collective: a wait longer than torch's default (10 / 30 minutes) is normal.
        minutes = float(os.environ.get("SHOPREC_DIST_TIMEOUT_MIN", "180"))
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes))
        log.info(
            "joined process group: rank %d of %d (%s, %s)",
            dist.get_rank(),
            dist.get_world_size(),
            backend,
            dev,
        )
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_weighting(weighting: nn.Module, ctx: Context) -> None:
    """Refuse loss-weighting strategies that cannot run under DDP.

    Raises:
        DistributedError: naming the strategy and what to use instead.
    """
    if ctx.distributed and not getattr(weighting, "supports_distributed", True):
        name = type(weighting).__name__
        raise DistributedError(
            f"weighting {name} cannot train with {ctx.world_size} processes: it takes "
            "gradients DistributedDataParallel does not average across processes (it sets "
            "supports_distributed = False), so the processes would drift apart. Train it in "
            "one process (no --nproc / torchrun), or use another weighting."
        )


def global_batches(
    n: int, batch_size: int, ctx: Context, generator: torch.Generator
) -> Iterator[tuple[Tensor, int]]:
    """This rank's row indices of each global batch, and the global batch's size.

    Args:
        n: rows in the training data.
        batch_size: rows per step over all processes (``train.batch_size``); each process
            takes ``batch_size / world_size`` of them.
        ctx: this process.
        generator: the shuffling generator, seeded alike on every rank.

    Yields:
        ``(index, global_size)``: ``index`` is this rank's 1-D long tensor of rows (every
        ``world_size``-th row of the global batch from ``rank`` on). A last global batch with
        fewer rows than processes is skipped, so no rank steps on an empty batch.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> [(i.tolist(), n) for i, n in global_batches(5, 4, Context(1, 2), g)]
        [([1, 3], 4)]
    """
    if batch_size < ctx.world_size:
        raise DistributedError(
            f"train.batch_size {batch_size} is smaller than the {ctx.world_size} processes; "
            "it is the global batch, split across them"
        )
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        if len(chunk) < ctx.world_size:
            break
        yield chunk[ctx.rank :: ctx.world_size], len(chunk)


def steps_per_epoch(n: int, batch_size: int, ctx: Context) -> int:
    """How many steps :func:`global_batches` makes over ``n`` rows."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= ctx.world_size else 0)


def loss_scale(local_rows: int, global_rows: int, ctx: Context) -> float:
    """Factor on this rank's mean losses so DDP's gradient average is the global mean's."""
    return local_rows * ctx.world_size / global_rows


class _Objective(nn.Module):
    """The model's task losses as one module's output, for DDP to see what they reach."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model.task_losses(self.model(batch), batch)


def objective(model: nn.Module, ctx: Context, *, ddp: bool = True) -> nn.Module:
    """``batch -> {task: loss}`` for ``model``, wrapped in DDP when there are several ranks.

    With ``ddp=False`` (a strategy that takes per-task gradients with ``autograd.grad``,
    which DDP's gradient hooks do not support) the model is not wrapped: rank 0's weights
    are sent to all ranks here, and the loop averages the gradients with
    :func:`average_gradients` after each backward, which is what DDP does, without its
    overlap of communication and computation.

    ``static_graph``: the losses reach the same parameters at every step, so DDP learns in
    the first step which ones they do not reach (a part the loss never uses) and waits for
    no gradient of those, without searching the graph at every step.
    """
    obj = _Objective(model)
    if not ctx.distributed:
        return obj
    if not ddp:
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
        return obj
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # forward_sync_buffers: DDP sends every buffer from rank 0 before each forward. The models'
    # buffers are constants built alike on every rank (id offsets, index grids, a content
    # model's item tables), so they are sent only when a module keeps running statistics.
    running = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return nn.parallel.DistributedDataParallel(
        obj,
        device_ids=ids,
        static_graph=True,
        forward_sync_buffers=running,
    )


def all_reduce_sum(values: Sequence[float], ctx: Context) -> list[float]:
    """Sum of ``values`` over all ranks (the values themselves in a single process)."""
    if not ctx.distributed:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast(obj: Any, ctx: Context) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable value, e.g. validation scores)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device(ctx))
    return box[0]


def mean_over_ranks(ctx: Context) -> Callable[[Tensor], Tensor]:
    """A function that returns the mean of a tensor over all ranks (identity in one process)."""
    if not ctx.distributed:
        return _identity

    def mean(t: Tensor) -> Tensor:
        out = t.detach().clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.div_(ctx.world_size)

    return mean


def _identity(t: Tensor) -> Tensor:
    return t


def average_gradients(params: Sequence[Tensor], ctx: Context) -> None:
    """Average ``.grad`` over ranks, for parameters DDP does not manage (the weighting's, or
    all of them when the model is not wrapped). A parameter without a gradient is left
    without one: the ranks run the same graph, so it has none on any rank."""
    if not ctx.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective, not one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ctx.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(ctx: Context) -> None:
    """Wait for every rank (nothing in a single process)."""
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def _comm_device(ctx: Context) -> torch.device:
    return ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The single-node torchrun command line that runs ``shoprec ARGS`` in ``nproc`` processes.

    Example:
        >>> torchrun_command(2, ["train", "c.yaml"])[1:6]
        ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "shoprec",
        *args,
    ]


def launch(nproc: int, args: Sequence[str], threads: int | None = None) -> int:
    """Run ``shoprec ARGS`` under torchrun with ``nproc`` processes on this machine.

    Args:
        nproc: processes (one per core or GPU).
        args: the shoprec command line, e.g. ``["train", "configs/sim_mmoe.yaml"]``.
        threads: torch threads per process (``OMP_NUM_THREADS``); default: the cores
            divided by ``nproc``, at least 1.

    Returns:
        torchrun's exit status (0 when every process succeeded).
    """
    if nproc < 1:
        raise DistributedError(f"--nproc must be at least 1, got {nproc}")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads or max(1, (os.cpu_count() or 1) // nproc)))
    cmd = torchrun_command(nproc, args)
    log.info("starting %s", " ".join(cmd))
    return subprocess.call(cmd, env=env)
