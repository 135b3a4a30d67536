"""Task-loss balancing: small strategy objects the training loop is handed.

The loop never asks which strategy it has. Each step it does::

    losses = model.task_losses(outputs, batch)  # dict: task name -> scalar tensor
    optimizer.zero_grad(set_to_none=True)
    total = weighting.backward(losses, shared, last_shared)  # fills .grad; detached
    optimizer.step()
    log(total.item(), weighting.weights())

and, once, when it builds the optimizer, adds ``weighting.parameters()`` (empty for the
non-learnable strategies) as its own parameter group, preferably with ``weight_decay=0``
(decay would pull the loss weights towards zero). Strategies are ``nn.Module`` s, so
``weighting.to(device)`` works as for a model, and a checkpoint should hold
``weighting.state_dict()``, which includes buffers (GradNorm's initial losses) besides the
parameters.

``backward`` runs the backward pass itself, rather than returning a loss for the loop to
differentiate, because two of the strategies act on gradients: GradNorm adds a gradient for
its weights that no single loss produces, and PCGrad replaces the gradient of the shared
parameters. The loop passes two lists, the model's business to provide:

* ``shared_params``: every parameter shared by the tasks (shared bottom, shared experts,
  shared embeddings). :class:`PCGrad` does its surgery on these; parameters not listed get
  the plain sum of the task gradients.
* ``last_shared_params``: the last shared layer (e.g. the last layer of every expert).
  :class:`GradNorm` measures the per-task gradient norms on these (the paper's choice; it
  falls back to ``shared_params`` when ``None``, which is valid but slower).

:class:`FixedWeights` and :class:`UncertaintyWeighting` ignore both.

Strategies:

* :class:`FixedWeights` — ``sum_i w_i L_i`` with constant weights.
* :class:`UncertaintyWeighting` — Kendall, Gal & Cipolla, "Multi-Task Learning Using
  Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018.
* :class:`GradNorm` — Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient
  Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.
* :class:`PCGrad` — Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for
  Multi-Task Learning", NeurIPS 2020.

Example:
    >>> import torch
    >>> shared, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    >>> out = head(shared(torch.randn(8, 3)))
    >>> losses = {"ctr": out[:, 0].pow(2).mean(), "cvr": out[:, 1].abs().mean()}
    >>> weighting = make_weighting("uncertainty", tasks=["ctr", "cvr"])
    >>> total = weighting.backward(losses, list(shared.parameters()))
    >>> sorted(weighting.weights())
    ['ctr', 'cvr']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "WEIGHTINGS",
    "FixedWeights",
    "GradNorm",
    "LossWeighting",
    "PCGrad",
    "UncertaintyWeighting",
    "make_weighting",
    "project_conflicting",
]


class LossWeighting(nn.Module, ABC):
    """Interface of a task-loss balancing strategy.

    Subclasses implement :meth:`backward` and :meth:`weights`. Learnable state (loss weights,
    log-variances) lives in ``nn.Parameter`` s, reachable through the usual
    ``parameters()`` (possibly empty), which the loop hands to its optimizer.

    Several processes (DistributedDataParallel): DDP averages only what ``backward``
    accumulates, and the loop averages the strategy's own parameters' gradients the same
    way. A strategy that takes per-task gradients with ``torch.autograd.grad`` (GradNorm,
    PCGrad) says so with ``per_task_gradients = True`` (autograd.grad bypasses DDP's hooks,
    so the loop then averages every gradient itself after ``backward``) and passes those
    gradients, and any per-task loss statistic it needs, through ``mean_over_ranks`` first,
    which the loop sets to the mean over the processes (the identity in one process), so
    every process computes the same global quantity and the same update. A strategy that
    cannot do this sets ``supports_distributed = False``; the loop then refuses to run it in
    several processes.
    """

    supports_distributed: bool = True
    per_task_gradients: bool = False  # takes per-task gradients (autograd.grad) itself

    @staticmethod
    def mean_over_ranks(t: Tensor) -> Tensor:
        """The mean of ``t`` over the training processes (set by the loop; here: ``t``)."""
        return t

    @abstractmethod
    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor],
        last_shared_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Combine the task losses and run the backward pass, filling ``.grad``.

        Gradients are accumulated into ``.grad`` like ``Tensor.backward`` does, so the loop
        zeroes them before calling, as usual.

        Args:
            losses: task name -> scalar loss tensor, still attached to the graph.
            shared_params: all parameters shared by the tasks (used by PCGrad).
            last_shared_params: the last shared layer's parameters (used by GradNorm;
                ``None`` means ``shared_params``). Strategies ignore what they do not need.

        Returns:
            The combined loss as a detached scalar, for logging.
        """

    @abstractmethod
    def weights(self) -> dict[str, float]:
        """Current weight of each task, for logging."""


def _check_losses(losses: Mapping[str, Tensor]) -> None:
    if not losses:
        raise ValueError("losses is empty: there must be at least one task loss")
    for name, loss in losses.items():
        if loss.ndim != 0:
            raise ValueError(f"loss of task {name!r} must be a scalar, got {tuple(loss.shape)}")


def _trainable(params: Sequence[Tensor], who: str) -> list[Tensor]:
    out = [p for p in params if p.requires_grad]
    if not out:
        raise ValueError(f"{who} needs shared_params with requires_grad=True, got none")
    return out


def _flat_grad(loss: Tensor, params: Sequence[Tensor]) -> Tensor:
    """Gradient of ``loss`` w.r.t. ``params``, flattened into one ``(P,)`` vector.

    Parameters the loss does not reach get zeros. The graph is retained for later passes.
    """
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    )


def _accumulate_grad(p: Tensor, g: Tensor) -> None:
    p.grad = g if p.grad is None else p.grad + g


class FixedWeights(LossWeighting):
    """Constant weights: ``L = sum_i w_i L_i``.

    Args:
        weights: task name -> weight. Tasks not named get 1.0; ``None`` is the plain sum.
            Naming a task that the model does not produce is an error (caught on the first
            call), so a typo cannot silently drop a weight.

    Example:
        >>> w = FixedWeights({"cvr": 2.0})
        >>> x = torch.ones(2, requires_grad=True)
        >>> float(w.backward({"ctr": x.sum(), "cvr": x.sum()}, []))
        6.0
        >>> x.grad.tolist()
        [3.0, 3.0]
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self._weights = {k: float(v) for k, v in (weights or {}).items()}
        self._tasks: list[str] = list(self._weights)

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor],
        last_shared_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        _check_losses(losses)
        unknown = set(self._weights) - set(losses)
        if unknown:
            raise ValueError(f"weights name tasks with no loss: {sorted(unknown)}")
        self._tasks = list(losses)
        total = sum(self._weights.get(name, 1.0) * loss for name, loss in losses.items())
        assert isinstance(total, Tensor)
        total.backward()
        return total.detach()

    def weights(self) -> dict[str, float]:
        return {name: self._weights.get(name, 1.0) for name in self._tasks}


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Each task gets a learnable ``s_i = log sigma_i^2`` and the loss is

        ``L = sum_i exp(-s_i) L_i + s_i``

    so a task whose loss stays high (a noisy task) learns a large ``sigma_i`` and a small
    weight ``exp(-s_i)``; the ``+ s_i`` term stops all ``sigma`` from growing without bound.
    For fixed ``L_i`` the optimum is ``s_i = log L_i``, i.e. weight ``1 / L_i``.

    Factor choice: the paper derives ``1/(2 sigma^2) L + log sigma`` for a Gaussian
    (regression) likelihood and ``1/sigma^2 L + log sigma`` for a softmax (classification)
    one, i.e. ``0.5 exp(-s) L + 0.5 s`` and ``exp(-s) L + 0.5 s``. At their optima both give
    an effective weight of ``1 / (2 L_i)``. We use the single form ``exp(-s) L + s`` for every
    task (as most implementations do), whose optimum gives ``1 / L_i``: the relative weights
    between tasks match the paper's for both kinds of task, only the overall scale of the
    objective is twice as large (a constant factor on the learning rate). ``s`` is learnt
    directly (not ``sigma``), so ``exp(-s)`` never divides by zero.

    Args:
        tasks: names of the tasks, fixing the order of :attr:`log_vars`.
        init_log_var: initial ``s_i`` (0 means every weight starts at 1).

    Attributes:
        log_vars: ``(T,)`` learnable ``s_i = log sigma_i^2``.
    """

    def __init__(self, tasks: Sequence[str], init_log_var: float = 0.0) -> None:
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be non-empty and unique, got {list(tasks)}")
        self.tasks = list(tasks)
        self._index = {t: i for i, t in enumerate(self.tasks)}
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init_log_var)))

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor],
        last_shared_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        _check_losses(losses)
        unknown = set(losses) - set(self._index)
        if unknown:
            raise ValueError(f"losses for tasks not given at construction: {sorted(unknown)}")
        total = sum(
            torch.exp(-self.log_vars[self._index[name]]) * loss + self.log_vars[self._index[name]]
            for name, loss in losses.items()
        )
        assert isinstance(total, Tensor)
        total.backward()
        return total.detach()

    def weights(self) -> dict[str, float]:
        w = torch.exp(-self.log_vars.detach()).tolist()
        return dict(zip(self.tasks, w, strict=True))


class GradNorm(LossWeighting):
    """GradNorm (Chen et al., ICML 2018): learn weights that balance gradient norms.

    Per step, with ``W`` the last shared layer and ``w_i`` the task weights:

    1. ``G_i = ||grad_W (w_i L_i)||_2`` and ``G_avg = mean_i G_i``.
    2. ``r_i = Ltilde_i / mean_j Ltilde_j``, where ``Ltilde_i = L_i(t) / L_i(0)`` is the
       loss ratio (``L_i(0)`` is the loss at the first call): the relative inverse training
       rate, large for a task that has trained least.
    3. ``L_grad = sum_i |G_i - G_avg * r_i ** alpha|`` with the target ``G_avg * r_i ** alpha``
       held constant; its gradient goes to the ``w_i`` only.
    4. The network gets the ordinary gradient of ``sum_i w_i L_i`` (weights as constants).
    5. After the optimizer step the weights are renormalised to ``sum_i w_i = T``. Here this
       happens at the start of the next call (and in :meth:`weights`), so the loop needs no
       extra hook; the effect is the same.

    Since ``w_i`` is a positive scalar, ``G_i = w_i ||grad_W L_i||``, so only the plain
    per-task gradients are needed (no double backward). A task whose gradient norm is above
    its target gets a positive gradient on ``w_i`` (its weight falls), one below gets a
    negative one (its weight rises).

    Args:
        tasks: names of the tasks, fixing the order of :attr:`task_weights`.
        alpha: strength of the pull towards equal training rates (paper: 1.5 typical, 0 =
            equal gradient norms only).
        min_weight: weights are clamped to at least this before renormalising, so a large
            step cannot make a weight zero or negative.

    Attributes:
        task_weights: ``(T,)`` learnable ``w_i``; give them to the optimizer.
        initial_losses: ``(T,)`` buffer with ``L_i(0)`` (NaN until the first call).
        last_grad_loss: ``L_grad`` of the last call, for logging.
    """

    initial_losses: Tensor
    per_task_gradients = True

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5, min_weight: float = 1e-3):
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be non-empty and unique, got {list(tasks)}")
        self.tasks = list(tasks)
        self.alpha = float(alpha)
        self.min_weight = float(min_weight)
        self.task_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.full((len(self.tasks),), float("nan")))
        self.last_grad_loss: Tensor | None = None

    @torch.no_grad()
    def _renormalise(self) -> None:
        w = self.task_weights
        w.clamp_(min=self.min_weight)
        w.mul_(len(self.tasks) / w.sum())

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor],
        last_shared_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        _check_losses(losses)
        if set(losses) != set(self.tasks):
            raise ValueError(f"GradNorm needs a loss for each of {self.tasks}, got {list(losses)}")
        chosen = shared_params if last_shared_params is None else last_shared_params
        params = _trainable(chosen, "GradNorm")
        self._renormalise()
        w = self.task_weights  # (T,)
        task_losses = torch.stack([losses[t] for t in self.tasks])  # (T,)
        detached = self.mean_over_ranks(task_losses.detach()).to(self.initial_losses)
        with torch.no_grad():
            unset = torch.isnan(self.initial_losses)
            self.initial_losses[unset] = detached[unset]

        grads = torch.stack([_flat_grad(losses[t], params) for t in self.tasks])  # (T, P)
        norms = self.mean_over_ranks(grads).norm(dim=1)  # (T,) of the global batch's gradients
        g = w * norms.to(w)  # (T,) G_i = ||grad_W w_i L_i||, differentiable in w only
        with torch.no_grad():
            ratio = detached / self.initial_losses.clamp(min=1e-12)  # Ltilde_i
            r = ratio / ratio.mean().clamp(min=1e-12)  # relative inverse training rate
            target = g.mean() * r.pow(self.alpha)  # constant target
        grad_loss = (g - target).abs().sum()
        (w_grad,) = torch.autograd.grad(grad_loss, w)

        total = (w.detach().to(task_losses) * task_losses).sum()
        total.backward()
        _accumulate_grad(w, w_grad)
        self.last_grad_loss = grad_loss.detach()
        return total.detach()

    def weights(self) -> dict[str, float]:
        w = self.task_weights.detach().clamp(min=self.min_weight)
        w = w * (len(self.tasks) / w.sum())
        return dict(zip(self.tasks, w.tolist(), strict=True))


def project_conflicting(grads: Tensor, rng: np.random.Generator | None = None) -> Tensor:
    """PCGrad's gradient surgery on per-task gradients of the shared parameters.

    For each task ``i``, ``g_i^PC`` starts at ``g_i``; then, for every other task ``j`` in a
    random order, if ``g_i^PC . g_j < 0`` the conflicting component is removed:
    ``g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2 * g_j`` (``g_j`` is the original, not the
    projected, gradient of task ``j``, as in Algorithm 1 of the paper).

    Args:
        grads: ``(T, P)`` one flattened gradient per task.
        rng: source of the random orders; ``None`` uses a fixed seed of 0.

    Returns:
        ``(T, P)`` projected gradients ``g_i^PC``; their sum is the update direction.

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> project_conflicting(g).tolist()
        [[0.5, 0.5], [0.0, 1.0]]
    """
    if grads.ndim != 2:
        raise ValueError(f"grads must be (tasks, params), got shape {tuple(grads.shape)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    n_tasks = grads.shape[0]
    sq_norms = (grads * grads).sum(dim=1)  # (T,)
    out = grads.clone()
    for i in range(n_tasks):
        for j in rng.permutation(n_tasks).tolist():
            if j == i or sq_norms[j] == 0:
                continue
            dot = out[i] @ grads[j]
            if dot < 0:
                out[i] -= (dot / sq_norms[j]) * grads[j]
    return out


class PCGrad(LossWeighting):
    """PCGrad / gradient surgery (Yu et al., NeurIPS 2020).

    The per-task gradients of the shared parameters are computed separately; each is
    projected onto the normal plane of every other task gradient it conflicts with
    (negative dot product), in a random order per task (:func:`project_conflicting`), and
    the projected gradients are summed. Parameters not in ``shared_params`` (task towers,
    gates of one task) get their ordinary gradients, which belong to one task anyway. If no
    two gradients conflict the result is exactly the gradient of the summed loss.

    Args:
        weights: optional constant task weights applied to the losses before the surgery
            (tasks not named get 1.0). The paper uses none.
        seed: seed of the random projection order, for reproducible runs.

    Attributes:
        last_conflicts: number of conflicting task pairs ``(i, j)``, ``i < j``, in the last
            call (original gradients), for logging.
    """

    per_task_gradients = True

    def __init__(self, weights: Mapping[str, float] | None = None, seed: int = 0) -> None:
        super().__init__()
        self._weights = {k: float(v) for k, v in (weights or {}).items()}
        self._tasks: list[str] = list(self._weights)
        self._rng = np.random.default_rng(seed)
        self.last_conflicts = 0

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_params: Sequence[Tensor],
        last_shared_params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        _check_losses(losses)
        unknown = set(self._weights) - set(losses)
        if unknown:
            raise ValueError(f"weights name tasks with no loss: {sorted(unknown)}")
        params = _trainable(shared_params, "PCGrad")
        self._tasks = list(losses)
        scaled = [self._weights.get(n, 1.0) * loss for n, loss in losses.items()]
        grads = torch.stack([_flat_grad(loss, params) for loss in scaled])  # (T, P)
        grads = self.mean_over_ranks(grads)  # the global batch's (same on every process)
        gram = grads @ grads.T  # (T, T)
        self.last_conflicts = int((torch.triu(gram, diagonal=1) < 0).sum())
        update = project_conflicting(grads, self._rng).sum(dim=0)  # (P,)

        # Ordinary backward for everything; then the shared parameters' share is replaced.
        before = [None if p.grad is None else p.grad.clone() for p in params]
        total = torch.stack(scaled).sum()
        total.backward()
        offset = 0
        for p, g0 in zip(params, before, strict=True):
            n = p.numel()
            g = update[offset : offset + n].view_as(p).to(p.dtype)
            p.grad = g if g0 is None else g0 + g
            offset += n
        return total.detach()

    def weights(self) -> dict[str, float]:
        return {name: self._weights.get(name, 1.0) for name in self._tasks}


#: Strategy name (as written in a config) -> class.
WEIGHTINGS: dict[str, type[LossWeighting]] = {
    "fixed": FixedWeights,
    "uncertainty": UncertaintyWeighting,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
}


def make_weighting(name: str, tasks: Sequence[str], **options: Any) -> LossWeighting:
    """Build a strategy by name, so a config can pick one.

    Args:
        name: one of :data:`WEIGHTINGS` (``fixed``, ``uncertainty``, ``gradnorm``,
            ``pcgrad``).
        tasks: the model's task names (used by the strategies that learn per-task state).
        **options: constructor arguments of the strategy, e.g. ``alpha=1.5`` for GradNorm,
            ``weights={...}`` for fixed and PCGrad.

    Returns:
        The strategy.

    Example:
        >>> make_weighting("gradnorm", ["ctr", "cvr"], alpha=1.0).weights()
        {'ctr': 1.0, 'cvr': 1.0}
    """
    try:
        cls = WEIGHTINGS[name]
    except KeyError:
        raise ValueError(
            f"unknown loss weighting {name!r}; choose from {sorted(WEIGHTINGS)}"
        ) from None
    named = set(options.get("weights") or {})
    if named - set(tasks):
        raise ValueError(f"weights name unknown tasks {sorted(named - set(tasks))}; tasks: {tasks}")
    if cls in (UncertaintyWeighting, GradNorm):
        return cls(tasks, **options)  # type: ignore[call-arg]
    return cls(**options)
